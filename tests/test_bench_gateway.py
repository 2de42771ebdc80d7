"""The gateway bench's bookkeeping (pure logic; the bench itself runs the real stack)."""

from __future__ import annotations

import json

from llmq.bench_gateway import Samples, _print, think_times


def test_streams_start_together_then_pause_one_to_three_steps():
    pauses = think_times(32, 8, step_s=0.02)
    assert len(pauses) == 32 and all(len(stream) == 8 for stream in pauses)
    assert all(0.0 <= stream[0] <= 0.02 for stream in pauses)  # the herd: all within the first step
    assert all(0.02 <= pause <= 0.06 for stream in pauses for pause in stream[1:])


def test_the_herd_is_reported_apart_from_the_steady_state(capsys):
    engine, stack = Samples(), Samples()
    for ms in (1.0, 2.0, 3.0):
        engine.add_ttft(ms / 1000, herd=False)
        stack.add_ttft((ms + 1.0) / 1000, herd=False)
    engine.add_ttft(0.010, herd=True)
    stack.add_ttft(0.030, herd=True)  # a slow herd must not move the steady-state numbers
    _print([(32, engine.row(), stack.row())], tokens_per_s=50.0, max_tokens=32)
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["added_ttft_p50_ms"]["32"] == 1.0
    assert result["herd_added_ttft_p50_ms"]["32"] == 20.0
    assert stack.row()["requests"] == 3 and stack.row()["herd_requests"] == 1


def test_a_single_stream_has_no_herd_line(capsys):
    engine, stack = Samples(), Samples()
    engine.add_ttft(0.001, herd=False)
    stack.add_ttft(0.004, herd=False)
    _print([(1, engine.row(), stack.row())], tokens_per_s=50.0, max_tokens=32)
    out = capsys.readouterr().out
    assert "herd added" not in out
    assert json.loads(out.strip().splitlines()[-1])["herd_added_ttft_p50_ms"] == {}
