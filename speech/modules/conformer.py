"""Conformer blocks (macaron feed-forward, self-attention, depthwise convolution) with padding masks.

Legend: b batch, t frames, d model dim, h heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, dim * mult), nn.SiLU(), nn.Dropout(dropout),
            nn.Linear(dim * mult, dim), nn.Dropout(dropout),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention through PyTorch SDPA; padded keys are masked out."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x (b, t, d)``, ``mask (b, t)`` True = valid -> ``(b, t, d)``."""
        q, k, v = rearrange(self.qkv(self.norm(x)), "b t (three h e) -> three b h t e", three=3, h=self.heads)
        attn_mask = mask[:, None, None, :]  # (b, 1, 1, t): every query sees the valid keys
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(rearrange(y, "b h t e -> b t (h e)"))


class ConvModule(nn.Module):
    """Pointwise-GLU, depthwise conv, norm, SiLU, pointwise; padded frames are zeroed before convolving."""

    def __init__(self, dim: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.pointwise_in = nn.Conv1d(dim, 2 * dim, 1)
        self.depthwise = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.depthwise_norm = nn.LayerNorm(dim)  # per frame, so padding never enters the statistics
        self.pointwise_out = nn.Conv1d(dim, dim, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = self.norm(x).masked_fill(~mask[..., None], 0.0)
        y = F.glu(self.pointwise_in(rearrange(y, "b t d -> b d t")), dim=1)
        y = rearrange(self.depthwise(y.masked_fill(~mask[:, None], 0.0)), "b d t -> b t d")
        y = F.silu(self.depthwise_norm(y))
        return self.drop(self.pointwise_out(rearrange(y, "b t d -> b d t")).transpose(1, 2))


class ConformerBlock(nn.Module):
    """One Conformer block (Gulati et al., 2020): half FFN, attention, convolution, half FFN, norm."""

    def __init__(self, dim: int, heads: int, ff_mult: int = 4, kernel_size: int = 15, dropout: float = 0.1):
        super().__init__()
        self.ff1 = FeedForward(dim, ff_mult, dropout)
        self.attn = SelfAttention(dim, heads, dropout)
        self.conv = ConvModule(dim, kernel_size, dropout)
        self.ff2 = FeedForward(dim, ff_mult, dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x (b, t, d)``, ``mask (b, t)`` -> ``(b, t, d)``."""
        x = x + 0.5 * self.ff1(x)
        x = x + self.attn(x, mask)
        x = x + self.conv(x, mask)
        x = x + 0.5 * self.ff2(x)
        return self.norm(x)


def sinusoidal_positions(
    length: int, dim: int, device: torch.device, max_period: float = 10000.0
) -> torch.Tensor:
    """``(length, dim)`` sinusoidal absolute position encodings."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(max_period) / dim)
    )
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe
