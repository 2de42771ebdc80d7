"""RMSNorm; with a residual it fuses the residual add (kernels.rms_norm)."""

from __future__ import annotations

import torch
from torch import nn

from engine import kernels
from engine.layers.linear import _copy_checked, _parameter


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = _parameter(torch.empty(hidden_size), self.weight_loader)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id=None) -> None:
        _copy_checked(param.data, loaded)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        """Without residual: norm(x). With: (norm(x + residual), x + residual)."""
        # _parameters read directly: see Linear.forward.
        return kernels.rms_norm(x, self._parameters["weight"], self.eps, residual)
