"""Percentile-bootstrap confidence intervals for test-set averages (seeded, numpy only).

Utterances are the resampling unit: each replicate draws ``n`` utterances with replacement and recomputes
the statistic, a mean (utterance-averaged WER, SIM) or a ratio of sums (corpus WER = errors / words).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95
# Replicates drawn per block, so that ``n_resamples x n`` indices never sit in memory at once.
_BLOCK = 256


@dataclass(frozen=True)
class ConfidenceInterval:
    """A point estimate with its bootstrap interval ``[low, high]`` at ``level``."""

    estimate: float
    low: float
    high: float
    level: float = DEFAULT_LEVEL

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _replicates(
    n: int, statistic: Callable[[np.ndarray], np.ndarray], *, n_resamples: int, seed: int
) -> np.ndarray:
    """``statistic(idx)`` for ``n_resamples`` index draws of shape ``(r, n)``, concatenated."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, n_resamples, _BLOCK):
        idx = rng.integers(0, n, size=(min(_BLOCK, n_resamples - start), n))
        out.append(statistic(idx))
    return np.concatenate(out)


def _interval(estimate: float, reps: np.ndarray, level: float) -> ConfidenceInterval:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if reps.size == 0:
        return ConfidenceInterval(float(estimate), float("nan"), float("nan"), level)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(reps, [alpha, 1.0 - alpha])
    return ConfidenceInterval(float(estimate), float(low), float(high), level)


def _nan(level: float) -> ConfidenceInterval:
    return ConfidenceInterval(float("nan"), float("nan"), float("nan"), level)


def bootstrap_mean_ci(
    values: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> ConfidenceInterval:
    """Percentile-bootstrap interval of the mean.

    Args:
        values: One value per utterance.
        n_resamples: Bootstrap replicates.
        level: Coverage of the interval.
        seed: Seed of the resampling; the same inputs and seed give the same interval.

    Returns:
        The sample mean and its interval; all NaN for no values, a zero-width interval for one value.
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        return _nan(level)
    reps = _replicates(x.size, lambda idx: x[idx].mean(axis=1), n_resamples=n_resamples, seed=seed)
    return _interval(x.mean(), reps, level)


def bootstrap_ratio_ci(
    numerators: Sequence[float] | np.ndarray,
    denominators: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> ConfidenceInterval:
    """Percentile-bootstrap interval of ``sum(numerators) / sum(denominators)``, resampling pairs.

    Used for corpus WER: numerators are per-utterance error counts, denominators reference word counts.

    Returns:
        The ratio and its interval; all NaN when there are no pairs or the denominators sum to zero.

    Raises:
        ValueError: the two sequences differ in length.
    """
    num = np.asarray(numerators, dtype=np.float64).reshape(-1)
    den = np.asarray(denominators, dtype=np.float64).reshape(-1)
    if num.shape != den.shape:
        raise ValueError(f"numerators and denominators differ in length: {num.size} vs {den.size}")
    if num.size == 0 or den.sum() == 0:
        return _nan(level)

    def ratio(idx: np.ndarray) -> np.ndarray:
        d = den[idx].sum(axis=1)
        return np.divide(num[idx].sum(axis=1), d, out=np.full(d.shape, np.nan), where=d > 0)

    reps = _replicates(num.size, ratio, n_resamples=n_resamples, seed=seed)
    return _interval(num.sum() / den.sum(), reps[~np.isnan(reps)], level)


def bootstrap_ratio_difference_ci(
    numerators_a: Sequence[float] | np.ndarray,
    denominators_a: Sequence[float] | np.ndarray,
    numerators_b: Sequence[float] | np.ndarray,
    denominators_b: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> ConfidenceInterval:
    """Paired percentile-bootstrap interval of ``sum(num_a) / sum(den_a) - sum(num_b) / sum(den_b)``: each
    replicate draws the same utterances for both ratios, so what the two share (an utterance's length, its
    common words) cancels.

    Used for words right above chance: ``a`` the words a transcript gets right against its own reference,
    ``b`` against other references.

    Returns:
        The difference and its interval; all NaN when there are no utterances or a denominator sums to zero.

    Raises:
        ValueError: the four sequences differ in length.
    """
    arrays = [np.asarray(x, dtype=np.float64).reshape(-1) for x in
              (numerators_a, denominators_a, numerators_b, denominators_b)]  # fmt: skip
    if len({a.size for a in arrays}) != 1:
        raise ValueError(f"the four sequences differ in length: {[a.size for a in arrays]}")
    num_a, den_a, num_b, den_b = arrays
    if num_a.size == 0 or den_a.sum() == 0 or den_b.sum() == 0:
        return _nan(level)

    def difference(idx: np.ndarray) -> np.ndarray:
        da, db = den_a[idx].sum(axis=1), den_b[idx].sum(axis=1)
        ok = (da > 0) & (db > 0)
        out = np.full(da.shape, np.nan)
        out[ok] = num_a[idx].sum(axis=1)[ok] / da[ok] - num_b[idx].sum(axis=1)[ok] / db[ok]
        return out

    reps = _replicates(num_a.size, difference, n_resamples=n_resamples, seed=seed)
    estimate = num_a.sum() / den_a.sum() - num_b.sum() / den_b.sum()
    return _interval(estimate, reps[~np.isnan(reps)], level)
