import pytest

from loadtests import shapes


def test_sweep_doubles_then_ends_at_the_maximum():
    sweep = shapes.sweep(10, stage_s=5)
    assert [s.users for s in sweep.stages] == [1, 2, 4, 8, 10]
    assert [(s.start_s, s.end_s) for s in sweep.stages][:2] == [(0, 5), (5, 10)]
    assert sweep.duration_s == 25 and sweep.max_users == 10
    assert [s.users for s in shapes.sweep(8, 1).stages] == [1, 2, 4, 8]
    assert [s.users for s in shapes.sweep(1, 1).stages] == [1]


def test_sweep_schedule_stops_itself():
    sweep = shapes.sweep(4, stage_s=10)
    assert [sweep.users_at(t) for t in (0, 9.99, 10, 25, 29.9)] == [1, 1, 2, 4, 4]
    assert sweep.users_at(30) is None and sweep.stage_at(31) is None


def test_ramp_steps_and_keeps_its_top():
    ramp = shapes.ramp(start=2, step=3, max_users=10, stage_s=4)
    assert [s.users for s in ramp.stages] == [2, 5, 8, 10]
    assert ramp.users_at(4) == 5 and ramp.duration_s == 16


def test_fixed_is_one_stage():
    fixed = shapes.build("fixed", users=6, duration_s=30, stage_s=999)
    assert fixed.stages == (shapes.Stage(6, 0, 30),)


@pytest.mark.parametrize("call", [
    lambda: shapes.sweep(0, 5),
    lambda: shapes.ramp(5, 1, 2, 5),
    lambda: shapes.fixed(3, 0),
    lambda: shapes.build("spike", 3, 10, 10),
])
def test_bad_shapes_are_refused(call):
    with pytest.raises(ValueError):
        call()
