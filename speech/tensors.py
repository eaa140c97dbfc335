"""Padding variable-length sequences into batches with ``*_lens`` and boolean masks (True = valid).

The ground floor of the package: models, modules, audio features, data and inference all pad and mask, so
these helpers import nothing of ``speech``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def lengths_to_mask(lens: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """``(b,)`` lengths -> ``(b, max_len)`` boolean mask, True on valid positions."""
    max_len = int(lens.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lens.device)[None] < lens[:, None]


def pad_sequences(
    seqs: Sequence[np.ndarray | torch.Tensor], pad_value: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pads along the first axis.

    Args:
        seqs: Arrays of shape ``(t_i, *feature_dims)`` with equal feature dims.
        pad_value: Value written past each sequence's end.

    Returns:
        ``(padded, lens, mask)``: ``(b, t_max, *feature_dims)``, ``(b,)`` int64, ``(b, t_max)`` bool; tensors
        keep their device and dtype.
    """
    tensors = [s if isinstance(s, torch.Tensor) else torch.as_tensor(np.asarray(s)) for s in seqs]
    lens = torch.tensor([t.shape[0] for t in tensors], dtype=torch.long, device=tensors[0].device)
    out = tensors[0].new_full((len(tensors), int(lens.max()), *tensors[0].shape[1:]), pad_value)
    for i, t in enumerate(tensors):
        out[i, : t.shape[0]] = t
    return out, lens, lengths_to_mask(lens)
