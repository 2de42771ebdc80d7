"""Buffers that keep their values between kernel launches (engine/kernels/persistent.py)."""

from __future__ import annotations

import pytest
import torch

from engine.kernels.persistent import PersistentBuffer


def test_a_buffer_is_filled_once_kept_and_grown_past_its_last_size():
    buffer = PersistentBuffer("test keys", torch.int64, -5, minimum=16)
    cpu = torch.device("cpu")
    first = buffer.get(cpu, 3)
    assert first.dtype == torch.int64 and first.numel() == 16 and first.eq(-5).all()
    first[0] = 7  # a launch's entries: the same tensor comes back, as it was left
    assert buffer.get(cpu, 16) is first and first[0] == 7
    larger = buffer.get(cpu, 17)
    assert larger.numel() == 32 and larger.eq(-5).all()
    assert buffer.buffers[cpu] == [first, larger]  # the outgrown one stays alive for captured graphs


def test_no_buffer_grows_during_a_capture(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    with pytest.raises(RuntimeError, match="test counters need 8 entries .* before capturing"):
        PersistentBuffer("test counters", torch.int32, 0, minimum=4).get(torch.device("cuda", 0), 8)
