"""Rotary position embedding (rotate-half layout, as Hugging Face Llama) with rope scaling."""

from __future__ import annotations

import math

import torch
from torch import nn

from engine import kernels

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, max_positions: int, theta: float, scaling: dict | None = None) -> None:
        super().__init__()
        inv_freq = rope_inverse_frequencies(head_dim, theta, scaling)  # [D/2]
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)  # [P, D/2]
        # [P, D]: cos then sin, kept in float32 whatever the model dtype.
        self.register_buffer("cos_sin_cache", torch.cat((angles.cos(), angles.sin()), dim=-1), persistent=False)

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor):
        return kernels.rotary(q, k, positions, self.cos_sin_cache)


def rope_inverse_frequencies(head_dim: int, theta: float, scaling: dict | None) -> torch.Tensor:
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim)
    rope_type = (scaling or {}).get("rope_type", "default")
    if rope_type == "default":
        return inv_freq
    if rope_type == "linear":
        return inv_freq / scaling["factor"]
    if rope_type == "llama3":
        return _llama3_frequencies(inv_freq, scaling)
    raise ValueError(f"rope type {rope_type!r} is not supported (supported: {', '.join(SUPPORTED_ROPE_TYPES)})")


def _llama3_frequencies(inv_freq: torch.Tensor, scaling: dict) -> torch.Tensor:
    # Llama 3.1: long wavelengths (low frequencies) are slowed by `factor`, short ones kept,
    # and the band between the two cut-offs interpolates linearly in 1/wavelength.
    factor = scaling["factor"]
    low, high = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
    original_len = scaling.get("original_max_position_embeddings", 8192)
    wavelength = 2 * math.pi / inv_freq
    long_cutoff, short_cutoff = original_len / low, original_len / high
    blend = ((original_len / wavelength - low) / (high - low)).clamp(0.0, 1.0)
    interpolated = (1 - blend) * inv_freq / factor + blend * inv_freq
    return torch.where(
        wavelength > long_cutoff, inv_freq / factor, torch.where(wavelength < short_cutoff, inv_freq, interpolated)
    )
