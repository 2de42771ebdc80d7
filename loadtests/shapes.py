"""Load shapes as plain schedules: fixed users, a step ramp, and a concurrency sweep
(1, 2, 4, ... N) that ends by itself. The Locust adapter (loadtests/driver.py) only asks
`users_at(t)`, so the schedules are testable without Locust."""

from __future__ import annotations

from dataclasses import dataclass

SHAPES = ("fixed", "ramp", "sweep")


@dataclass(frozen=True)
class Stage:
    users: int
    start_s: float  # seconds since the run began
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class LoadShape:
    kind: str
    stages: tuple[Stage, ...]

    @property
    def duration_s(self) -> float:
        return self.stages[-1].end_s

    @property
    def max_users(self) -> int:
        return max(stage.users for stage in self.stages)

    def stage_at(self, elapsed_s: float) -> Stage | None:
        """The stage running `elapsed_s` after the start; None once the schedule is over."""
        for stage in self.stages:
            if stage.start_s <= elapsed_s < stage.end_s:
                return stage
        return None

    def users_at(self, elapsed_s: float) -> int | None:
        stage = self.stage_at(elapsed_s)
        return None if stage is None else stage.users


def _consecutive(kind: str, user_counts: list[int], stage_s: float) -> LoadShape:
    if stage_s <= 0:
        raise ValueError("a stage must last more than 0 seconds")
    stages = tuple(Stage(users, i * stage_s, (i + 1) * stage_s) for i, users in enumerate(user_counts))
    return LoadShape(kind, stages)


def fixed(users: int, duration_s: float) -> LoadShape:
    if users < 1:
        raise ValueError("users must be at least 1")
    return _consecutive("fixed", [users], duration_s)


def ramp(start: int, step: int, max_users: int, stage_s: float) -> LoadShape:
    """start, start+step, ... up to max_users (always included), stage_s seconds each."""
    if start < 1 or step < 1 or max_users < start:
        raise ValueError("a ramp wants 1 <= start <= max_users and step >= 1")
    counts = list(range(start, max_users + 1, step))
    if counts[-1] != max_users:
        counts.append(max_users)
    return _consecutive("ramp", counts, stage_s)


def sweep(max_users: int, stage_s: float) -> LoadShape:
    """Powers of two 1, 2, 4, ... below max_users, then max_users itself."""
    if max_users < 1:
        raise ValueError("max_users must be at least 1")
    counts = []
    users = 1
    while users < max_users:
        counts.append(users)
        users *= 2
    counts.append(max_users)
    return _consecutive("sweep", counts, stage_s)


def build(kind: str, users: int, duration_s: float, stage_s: float, ramp_start: int = 1, ramp_step: int = 1) -> LoadShape:
    """`users` is the fixed count, or the top of a ramp or sweep; `duration_s` applies to fixed."""
    if kind == "fixed":
        return fixed(users, duration_s)
    if kind == "ramp":
        return ramp(ramp_start, ramp_step, users, stage_s)
    if kind == "sweep":
        return sweep(users, stage_s)
    raise ValueError(f"unknown load shape {kind!r}; choose one of {', '.join(SHAPES)}")
