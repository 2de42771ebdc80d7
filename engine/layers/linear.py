"""Linear layers that load their own checkpoint tensors.

Each parameter carries a `weight_loader(param, loaded, shard_id=None)`, so the checkpoint loader
never knows a layer's layout: a tensor-parallel or quantized linear replaces these classes and
brings its own loader (slicing by rank, quantizing) without touching the model or the loader.
"""

from __future__ import annotations

import torch
from torch import nn

from engine import kernels


class Linear(nn.Module):
    """y = x W^T (+ b), W [out_features, in_features]."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        # Uninitialised: the loader (or the dummy initialiser) fills every parameter.
        self.weight = _parameter(torch.empty(out_features, in_features), self.weight_loader)
        self.bias = _parameter(torch.empty(out_features), self.weight_loader) if bias else None

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id=None) -> None:
        _copy_checked(param.data, loaded)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # _parameters read directly: nn.Module.__getattr__ costs ~0.5 us a lookup, on the
        # per-layer hot path (120 linears a step). A bias-less layer's bias is a plain None.
        params = self._parameters
        return kernels.linear(x, params["weight"], params.get("bias"))


class MergedLinear(Linear):
    """Several projections of one input stacked along the output dim (q|k|v, gate|up): one matmul.

    `output_sizes` maps each checkpoint shard id to its rows, in order."""

    def __init__(self, in_features: int, output_sizes: dict, bias: bool = False) -> None:
        super().__init__(in_features, sum(output_sizes.values()), bias)
        self.output_sizes = dict(output_sizes)
        self.shard_offsets: dict = {}
        offset = 0
        for shard_id, size in self.output_sizes.items():
            self.shard_offsets[shard_id] = offset
            offset += size
        for param in self.parameters():
            param.shard_ids = tuple(self.output_sizes)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id=None) -> None:
        if shard_id not in self.shard_offsets:
            raise ValueError(f"unknown shard {shard_id!r}; expected one of {list(self.shard_offsets)}")
        rows = param.data.narrow(0, self.shard_offsets[shard_id], self.output_sizes[shard_id])
        _copy_checked(rows, loaded)


def _parameter(data: torch.Tensor, weight_loader) -> nn.Parameter:
    param = nn.Parameter(data, requires_grad=False)
    param.weight_loader = weight_loader
    return param


def _copy_checked(target: torch.Tensor, loaded: torch.Tensor) -> None:
    if target.shape != loaded.shape:
        raise ValueError(f"checkpoint tensor of shape {tuple(loaded.shape)} for a parameter of {tuple(target.shape)}")
    target.copy_(loaded)
