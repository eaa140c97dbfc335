"""Next-token sampling for autoregressive decoding: temperature, top-k, top-p (nucleus) and VALL-E 2's
repetition-aware sampling (RAS, Chen et al. 2024, section 3.1).

Legend: b batch, v vocabulary, w history window.

Every function works on a whole batch of logits at once and draws randomness only from the ``generator``
it is given, so the same seed gives the same tokens. Temperature 0 means greedy (argmax) and draws
nothing.
"""

from __future__ import annotations

import torch


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keeps the ``k`` largest logits of each row ``(b, v)`` and sets the rest to ``-inf``; ``k <= 0`` or
    ``k >= v`` keeps everything. Ties at the k-th value are all kept."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter of ``(b, v)`` logits: keeps the smallest set of most likely tokens whose probability
    reaches ``p`` (always at least the most likely one); ``p >= 1`` keeps everything."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    # a token is dropped when the tokens before it already reach p
    drop_sorted = (probs.cumsum(-1) - probs) >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def draw(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One sample per row of ``probs (b, v)`` -> ``(b,)`` int64 (the exponential-race trick: argmax of
    ``p / E`` with ``E ~ Exp(1)`` is a draw from ``p``; one kernel, no sync)."""
    noise = torch.empty_like(probs).exponential_(generator=generator)
    return (probs / noise).argmax(-1)


def sample_next(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A token per row of ``logits (b, v)`` -> ``(b,)``: greedy at ``temperature <= 0``, else sampled from
    the temperature-scaled distribution restricted by ``top_k`` and ``top_p``."""
    if temperature <= 0:
        return logits.argmax(-1)
    scaled = top_p_filter(top_k_filter(logits / temperature, top_k), top_p)
    return draw(scaled.softmax(-1), generator)


def repetition_share(token: torch.Tensor, history: torch.Tensor, window: int) -> torch.Tensor:
    """Share of the last ``window`` history tokens equal to ``token``.

    Args:
        token: ``(b,)`` candidate tokens.
        history: ``(b, w)`` most recent tokens (``w <= window``; fewer at the start of decoding).
        window: The denominator, VALL-E 2's window size ``K``.

    Returns:
        ``(b,)`` float in [0, 1].
    """
    return (history[:, -window:] == token[:, None]).sum(-1).float() / window


def ras_next(
    logits: torch.Tensor,
    history: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    window: int = 10,
    threshold: float = 0.1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Repetition-aware sampling (VALL-E 2, section 3.1): nucleus-sample a token; where its share of the
    last ``window`` tokens exceeds ``threshold``, resample it from the full temperature distribution
    (no top-k/top-p), which breaks the loops nucleus sampling falls into.

    Args:
        logits: ``(b, v)`` next-token logits.
        history: ``(b, w)`` tokens decoded so far (any ``w``, may be 0).
        temperature, top_k, top_p: As in ``sample_next``; ``temperature <= 0`` is greedy without RAS.
        window, threshold: RAS window ``K`` and repetition threshold ``t_r``; ``window <= 0`` turns RAS off.
        generator: Source of randomness.

    Returns:
        ``(b,)`` int64 tokens.
    """
    token = sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
    if temperature <= 0 or window <= 0 or history.shape[1] == 0:
        return token
    repeated = repetition_share(token, history, window) > threshold
    # draw for every row (a fixed number of random draws per step keeps runs reproducible), keep where needed
    fallback = draw((logits / temperature).softmax(-1), generator)
    return torch.where(repeated, fallback, token)
