"""Static key/value cache of one attention layer, for prefill + one-token-at-a-time decoding.

Legend: b batch, h key/value heads, s cache slots (maximum sequence length), t new tokens, e head dim.

The cache is created after the model is built (``model.setup_cache(...)``) on the model's device and dtype,
written in place and never reallocated, so a decoding step does no allocation proportional to the sequence
and can be captured by CUDA graphs. Keys and values share one buffer ``(b, 2, h, s, e)``, so a decoding step
that computes them packed together stores both with a single copy (``append``).
"""

from __future__ import annotations

import torch
from torch import nn


class KVCache(nn.Module):
    """Keys and values ``(b, 2, h, s, e)`` (index 0 keys, 1 values), filled left to right.

    Args:
        batch_size, heads, max_len, head_dim: Buffer shape.
        dtype, device: Of the buffer (the model's).
    """

    def __init__(
        self, batch_size: int, heads: int, max_len: int, head_dim: int, *, dtype: torch.dtype, device
    ) -> None:
        super().__init__()
        shape = (batch_size, 2, heads, max_len, head_dim)
        self.register_buffer("kv", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.length = 0  # slots filled so far

    @property
    def max_len(self) -> int:
        return self.kv.shape[3]

    @property
    def batch_size(self) -> int:
        return self.kv.shape[0]

    def reset(self) -> None:
        """Forgets the stored sequence (the buffer is overwritten by the next prefill)."""
        self.length = 0

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Appends ``k, v (b, h, t, e)`` and returns every stored key and value ``(b, h, length, e)``."""
        return self.append(torch.stack((k, v), 1))

    def append(self, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Appends packed keys and values ``(b, 2, h, t, e)``; returns every stored key and value, each
        ``(b, h, length, e)`` (views of the buffer).

        Raises:
            RuntimeError: the cache has no room for ``t`` more tokens, or was set up for another batch size.
        """
        start, end = self.length, self.length + kv.shape[3]
        if end > self.max_len:
            raise RuntimeError(f"KV cache full: {start} + {kv.shape[3]} tokens > {self.max_len} slots")
        if kv.shape[0] != self.batch_size:
            raise RuntimeError(f"KV cache was set up for batch {self.batch_size}, got batch {kv.shape[0]}")
        self.kv[:, :, :, start:end] = kv
        self.length = end
        stored = self.kv[:, :, :, :end]
        return stored[:, 0], stored[:, 1]
