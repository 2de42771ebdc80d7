"""SwiGLU feed-forward: down(silu(gate(x)) * up(x)), gate and up merged into one matmul."""

from __future__ import annotations

import torch
from torch import nn

from engine import kernels
from engine.layers.linear import Linear, MergedLinear


class SwiGLU(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool = False) -> None:
        super().__init__()
        # Shard ids 0 and 1 are gate_proj and up_proj of the checkpoint (see the model's packed_modules).
        self.gate_up_proj = MergedLinear(hidden_size, {0: intermediate_size, 1: intermediate_size}, bias)
        self.down_proj = Linear(intermediate_size, hidden_size, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [T, H] -> [T, 2I] -> [T, I] -> [T, H]; .forward: see engine/models/llama.py.
        # _modules read directly: nn.Module.__getattr__ costs ~0.5 us a lookup (see Linear.forward).
        return self.down(self._modules["gate_up_proj"].forward(x))

    def down(self, gate_up: torch.Tensor) -> torch.Tensor:
        """down(silu(gate) * up) of the gate_up projection [T, 2I]: a single row in one GEMV."""
        params = self._modules["down_proj"]._parameters
        return kernels.silu_and_mul_linear(gate_up, params["weight"], params.get("bias"))
