"""Device buffers that keep their values from one kernel launch to the next (the counters and keys
of kernels whose last program finishes the work: engine/kernels/triton_split_merge.py,
engine/kernels/triton_argmax.py). Every launch leaves its entries as it found them, so launches on
one device must not overlap (the engine launches everything in one stream).

A buffer grows outside CUDA-graph capture only: a capture cannot allocate, so a shape must run
once before it is captured (the engine runs every graph size first). A buffer it outgrows is kept
alive, since a captured graph keeps the address it was captured with. Pure torch: tested on CPU.
"""

from __future__ import annotations

import torch


class PersistentBuffer:
    def __init__(self, what: str, dtype: torch.dtype, fill: int, minimum: int) -> None:
        self.what, self.dtype, self.fill, self.minimum = what, dtype, fill, minimum
        self.buffers: dict[torch.device, list[torch.Tensor]] = {}  # every one handed out, the last in use

    def get(self, device: torch.device, count: int) -> torch.Tensor:
        """At least count entries on device, each holding fill between launches."""
        held = self.buffers.setdefault(device, [])
        have = held[-1].numel() if held else 0
        if have and have >= count:
            return held[-1]
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError(
                f"{self.what} need {count} entries on {device} and have {have}; "
                "run this shape once before capturing it in a CUDA graph"
            )
        held.append(torch.full((max(count, self.minimum, 2 * have),), self.fill, dtype=self.dtype, device=device))
        return held[-1]
