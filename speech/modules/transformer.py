"""Pre-norm Transformer blocks shared by the AR model, the speaker encoder and the flow-matching DiT:
RMSNorm, SwiGLU feed-forward, multi-head attention through PyTorch SDPA with RoPE and an optional KV cache.

Legend: b batch, t query tokens, s key tokens, d model dim, h heads, e head dim.

Masks are boolean with True = may attend. ``attention_mask`` builds them from a ``valid (b, t)`` padding
mask, so right-padded training batches and left-padded generation batches share one code path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from speech.modules.kv_cache import KVCache
from speech.modules.rope import RotaryEmbedding


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned gain, computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


def swiglu_hidden(dim: int, multiple_of: int = 64) -> int:
    """The usual SwiGLU width: 8/3 of ``dim`` (same parameters as a 4x GELU MLP), rounded up."""
    hidden = int(8 * dim / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


class SwiGLU(nn.Module):
    """``w2(silu(w1 x) * w3 x)``; ``(b, t, d) -> (b, t, d)``."""

    def __init__(self, dim: int, hidden: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = hidden or swiglu_hidden(dim)
        self.w13 = nn.Linear(dim, 2 * hidden, bias=False)  # w1 and w3 in one matmul
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.drop(self.w2(F.silu(gate) * up))


def attention_mask(valid: torch.Tensor, *, causal: bool) -> torch.Tensor:
    """Boolean SDPA mask ``(b, 1, t, t)`` from ``valid (b, t)`` (True = real token).

    A query may see valid keys (and, if ``causal``, only earlier ones). Every query also sees itself, so
    padded queries never get an all-False row (SDPA would return NaN there); their outputs are ignored.
    """
    t = valid.shape[1]
    mask = valid[:, None, None, :].expand(-1, 1, t, -1)
    if causal:
        mask = mask & torch.ones(t, t, dtype=torch.bool, device=valid.device).tril()
    return mask | torch.eye(t, dtype=torch.bool, device=valid.device)


def positions_from_mask(valid: torch.Tensor) -> torch.Tensor:
    """RoPE positions ``(b, t)``: each row counts its valid tokens from 0 (padding keeps the last count)."""
    return (valid.long().cumsum(-1) - 1).clamp(min=0)


class Attention(nn.Module):
    """Multi-head self-attention with RoPE; with ``kv_cache`` set, keys/values are appended to it.

    Args:
        dim: Model dim ``d``.
        heads: Number of heads ``h`` (``d`` divisible by ``h``).
        dropout: Attention dropout (training only).
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.head_dim, self.dropout = heads, dim // heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.kv_cache: KVCache | None = None

    def forward(
        self,
        x: torch.Tensor,
        *,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """``x (b, t, d)`` -> ``(b, t, d)``.

        Args:
            rope: ``(cos, sin)`` from ``RotaryEmbedding.angles`` for the ``t`` new tokens, or None.
            mask: Boolean ``(b, 1, t, s)``; ``s = t``, or the cache length when a cache is set.
            is_causal: Use SDPA's built-in causal mask instead (no padding, no cache).
        """
        q, k, v = rearrange(self.qkv(x), "b t (three h e) -> three b h t e", three=3, h=self.heads)
        if rope is not None:
            q, k = RotaryEmbedding.rotate(q, *rope), RotaryEmbedding.rotate(k, *rope)
        if self.kv_cache is not None:
            k, v = self.kv_cache.update(k, v)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal and mask is None,
            dropout_p=self.dropout if self.training else 0.0,
        )  # fmt: skip
        return self.out(rearrange(y, "b h t e -> b t (h e)"))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn(norm(x))``, then ``x + swiglu(norm(x))``; ``(b, t, d) -> (b, t, d)``."""

    def __init__(
        self, dim: int, heads: int, *, ffn_hidden: int | None = None, dropout: float = 0.0, eps: float = 1e-6
    ) -> None:
        super().__init__()
        self.attn_norm, self.ffn_norm = RMSNorm(dim, eps), RMSNorm(dim, eps)
        self.attn = Attention(dim, heads, dropout)
        self.ffn = SwiGLU(dim, ffn_hidden, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        *,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        x = x + self.drop(self.attn(self.attn_norm(x), rope=rope, mask=mask, is_causal=is_causal))
        return x + self.ffn(self.ffn_norm(x))
