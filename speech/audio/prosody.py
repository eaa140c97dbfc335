"""Prosody of a clip, and how an emotion moves it: median F0, duration and loudness, compared per utterance.

An emotion adapter should move these the way its training data does. For the same text and reference, a
rendition with the emotion is compared with one without: F0 and duration as ratios, loudness as a
difference in dB, then medians over utterances (robust to the odd clip where F0 tracking fails).
F0 comes from WORLD's DIO + StoneMask (``speech.audio.world``; ``pyworld``, the ``corpus`` extra).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

from speech.audio.world import f0_contour


class Prosody(NamedTuple):
    """One clip: median F0 of its voiced frames in Hz (NaN when none is voiced), length in seconds and RMS
    level in dBFS."""

    f0_hz: float
    seconds: float
    rms_db: float


def measure_prosody(wav: np.ndarray, sample_rate: int) -> Prosody:
    """The :class:`Prosody` of ``wav`` (float, shape ``(t,)``)."""
    f0 = f0_contour(wav, sample_rate)
    voiced = f0[f0 > 0]
    f0_hz = float(np.median(voiced)) if voiced.size else math.nan
    rms_db = 10.0 * math.log10(float(np.mean(np.square(wav, dtype=np.float64))) + 1e-12)
    return Prosody(f0_hz, wav.size / sample_rate, rms_db)


@dataclass(frozen=True)
class ProsodyShift:
    """``emotive`` against ``neutral`` of the same utterance: F0 and duration ratios (NaN F0 ratio when
    either has no voiced frame) and the loudness difference in dB."""

    f0_ratio: float
    duration_ratio: float
    loudness_db: float


def prosody_shift(emotive: Prosody, neutral: Prosody) -> ProsodyShift:
    f0_ratio = emotive.f0_hz / neutral.f0_hz if neutral.f0_hz > 0 else math.nan
    return ProsodyShift(f0_ratio, emotive.seconds / neutral.seconds, emotive.rms_db - neutral.rms_db)


def median_shift(shifts: list[ProsodyShift]) -> dict[str, float | int]:
    """``count`` and the median of each :class:`ProsodyShift` field over utterances (NaNs left out; NaN
    when nothing is left)."""
    out: dict[str, float | int] = {"count": len(shifts)}
    for name in ProsodyShift.__dataclass_fields__:
        values = [v for v in (asdict(s)[name] for s in shifts) if not math.isnan(v)]
        out[name] = statistics.median(values) if values else math.nan
    return out
