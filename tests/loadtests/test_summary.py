import pytest

from loadtests import shapes
from loadtests.summary import find_knee, percentile, request_numbers, summarize, tokens_within
from tests.loadtests.synthetic import record


def test_percentile_interpolates_between_ranks():
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 4.0
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 90) == pytest.approx(3.7)
    assert percentile([], 50) is None


def test_request_numbers_of_one_request():
    numbers = request_numbers([record(0.0, ttft=0.5, e2e=2.5, tokens=21)])
    assert numbers["tokens_per_s_per_request"]["mean"] == pytest.approx(10.0)  # 20 tokens after the first, in 2 s
    assert numbers["latency_s"]["mean"] == 2.5 and numbers["ttft_s"]["p99"] == 0.5
    assert numbers["itl_s"]["p50"] == pytest.approx(0.1)
    assert numbers["completion_tokens"] == 21 and numbers["prompt_tokens"] == 32


def test_failures_are_counted_but_not_measured():
    records = [record(0.0), record(1.0, ok=False, error="HTTP 503: no worker"), record(2.0, e2e=3.2)]
    numbers = request_numbers(records)
    assert (numbers["requests"], numbers["succeeded"], numbers["failed"]) == (3, 2, 1)
    assert numbers["latency_s"]["mean"] == pytest.approx((1.2 + 3.2) / 2)
    assert numbers["completion_tokens"] == 22


def test_tokens_within_spreads_each_request_over_its_stream():
    # Tokens stream from t=1.2 to t=2.2 (start 1.0, TTFT 0.2, end 1.2 s after start).
    records = [record(1.0, ttft=0.2, e2e=1.2, tokens=100)]
    assert tokens_within(records, 0.0, 10.0) == pytest.approx(100)
    assert tokens_within(records, 1.2, 1.7) == pytest.approx(50)
    assert tokens_within(records, 2.2, 5.0) == pytest.approx(0)


def test_knee_is_where_scaling_stops_paying():
    assert find_knee([1, 2, 4, 8, 16], [10, 20, 40, 80, 160]) is None
    knee = find_knee([1, 2, 4, 8, 16], [10, 19, 36, 40, 41])
    assert (knee.index, knee.users, knee.throughput_tok_s) == (2, 4, 36)
    assert find_knee([1, 2, 4], [10, 30, 25]).users == 2  # throughput falls
    assert find_knee([4], [100]) is None


def test_summarize_a_sweep_per_stage():
    sweep = shapes.sweep(4, stage_s=10)  # stages 1, 2, 4 users over 30 s
    t0 = 1000.0
    records = [record(t0 + i, users=1) for i in range(0, 10, 2)]
    records += [record(t0 + 10 + i / 2, users=2) for i in range(0, 20, 2)]
    records += [record(t0 + 20 + i / 4, users=4) for i in range(0, 40, 2)]
    records.append(record(t0 + 25, ok=False, error="HTTP 429: busy", users=4))
    records.append(record(t0 + 30.4, users=4))  # sent after the schedule's end, before Locust's next tick
    summary = summarize(records, sweep, t0, t0 + 32, notes=["hello"])  # the last ends at +31.6
    assert [s["users"] for s in summary["stages"]] == [1, 2, 4]
    assert [s["requests"] for s in summary["stages"]] == [5, 10, 22]
    assert summary["stages"][2]["failed"] == 1
    assert summary["requests"] == 37 and summary["failed"] == 1 and summary["errors"] == {"HTTP 429: busy": 1}
    assert summary["completion_tokens"] == 36 * 11
    assert summary["throughput_tok_s"] == pytest.approx(36 * 11 / 32)
    throughputs = [s["throughput_tok_s"] for s in summary["stages"]]
    assert throughputs[0] < throughputs[1] < throughputs[2]
    assert summary["knee"] is None and summary["notes"] == ["hello"]


def test_warmup_requests_are_left_out_of_the_numbers_but_not_the_errors():
    ramp = shapes.ramp(1, 1, 3, stage_s=10)  # 1, 2, 3 users over 30 s
    t0 = 50.0
    slow_first = [record(t0, ttft=5.0, e2e=6.0), record(t0 + 1, ok=False, error="HTTP 500: cold")]
    steady = [record(t0 + 12 + i, users=2 if i < 8 else 3) for i in range(15)]
    summary = summarize(slow_first + steady, ramp, t0, t0 + 30, warmup_s=12)
    assert summary["requests"] == 15 and summary["failed"] == 0
    assert summary["ttft_s"]["p99"] == pytest.approx(0.2)
    assert summary["warmup"] == {"seconds": 12, "requests": 2, "failed": 1}
    assert summary["errors"] == {"HTTP 500: cold": 1}
    assert [s["users"] for s in summary["stages"]] == [2, 3]  # the first stage is all warm-up
    assert summary["duration_s"] == 18


def test_a_stream_of_only_special_tokens_succeeds_without_timings():
    from dataclasses import replace

    from loadtests.records import check_stream

    # Usage and finish_reason came, no content chunk: every token had empty text.
    empty = replace(record(10.0), ttft_s=None, itl_s=[], content_chunks=0)
    checked = check_stream(replace(empty, ok=False))
    assert checked.ok and checked.empty_text and checked.error is None
    broken = check_stream(replace(empty, ok=False, completion_tokens=None, finish_reason=None))
    assert not broken.ok and broken.error == "stream ended without content"

    numbers = request_numbers([checked, record(11.0)])
    assert numbers["succeeded"] == 2 and numbers["empty_text"] == 1
    assert numbers["ttft_s"]["p50"] == pytest.approx(0.2)  # the empty one has no TTFT to count
    assert checked.decode_tokens_per_s is None
    assert tokens_within([checked], 10.0, 12.0) == checked.completion_tokens  # counted at its end
