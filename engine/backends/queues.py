"""Taking everything a producer thread has queued, for backends whose step() drains a queue."""

from __future__ import annotations

import queue


def drain(source: queue.Queue, wait_s: float | None) -> list:
    """Everything queued now; with wait_s, first wait that long for one item (empty if none came)."""
    try:
        items = [source.get(timeout=wait_s) if wait_s is not None else source.get_nowait()]
    except queue.Empty:
        return []
    while True:
        try:
            items.append(source.get_nowait())
        except queue.Empty:
            return items
