"""Pseudo-speakers from the WORLD vocoder: a base voice with its pitch, formants and rate changed.

After WORLD analysis (``speech.audio.world``: F0, spectral envelope, aperiodicity), a warp multiplies F0 by
``pitch``, stretches the envelope along frequency by ``formant`` (> 1 moves formants up, like a shorter
vocal tract) and resynthesizes with a frame period divided by ``rate`` (> 1 speaks faster).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from speech.audio import world
from speech.data.synthetic.config import WarpConfig


@dataclass(frozen=True)
class Warp:
    """Warp factors; all 1.0 is the base voice itself (no resynthesis)."""

    pitch: float = 1.0
    formant: float = 1.0
    rate: float = 1.0

    @property
    def is_identity(self) -> bool:
        return self.pitch == 1.0 and self.formant == 1.0 and self.rate == 1.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def sample_warp(rng: np.random.Generator, config: WarpConfig) -> Warp:
    """Draws a warp whose pitch and formant factors each move at least their ``min`` away from 1.

    Factors are rounded to 3 decimals so that they print and compare exactly.
    """

    def away_from_one(low: float, high: float) -> float:
        magnitude = rng.uniform(math.log(low), math.log(high))
        return round(math.exp(magnitude if rng.random() < 0.5 else -magnitude), 3)

    pitch = away_from_one(config.pitch_min, config.pitch_max)
    formant = away_from_one(config.formant_min, config.formant_max)
    rate = round(math.exp(rng.uniform(-math.log(config.rate_max), math.log(config.rate_max))), 3)
    return Warp(pitch=pitch, formant=formant, rate=rate)


def warp_distance(a: Warp, b: Warp, config: WarpConfig) -> float:
    """Distance in log-factor space with pitch and formant measured in units of their ``min`` step."""
    dp = (math.log(a.pitch) - math.log(b.pitch)) / math.log(config.pitch_min)
    df = (math.log(a.formant) - math.log(b.formant)) / math.log(config.formant_min)
    return math.hypot(dp, df)


def apply_warp(wav: np.ndarray, sample_rate: int, warp: Warp) -> np.ndarray:
    """Resynthesizes ``wav`` (float32, shape ``(t,)``) with WORLD and the warp's factors.

    Returns:
        float32 audio of shape ``(t',)`` with ``t' ~ t / warp.rate``; ``wav`` itself for the identity warp.
    """
    if warp.is_identity:
        return wav
    features = world.analyze(wav, sample_rate)
    warped = replace(
        features, f0=features.f0 * warp.pitch, envelope=stretch_envelope(features.envelope, warp.formant)
    )
    return world.synthesize(warped, rate=warp.rate)


def stretch_envelope(envelope: np.ndarray, factor: float) -> np.ndarray:
    """Moves spectral features up in frequency by ``factor``: ``out(f) = in(f / factor)``.

    Args:
        envelope: Power spectral envelope, shape ``(frames, bins)`` from 0 Hz to Nyquist.
        factor: Stretch factor; bins that would read above Nyquist repeat the last bin.
    """
    if factor == 1.0:
        return envelope
    bins = envelope.shape[1]
    source = np.minimum(np.arange(bins) / factor, bins - 1)
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, bins - 1)
    frac = source - low
    out = envelope[:, low] * (1.0 - frac) + envelope[:, high] * frac
    return np.ascontiguousarray(out)
