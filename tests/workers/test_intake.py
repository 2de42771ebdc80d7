from kombu.common import QoS

from workers.intake import Intake


class Consumer:
    def __init__(self, prefetch: int) -> None:
        self.applied = []
        self.qos = QoS(lambda prefetch_count: self.applied.append(prefetch_count), prefetch)
        self.qos.update()


def test_intake_stops_fetching_while_the_engine_has_waiting_requests_and_reopens():
    consumer = Consumer(8)
    intake = Intake(8)
    intake.on_engine_load(waiting=0, held=3)  # not attached yet: nothing to do, nothing raised
    intake.attach(consumer)
    intake.on_engine_load(waiting=0, held=3)
    assert consumer.applied == [8]
    intake.on_engine_load(waiting=1, held=5)
    assert consumer.applied[-1] == 5  # as many as it holds: with acks_late, nothing new
    intake.on_engine_load(waiting=2, held=6)
    assert consumer.applied[-1] == 6
    intake.on_engine_load(waiting=0, held=6)
    assert consumer.applied[-1] == 8


def test_prefetch_never_drops_to_zero_which_would_mean_unlimited():
    consumer = Consumer(4)
    intake = Intake(4)
    intake.attach(consumer)
    intake.on_engine_load(waiting=1, held=0)
    assert consumer.applied[-1] == 1
