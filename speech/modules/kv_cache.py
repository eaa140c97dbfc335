"""Static key/value cache of one attention layer, for prefill + one-token-at-a-time decoding.

Legend: b batch, h key/value heads, s cache slots (maximum sequence length), t new tokens, e head dim.

The cache is created after the model is built (``model.setup_cache(...)``) on the model's device and dtype,
written in place and never reallocated, so a decoding step does no allocation proportional to the sequence
and can be captured by CUDA graphs.
"""

from __future__ import annotations

import torch
from torch import nn


class KVCache(nn.Module):
    """Key and value buffers ``(b, h, s, e)`` filled left to right.

    Args:
        batch_size, heads, max_len, head_dim: Buffer shape.
        dtype, device: Of the buffers (the model's).
    """

    def __init__(
        self, batch_size: int, heads: int, max_len: int, head_dim: int, *, dtype: torch.dtype, device
    ) -> None:
        super().__init__()
        shape = (batch_size, heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.length = 0  # slots filled so far

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    def reset(self) -> None:
        """Forgets the stored sequence (the buffers are overwritten by the next prefill)."""
        self.length = 0

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Appends ``k, v (b, h, t, e)`` and returns every stored key and value ``(b, h, length, e)``.

        Raises:
            RuntimeError: the cache has no room for ``t`` more tokens.
        """
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise RuntimeError(f"KV cache full: {start} + {k.shape[2]} tokens > {self.max_len} slots")
        if k.shape[0] != self.k.shape[0]:
            raise RuntimeError(f"KV cache was set up for batch {self.k.shape[0]}, got batch {k.shape[0]}")
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]
