"""Helpers shared by the scheduler and engine logic tests."""

from __future__ import annotations

from engine.config import EngineConfig
from engine.engine import Engine
from engine.scheduler import Scheduler
from engine.sequence import ScheduledBatch, Sequence
from engine.types import RequestOutput
from tests.engine.fake_runner import FakeRunner


def make_engine(runner: FakeRunner | None = None, **config) -> Engine:
    config.setdefault("block_size", 4)
    return Engine(EngineConfig(model="fake-model", **config), runner or FakeRunner(block_size=config["block_size"]))


def run_until_done(engine: Engine, max_steps: int = 20_000) -> dict[str, list[RequestOutput]]:
    """Step until nothing is left; every request's outputs, in order."""
    outputs: dict[str, list[RequestOutput]] = {}
    for _ in range(max_steps):
        if not engine.has_unfinished():
            return outputs
        for out in engine.step():
            outputs.setdefault(out.request_id, []).append(out)
    raise AssertionError(f"engine still busy after {max_steps} steps")


def tokens_of(outputs: list[RequestOutput]) -> list[int]:
    return [t for out in outputs for t in out.new_token_ids]


def finish_of(outputs: list[RequestOutput]) -> str | None:
    """The one finish reason of a request; asserts it came exactly once, on the last output."""
    reasons = [out.finish_reason for out in outputs if out.finish_reason is not None]
    assert len(reasons) == 1 and outputs[-1].finish_reason == reasons[0], reasons
    return reasons[0]


def run_batch(scheduler: Scheduler, runner: FakeRunner, batch: ScheduledBatch) -> list[Sequence]:
    """One step run to its end before the next is planned: the sequences it finished."""
    samples = [chunk.samples for chunk in batch.chunks]
    sampled = runner.execute(batch)
    scheduler.advance(batch, samples)
    return [seq for seq, _ in scheduler.update(batch, samples, sampled) if seq.status.finished]
