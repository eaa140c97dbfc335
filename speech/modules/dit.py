"""DiT velocity estimator of the flow-matching stage (paper section 2.2.1, Fig. 3b): non-causal Transformer
blocks with RoPE and padding masks, modulated by a conditioning vector through adaptive norms (adaLN-Zero,
Peebles & Xie 2023).

Legend: b batch, t frames, d model dim, o output dim (latent channels), f sinusoidal features.

The conditioning vector is ``timestep embedding + cond``, where ``cond (b, d)`` is a global condition the
caller projects to ``d`` (the speaker vector in ``FlowMatching``). Each block turns it into shift, scale
and gate of its attention and feed-forward branches; the gates start at zero, so every block starts as the
identity.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from speech.modules.rope import RotaryEmbedding
from speech.modules.transformer import Attention, SwiGLU, attention_mask, positions_from_mask


class TimestepEmbedding(nn.Module):
    """Flow time ``t in [0, 1]`` -> ``(b, d)``: sinusoidal features of ``scale * t``, then a SiLU MLP.

    Args:
        dim: Output size ``d``.
        freq_dim: Number ``f`` of sinusoidal features (even).
        scale: Time multiplier, so that ``[0, 1]`` spans many periods of the fastest feature.
        max_period: Slowest feature's period.
    """

    def __init__(self, dim: int, freq_dim: int = 256, scale: float = 1000.0, max_period: float = 10000.0):
        super().__init__()
        half = freq_dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)
        self.scale = scale
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """``t (b,)`` float -> ``(b, d)``."""
        args = self.scale * t.float()[:, None] * self.freqs
        feats = torch.cat((args.cos(), args.sin()), dim=-1)
        return self.mlp(feats.to(self.mlp[0].weight.dtype))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x (b, t, d) * (1 + scale) + shift`` with per-row ``shift, scale (b, d)``."""
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """adaLN-Zero block: ``x + gate_a * attn(modulate(norm(x)))``, then the same with SwiGLU.

    Args:
        dim: Model dim ``d``.
        heads: Attention heads.
        ffn_hidden: SwiGLU width (None: 8/3 ``d``).
        dropout: Dropout of attention and feed-forward.
    """

    def __init__(self, dim: int, heads: int, *, ffn_hidden: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ffn_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads, dropout)
        self.ffn = SwiGLU(dim, ffn_hidden, dropout)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.ada[1].weight)  # adaLN-Zero: gates (and shifts/scales) start at 0
        nn.init.zeros_(self.ada[1].bias)

    def forward(
        self, x: torch.Tensor, c: torch.Tensor, *, rope: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor
    ) -> torch.Tensor:
        """``x (b, t, d)``, conditioning ``c (b, d)``, RoPE angles, mask ``(b, 1, t, t)`` -> ``(b, t, d)``."""
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = self.ada(c).chunk(6, dim=-1)
        h = self.attn(modulate(self.attn_norm(x), shift_a, scale_a), rope=rope, mask=mask)
        x = x + gate_a[:, None] * h
        return x + gate_f[:, None] * self.ffn(modulate(self.ffn_norm(x), shift_f, scale_f))


class DiT(nn.Module):
    """Stack of ``DiTBlock``s with a final adaptive norm and a linear map to the output channels.

    Padded frames are never attended to and their outputs are zero, so padding a batch does not change
    the valid outputs (tested).

    Args:
        dim: Model dim ``d`` (the caller projects its inputs to it).
        layers: Number of blocks.
        heads: Attention heads (``d`` divisible by it, even head dim for RoPE).
        out_dim: Output channels ``o`` (the latent dim).
        ffn_hidden: SwiGLU width (None: 8/3 ``d``).
        dropout: Dropout inside the blocks.
        rope_base: RoPE frequency base.
    """

    def __init__(
        self,
        dim: int,
        layers: int,
        heads: int,
        out_dim: int,
        *,
        ffn_hidden: int | None = None,
        dropout: float = 0.0,
        rope_base: float = 10000.0,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"DiT dim {dim} is not divisible by heads {heads}")
        self.dim, self.out_dim = dim, out_dim
        self.time = TimestepEmbedding(dim)
        self.rope = RotaryEmbedding(dim // heads, rope_base)
        self.blocks = nn.ModuleList(
            DiTBlock(dim, heads, ffn_hidden=ffn_hidden, dropout=dropout) for _ in range(layers)
        )
        self.final_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.proj_out = nn.Linear(dim, out_dim)
        for layer in (self.final_ada[1], self.proj_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """Predicts ``(b, t, o)`` (zero on padded frames).

        Args:
            x: ``(b, t, d)`` projected inputs.
            t: ``(b,)`` flow time in ``[0, 1]``.
            cond: ``(b, d)`` global condition, added to the timestep embedding.
            valid: ``(b, t)`` bool, True on real frames.
        """
        c = self.time(t).to(x.dtype) + cond
        rope = self.rope.angles(positions_from_mask(valid))
        mask = attention_mask(valid, causal=False)
        for block in self.blocks:
            x = block(x, c, rope=rope, mask=mask)
        shift, scale = self.final_ada(c).chunk(2, dim=-1)
        return self.proj_out(modulate(self.final_norm(x), shift, scale)) * valid[..., None]
