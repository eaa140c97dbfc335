"""Rotary position embedding (RoPE), applied to queries and keys at explicit per-token positions.

Legend: b batch, h heads, t tokens, e head dim.

Positions are passed in rather than implied by the index, so left-padded batches (each row's first valid
token at position 0) and one-token decoding steps use the same code.

Decoding steps rotate queries, keys and values packed in one ``(b, 3, h, t, e)`` tensor with one fused op
(``packed_angles`` / ``rotate_packed``): the values get angle 0, and rotate-half's sign is folded into the
sine table, so the rotation is ``x * cos + roll(x, e/2) * sin``.
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

    def packed_angles(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``positions (p,)`` integer -> ``(cos, sin)``, each ``(p, 3, 1, 1, e)`` float32, for
        ``rotate_packed``: index 0 and 1 rotate queries and keys, index 2 leaves values as they are."""
        cos, sin = self.angles(positions[None])  # (1, 1, p, e)
        cos, sin = cos[0, 0], sin[0, 0]
        half = cos.shape[-1] // 2
        sin = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)  # rotate-half's sign
        cos = torch.stack((cos, cos, torch.ones_like(cos)), 1)
        sin = torch.stack((sin, sin, torch.zeros_like(sin)), 1)
        return cos[:, :, None, None], sin[:, :, None, None]

    @staticmethod
    def rotate_packed(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """``qkv (b, 3, h, t, e)`` with ``(cos, sin)`` from ``packed_angles`` (indexed to broadcast, e.g.
        ``(b or 1, 3, 1, t, e)``) -> the same tensor with queries and keys rotated as ``rotate`` does;
        keeps ``qkv``'s dtype."""
        rolled = qkv.roll(qkv.shape[-1] // 2, dims=-1)  # (x2, x1): rotate-half up to the sign
        return torch.addcmul(qkv * cos, rolled, sin).to(qkv.dtype)
