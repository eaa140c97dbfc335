"""Pre-norm Transformer blocks shared by the AR model, the speaker encoder and the flow-matching DiT:
RMSNorm, SwiGLU feed-forward, multi-head attention through PyTorch SDPA with RoPE and an optional KV cache.

Legend: b batch, t query tokens, s key tokens, d model dim, h heads, e head dim.

Masks are boolean with True = may attend. ``attention_mask`` builds them from a ``valid (b, t)`` padding
mask, so right-padded training batches and left-padded generation batches share one code path;
``slot_mask`` builds them over the slots of a static KV cache (prefill and decoding).

``TransformerBlock.forward(x, cache=None)`` is the one block math for training, prefill and one-token
decoding; ``TransformerBlock.step`` is its lean one-token form for CPU, tested equal to it.
"""

from __future__ import annotations

from typing import NamedTuple

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


def slot_mask(keys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Boolean SDPA mask ``(b, 1, t, s)`` over a KV cache's slots.

    Args:
        keys: ``(b, s)`` True where a slot holds (or will hold) a real token, False for padding.
        queries: ``(t,)`` the slots the new tokens are written to.

    A query sees the real tokens at or before its own slot (causal; later slots are empty or not yet
    written) and always itself, as in ``attention_mask``.
    """
    slots = torch.arange(keys.shape[1], device=keys.device)
    earlier = slots <= queries[:, None]  # (t, s)
    return (keys[:, None, None, :] & earlier) | (slots == queries[:, None])


class Attention(nn.Module):
    """Multi-head self-attention with RoPE; given a ``KVCache``, keys/values are written to it and the
    queries attend over all its slots.

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
        self.kv_cache: KVCache | None = None  # this layer's cache, set up by the model for generation

    def forward(
        self,
        x: torch.Tensor,
        *,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """``x (b, t, d)`` -> ``(b, t, d)``.

        Args:
            rope: ``(cos, sin)`` from ``RotaryEmbedding.angles`` for the ``t`` new tokens, or None.
            mask: Boolean ``(b, 1, t, s)``; ``s = t``, or with a cache (``slot_mask``) its first ``s`` slots:
                all of them (static shapes) or fewer (e.g. a prefill: only the slots it fills).
            is_causal: Use SDPA's built-in causal mask instead (no padding, no cache).
            cache: Write the new keys/values there and attend over its slots (prefill, decoding).

        Raises:
            ValueError: a cache without a mask (the cache's empty slots must be masked out).
        """
        q, k, v = rearrange(self.qkv(x), "b t (three h e) -> three b h t e", three=3, h=self.heads)
        if rope is not None:
            q, k = RotaryEmbedding.rotate(q, *rope), RotaryEmbedding.rotate(k, *rope)
        if cache is not None:
            if mask is None:
                raise ValueError("attention over a KV cache needs a mask of its filled slots (slot_mask)")
            k, v = cache.update(torch.stack((k, v), 1))
            n = mask.shape[-1]
            if n < k.shape[2]:  # the mask covers the first n slots: the later ones are not attended at all
                k, v = k[:, :, :n], v[:, :, :n]
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal and mask is None,
            dropout_p=self.dropout if self.training else 0.0,
        )  # fmt: skip
        return self.out(rearrange(y, "b h t e -> b t (h e)"))

    def causal_probabilities(
        self, x: torch.Tensor, heads: int, *, rope: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """The causal attention weights ``(b, heads, t, t)`` of the first ``heads`` heads for ``x (b, t, d)``
        (no padding mask, no dropout: those of ``forward(x, rope=rope, is_causal=True)`` in eval mode), for
        losses on the attention itself (``speech.modules.alignment``). Recomputes the queries and keys."""
        q, k, _ = rearrange(self.qkv(x), "b t (three h e) -> three b h t e", three=3, h=self.heads)
        q, k = q[:, :heads], k[:, :heads]
        if rope is not None:
            q, k = RotaryEmbedding.rotate(q, *rope), RotaryEmbedding.rotate(k, *rope)
        t = x.shape[1]
        scores = (q.float() @ k.float().transpose(-1, -2)) * self.head_dim**-0.5
        future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        return scores.masked_fill(future, float("-inf")).softmax(-1)


class StepWeights(NamedTuple):
    """One block's weights laid out for ``TransformerBlock.step``: transposed to ``(in, out)`` (``x @ W``
    streams rows: faster on CPU for one row than ``F.linear`` on ``(out, in)``), ``qkv`` and ``w13`` carrying
    the preceding RMSNorm's gain times ``sqrt(d)`` (see ``unit_rms``)."""

    qkv: torch.Tensor  # (d, 3d)
    out: torch.Tensor  # (d, d)
    w13: torch.Tensor  # (d, 2f)
    w2: torch.Tensor  # (f, d)
    floor: torch.Tensor  # sqrt(d * eps) of the block's RMSNorms, 0-dim


def unit_rms(x: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
    """``x (b, d) / sqrt(||x||^2 + floor^2)``: with ``floor = sqrt(d * eps)`` this is RMSNorm (eps included)
    up to the factor ``sqrt(d) * gain`` that the next weights carry, in three ops instead of six."""
    return x / torch.hypot(torch.linalg.vector_norm(x, dim=-1, keepdim=True), floor)


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn(norm(x))``, then ``x + swiglu(norm(x))``; ``(b, t, d) -> (b, t, d)``.

    ``forward`` is the block's math for training (no cache), prefill (the prefix into the cache) and decoding
    (one token per step into the cache). ``step`` is the same one-token decoding step in as few ops as it
    takes, for CPU, where per-op overhead rather than arithmetic is what a step costs; the equivalence test
    (``tests/modules/test_transformer_block.py``) pins it to ``forward``.
    """

    def __init__(
        self, dim: int, heads: int, *, ffn_hidden: int | None = None, dropout: float = 0.0, eps: float = 1e-6
    ) -> None:
        super().__init__()
        self.attn_norm, self.ffn_norm = RMSNorm(dim, eps), RMSNorm(dim, eps)
        self.attn = Attention(dim, heads, dropout)
        self.ffn = SwiGLU(dim, ffn_hidden, dropout)
        self.drop = nn.Dropout(dropout)
        self._step_weights: tuple[tuple, StepWeights] | None = None  # see ``step_weights``

    def forward(
        self,
        x: torch.Tensor,
        *,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """``x (b, t, d)`` -> ``(b, t, d)``; the arguments are ``Attention.forward``'s."""
        x = x + self.drop(
            self.attn(self.attn_norm(x), rope=rope, mask=mask, is_causal=is_causal, cache=cache)
        )
        return x + self.ffn(self.ffn_norm(x))

    def step_weights(self) -> StepWeights:
        """The weights laid out for ``step`` (a copy: the block's size in memory while kept).

        Made once and reused until a parameter changes: the key is every parameter's storage and version
        counter, which in-place updates (optimizer steps, ``load_state_dict``, ``LoRAAdapter.applied``) and
        moves (``.to``) change. A LoRA-wrapped layer gives its adapted ``.weight``. ``drop_step_weights``
        frees the copy.
        """
        key = tuple((p.data_ptr(), p._version) for p in self.parameters())
        if self._step_weights is None or self._step_weights[0] != key:
            self._step_weights = (key, self._layout_step_weights())
        return self._step_weights[1]

    def drop_step_weights(self) -> None:
        """Frees the copy made by ``step_weights``."""
        self._step_weights = None

    def _layout_step_weights(self) -> StepWeights:
        d = self.attn.out.in_features
        scale = d**0.5

        def t(weight, norm=None):  # (out, in) -> (in, out), the RMSNorm's gain * sqrt(d) folded into the rows
            w = weight.float().t()
            if norm is not None:
                w = w * (norm.weight.float() * scale)[:, None]
            return w.to(weight.dtype).contiguous()

        floor = torch.tensor((d * self.attn_norm.eps) ** 0.5, device=self.attn_norm.weight.device)
        return StepWeights(t(self.attn.qkv.weight, self.attn_norm), t(self.attn.out.weight),
                           t(self.ffn.w13.weight, self.ffn_norm), t(self.ffn.w2.weight), floor)  # fmt: skip

    def step(
        self,
        x: torch.Tensor,
        weights: StepWeights,
        *,
        rope: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
        cache: KVCache,
        filled: int | None = None,
    ) -> torch.Tensor:
        """``forward`` for one token per row (eval mode: no dropout), ``x (b, d) -> (b, d)``.

        RMSNorm is ``unit_rms`` with its gain folded into the next weights (``step_weights``), queries, keys
        and values are rotated in one op (``RotaryEmbedding.rotate_packed``) and stored with one copy, and the
        residual adds ride on ``addmm``.

        Args:
            weights: ``step_weights()``.
            rope: ``RotaryEmbedding.packed_angles`` of each row's position, each ``(b, 3, 1, 1, e)``, or
                ``(3, 1, 1, e)`` when every row is at the same position.
            mask: ``(b, 1, 1, s)`` over the cache's slots (``slot_mask``), or ``(b, 1, 1, filled)`` over the
                filled ones, or None with ``filled`` when every filled slot holds a real token.
            cache: This layer's KV cache; the token goes to its next slot.
            filled: Attend over the first ``filled`` slots only (the filled ones, counted by the caller):
                fewer keys in eager mode; None attends over all ``s`` (static shapes).

        Raises:
            ValueError: neither ``mask`` nor ``filled`` (the cache's empty slots would be attended).
        """
        if mask is None and filled is None:
            raise ValueError("the decoding step needs a mask of the filled slots or their count (filled)")
        b, d = x.shape
        heads, e = self.attn.heads, self.attn.head_dim
        qkv = (unit_rms(x, weights.floor) @ weights.qkv).view(b, 3, heads, 1, e)
        qkv = RotaryEmbedding.rotate_packed(qkv, *rope)
        k, v = cache.update(qkv[:, 1:])
        if filled is not None:
            k, v = k[:, :, :filled], v[:, :, :filled]
        y = F.scaled_dot_product_attention(qkv[:, 0], k, v, attn_mask=mask)  # (b, h, 1, e)
        x = torch.addmm(x, y.view(b, d), weights.out)
        gate, up = (unit_rms(x, weights.floor) @ weights.w13).chunk(2, dim=-1)
        return torch.addmm(x, F.silu(gate) * up, weights.w2)
