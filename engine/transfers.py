"""Copies between the host and the device that never wait for the work queued on the device: the
engine launches a step while the one before still runs, and a copy that synchronized would undo it."""

from __future__ import annotations

import torch


class HostCopy:
    """Device tensors copied to pinned host memory behind the work queued so far; wait() blocks
    until that copy is done (an event, not a device-wide sync) and returns them as lists."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        self._event = None
        if tensors[0].device.type != "cuda":
            # A snapshot: the tensors may be buffers that the next step overwrites before wait().
            self._tensors = [t.clone() for t in tensors]
            return
        self._tensors = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
        for host, device in zip(self._tensors, tensors):
            host.copy_(device, non_blocking=True)
        self._event = torch.cuda.Event()
        self._event.record()

    def wait(self) -> list[list]:
        if self._event is not None:
            self._event.synchronize()
        return [t.tolist() for t in self._tensors]


def to_device(values: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A host list as a tensor on device, without waiting for the device: through pinned memory,
    which PyTorch's host allocator reuses only once the copy out of it has run."""
    if device.type != "cuda":
        return torch.tensor(values, dtype=dtype, device=device)
    return torch.tensor(values, dtype=dtype, pin_memory=True).to(device, non_blocking=True)
