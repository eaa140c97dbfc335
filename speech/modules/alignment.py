"""Guided attention (Tachibana et al. 2017, DC-TTS): a loss that pulls an attention head onto the diagonal
of a text-to-speech alignment, so that the model learns early which text goes with which audio step.

Legend: b batch, h heads, k queries (audio steps), n keys (text tokens).

Speech reads its text left to right at a roughly steady rate, so audio step ``j`` of ``K`` should look near
text token ``j * N / K`` of ``N``. With relative positions ``u = (j + 1/2) / K`` and ``v = (i + 1/2) / N``
the guide is ``G[j, i] = exp(-(u - v)^2 / (2 sigma^2))`` and the loss of one query is
``1 - sum_i A[j, i] G[j, i]``: 0 when the head puts all its weight on the diagonal, 1 when it puts none
there (elsewhere in the text, or on keys that are not text at all). In a decoder-only model the head also
sees the speaker, the BOS and earlier audio: weight there counts as off the diagonal.
"""

from __future__ import annotations

import torch


def diagonal_guide(
    query_lens: torch.Tensor, key_lens: torch.Tensor, k: int, n: int, sigma: float
) -> torch.Tensor:
    """The guide ``G (b, k, n)`` for rows of ``query_lens (b,)`` audio steps and ``key_lens (b,)`` text
    tokens (positions past a row's lengths get 0)."""
    j = torch.arange(k, device=query_lens.device, dtype=torch.float32)[None, :, None]
    i = torch.arange(n, device=query_lens.device, dtype=torch.float32)[None, None, :]
    u = (j + 0.5) / query_lens.clamp(min=1)[:, None, None].float()
    v = (i + 0.5) / key_lens.clamp(min=1)[:, None, None].float()
    guide = torch.exp(-((u - v) ** 2) / (2 * sigma**2))
    valid = (j < query_lens[:, None, None]) & (i < key_lens[:, None, None])
    return guide * valid


def guided_attention_loss(
    probs: torch.Tensor, query_lens: torch.Tensor, key_lens: torch.Tensor, sigma: float = 0.2
) -> torch.Tensor:
    """Mean over heads and valid queries of ``1 - sum_i A[j, i] G[j, i]``.

    Args:
        probs: ``(b, h, k, n)`` attention weights of audio steps on text tokens (rows of the full softmax:
            they need not sum to 1 over the text).
        query_lens, key_lens: ``(b,)`` valid audio steps and text tokens per row; rows with none count 0.
        sigma: Width of the diagonal band, relative to the lengths.

    Raises:
        ValueError: ``sigma`` not positive.
    """
    if sigma <= 0:
        raise ValueError(f"the guide's sigma must be > 0, got {sigma}")
    b, _, k, n = probs.shape
    guide = diagonal_guide(query_lens, key_lens, k, n, sigma)
    on_diagonal = (probs.float() * guide[:, None]).sum(-1)  # (b, h, k)
    valid = (torch.arange(k, device=probs.device)[None] < query_lens[:, None]) & (key_lens[:, None] > 0)
    weights = valid[:, None].expand_as(on_diagonal).float()
    return ((1 - on_diagonal) * weights).sum() / weights.sum().clamp(min=1)
