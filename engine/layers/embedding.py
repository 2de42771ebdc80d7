"""Token embedding and the LM head (tied to the embedding or its own matrix)."""

from __future__ import annotations

import torch
from torch import nn

from engine import kernels

from engine.layers.linear import _copy_checked, _parameter


class VocabEmbedding(nn.Module):
    def __init__(self, vocab_size: int, hidden_size: int) -> None:
        super().__init__()
        self.weight = _parameter(torch.empty(vocab_size, hidden_size), self.weight_loader)
        # [S] int64 on the device, set by the runner: the last step's sampled ids, where an input
        # id < 0 is looked up (kernels.embedding). A fixed buffer, so captured graphs read it too.
        self.pending_ids: torch.Tensor | None = None

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id=None) -> None:
        _copy_checked(param.data, loaded)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return kernels.embedding(input_ids, self.weight, self.pending_ids)  # [T] -> [T, H]


class LMHead(nn.Module):
    """Logits of the rows that sample. Tied: shares the embedding's parameter (loaded once)."""

    def __init__(self, vocab_size: int, hidden_size: int, tied_to: VocabEmbedding | None = None) -> None:
        super().__init__()
        self.tied = tied_to is not None
        if tied_to is not None:
            self.weight = tied_to.weight
        else:
            self.weight = _parameter(torch.empty(vocab_size, hidden_size), self.weight_loader)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id=None) -> None:
        _copy_checked(param.data, loaded)

    def forward(self, hidden: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        # [S, H] -> [S, V] in float32: sampling and logprobs need the precision. out: [S, V] float32
        # to write into (the decode graphs share one, rather than each keeping its own). The GEMV
        # stores its float32 sums there directly (no widening kernel, no bf16 rounding); the other
        # paths compute in the activation dtype and widen (kernels.linear).
        if out is None:
            if hidden.dtype == torch.float32:  # a float32 model: its sums are float32 already
                return kernels.linear(hidden, self.weight, None)
            out = hidden.new_empty(hidden.shape[0], self.weight.shape[0], dtype=torch.float32)
        return kernels.linear(hidden, self.weight, None, out=out)
