"""Static key/value cache of one attention layer, for prefill + one-token-at-a-time decoding.

Legend: b batch, h key/value heads, s cache slots (maximum sequence length), t new tokens, e head dim.

The cache is created after the model is built (``model.setup_cache(...)``) on the model's device and dtype and
is written in place, never reallocated. Every shape it returns is fixed (all ``s`` slots, filled or not) and
the fill level is a tensor (``pos``), not a Python int, so a decoding step sees the same shapes and the same
Python values at every position: ``torch.compile`` traces it once and CUDA graphs can replay it
(``tests/modules/test_kv_cache.py`` checks that a compiled step does not recompile). The caller masks
attention to the filled slots (and to the real tokens of padded rows); empty slots hold stale or zero keys.
Keys and values share one buffer ``(b, 2, h, s, e)``, so a step that computes them packed stores both with one
copy (``update``).
"""

from __future__ import annotations

import torch
from torch import nn


class KVCache(nn.Module):
    """Keys and values ``(b, 2, h, s, e)`` (index 0 keys, 1 values), filled left to right from slot 0.

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
        # slots filled so far = the slot the next token goes to, (1,): a tensor so that steps trace alike
        self.register_buffer("pos", torch.zeros(1, dtype=torch.long, device=device), persistent=False)

    @property
    def max_len(self) -> int:
        return self.kv.shape[3]

    @property
    def batch_size(self) -> int:
        return self.kv.shape[0]

    @property
    def length(self) -> int:
        """Slots filled so far (reads ``pos``: a device sync on GPU, so not for the decoding loop)."""
        return int(self.pos)

    def reset(self) -> None:
        """Forgets the stored sequence (the buffer is overwritten by the next prefill)."""
        self.pos.zero_()

    def update(self, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Writes packed keys and values ``(b, 2, h, t, e)`` at slots ``pos .. pos + t - 1`` and advances
        ``pos``; returns every slot's keys and values, each ``(b, h, s, e)`` (views of the buffer).

        Raises:
            IndexError: the cache has no room for ``t`` more tokens (CPU; on GPU a device-side assert).
            RuntimeError: the cache was set up for another batch size.
        """
        buffer, pos, t = self.kv, self.pos, kv.shape[3]
        if kv.shape[0] != buffer.shape[0]:
            raise RuntimeError(f"KV cache was set up for batch {buffer.shape[0]}, got batch {kv.shape[0]}")
        # slots past the end fail in index_copy_ (on CPU an IndexError; on GPU a device-side assert): no
        # Python-side check, which would need the fill level on the host every step
        buffer.index_copy_(3, pos + torch.arange(t, device=pos.device) if t > 1 else pos, kv)
        pos.add_(t)
        return buffer[:, 0], buffer[:, 1]
