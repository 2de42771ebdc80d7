"""Numbers from raw request records: per-request speed, latency, TTFT, inter-token gaps,
throughput, per-stage numbers for ramps and sweeps, and the knee of the throughput curve."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from loadtests.records import RequestRecord
from loadtests.shapes import LoadShape

# Past the knee, one more step of users buys less than this share of a proportional gain.
KNEE_MIN_EFFICIENCY = 0.25


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks, q in [0, 100]."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def distribution(values: list[float], quantiles=(50, 90, 99)) -> dict[str, float | None]:
    stats = {"mean": mean(values)}
    stats.update({f"p{q}": percentile(values, q) for q in quantiles})
    return stats


def tokens_within(records: list[RequestRecord], start: float, end: float) -> float:
    """Completion tokens streamed inside [start, end], each request's tokens spread evenly
    between its first token and its end (a request spanning two stages counts in both)."""
    total = 0.0
    for record in records:
        if not record.ok or not record.completion_tokens:
            continue
        last = record.end_at
        first = record.first_token_at if record.first_token_at is not None else last  # empty text: at its end
        if last <= first:
            total += record.completion_tokens if start <= last <= end else 0
            continue
        overlap = min(last, end) - max(first, start)
        if overlap > 0:
            total += record.completion_tokens * overlap / (last - first)
    return total


def request_numbers(records: list[RequestRecord]) -> dict:
    """Per-request numbers of a set of records (a whole run or one stage)."""
    good = [r for r in records if r.ok]
    speeds = [s for s in (r.decode_tokens_per_s for r in good) if s is not None]
    return {
        "requests": len(records),
        "succeeded": len(good),
        "failed": len(records) - len(good),
        "completion_tokens": sum(r.completion_tokens or 0 for r in good),
        "prompt_tokens": sum(r.prompt_tokens or 0 for r in good),
        "tokens_per_s_per_request": distribution(speeds, quantiles=(50,)),
        "latency_s": distribution([r.e2e_s for r in good]),
        "ttft_s": distribution([r.ttft_s for r in good if r.ttft_s is not None]),
        "empty_text": sum(r.empty_text for r in good),
        "itl_s": distribution([gap for r in good for gap in r.itl_s], quantiles=(50, 99)),
    }


@dataclass(frozen=True)
class Knee:
    index: int  # into the stages
    users: int
    throughput_tok_s: float


def find_knee(users: list[int], throughput: list[float], min_efficiency: float = KNEE_MIN_EFFICIENCY) -> Knee | None:
    """The last point before adding users stops paying: from point i to i+1 the relative
    throughput gain, divided by the relative growth in users, falls below min_efficiency
    (1.0 is linear scaling). None when throughput keeps scaling to the end."""
    for i in range(len(users) - 1):
        if throughput[i] <= 0 or users[i + 1] <= users[i]:
            continue
        gain = (throughput[i + 1] - throughput[i]) / throughput[i]
        growth = (users[i + 1] - users[i]) / users[i]
        if gain / growth < min_efficiency:
            return Knee(i, users[i], throughput[i])
    return None


def stage_numbers(records: list[RequestRecord], shape: LoadShape, run_start: float, measure_from: float) -> list[dict]:
    """Per stage, from `measure_from` on (a stage wholly inside the warm-up is left out).
    Requests sent after the schedule's end belong to the last stage: Locust checks the shape
    once a second, so its users may start one more request before they are stopped."""
    stages = []
    for index, stage in enumerate(shape.stages):
        start, end = max(run_start + stage.start_s, measure_from), run_start + stage.end_s
        if start >= end:
            continue
        last = index == len(shape.stages) - 1
        inside = [r for r in records if start <= r.start and (r.start < end or last)]
        numbers = {"users": stage.users, "start_s": stage.start_s, "end_s": stage.end_s}
        numbers["throughput_tok_s"] = tokens_within(records, start, end) / (end - start)
        numbers.update(request_numbers(inside))
        stages.append(numbers)
    return stages


def summarize(
    records: list[RequestRecord], shape: LoadShape, run_start: float, run_end: float,
    notes: list[str] = (), warmup_s: float = 0.0,
) -> dict:
    """Everything summary.json holds. Requests sent in the first `warmup_s` seconds are left
    out of the numbers (compilation, cache filling), not out of the errors."""
    measure_from = min(run_start + warmup_s, run_end)
    measured = [r for r in records if r.start >= measure_from]
    warmup = [r for r in records if r.start < measure_from]
    summary = {"shape": shape.kind, "duration_s": run_end - measure_from}
    summary.update(request_numbers(measured))
    summary["throughput_tok_s"] = tokens_within(records, measure_from, run_end) / max(run_end - measure_from, 1e-9)
    summary["errors"] = dict(Counter(r.error for r in records if not r.ok).most_common())
    summary["warmup"] = {"seconds": warmup_s, "requests": len(warmup), "failed": sum(not r.ok for r in warmup)}
    summary["stages"] = stage_numbers(records, shape, run_start, measure_from)
    knee = find_knee([s["users"] for s in summary["stages"]], [s["throughput_tok_s"] for s in summary["stages"]])
    summary["knee"] = None if knee is None else {"users": knee.users, "throughput_tok_s": knee.throughput_tok_s}
    summary["notes"] = list(notes)
    return summary
