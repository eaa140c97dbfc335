"""Rotary position embedding (RoPE), applied to queries and keys at explicit per-token positions.

Legend: b batch, h heads, t tokens, e head dim.

Positions are passed in rather than implied by the index, so left-padded batches (each row's first valid
token at position 0) and one-token decoding steps use the same code.
"""

from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """Rotates pairs ``(x[i], x[i + e/2])`` by ``position * base^(-2i/e)`` (the Llama/GPT-NeoX layout).

    Args:
        head_dim: Size ``e`` of one attention head (even).
        base: Frequency base.
    """

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head dim, got {head_dim}")
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def angles(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``positions (b, t)`` integer -> ``(cos, sin)``, each ``(b, 1, t, e)`` in float32."""
        freqs = positions[..., None].float() * self.inv_freq  # (b, t, e/2)
        freqs = torch.cat((freqs, freqs), dim=-1)[:, None]
        return freqs.cos(), freqs.sin()

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """``x (b, h, t, e)`` rotated by the angles of ``angles()``; keeps ``x``'s dtype."""
        half = x.shape[-1] // 2
        rotated_half = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return (x.float() * cos + rotated_half.float() * sin).to(x.dtype)
