"""WORLD vocoder analysis and resynthesis, shared by the synthetic corpus (pseudo-speaker warps, emotive
renditions) and the F0 of prosody measurements (``speech.audio.prosody``).

WORLD splits speech into F0 (DIO + StoneMask: fast, and good enough on clean synthetic speech where
Harvest is 3-4x slower), a spectral envelope (CheapTrick) and aperiodicity (D4C), one frame every
``FRAME_PERIOD_MS``. Resynthesizing with a shorter frame period speaks faster: the same frames, played
closer together.

pyworld is in the ``corpus`` extra, so it is imported inside the functions and the core package does
not need it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from types import ModuleType

import numpy as np

FRAME_PERIOD_MS = 5.0


@dataclass(frozen=True)
class WorldFeatures:
    """One clip in WORLD's parameters (``f`` frames, ``k = fft_size // 2 + 1`` frequency bins).

    Attributes:
        f0: Fundamental frequency per frame in Hz, 0 where unvoiced; shape ``(f,)``.
        envelope: Power spectral envelope from 0 Hz to Nyquist; shape ``(f, k)``.
        aperiodicity: Aperiodic share of each bin in [0, 1] (1 = noise); shape ``(f, k)``.
        sample_rate: Rate of the analysed audio.
        frame_period_ms: Frame spacing of the analysis.
    """

    f0: np.ndarray
    envelope: np.ndarray
    aperiodicity: np.ndarray
    sample_rate: int
    frame_period_ms: float = FRAME_PERIOD_MS


def pyworld() -> ModuleType:
    """Imports pyworld (the ``corpus`` extra), silencing its ``pkg_resources`` deprecation warning."""
    with warnings.catch_warnings():  # pyworld imports the deprecated pkg_resources (setuptools < 81)
        warnings.simplefilter("ignore", UserWarning)
        import pyworld as pw

    return pw


def f0_contour(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """F0 of ``wav`` (float, shape ``(t,)``) per ``FRAME_PERIOD_MS`` frame in Hz, 0 where unvoiced.

    Returns:
        float64 array of shape ``(f,)``, ``f = t / (sample_rate * FRAME_PERIOD_MS / 1000) + 1``.
    """
    pw = pyworld()
    x = np.ascontiguousarray(wav, dtype=np.float64)
    f0, times = pw.dio(x, sample_rate, frame_period=FRAME_PERIOD_MS)
    return pw.stonemask(x, f0, times, sample_rate)


def analyze(wav: np.ndarray, sample_rate: int) -> WorldFeatures:
    """Splits ``wav`` (float, shape ``(t,)``) into WORLD's F0, spectral envelope and aperiodicity.

    Raises:
        ValueError, RuntimeError: WORLD cannot analyse the clip (e.g. too short); callers that render many
            clips catch these and skip the clip.
    """
    pw = pyworld()
    x = np.ascontiguousarray(wav, dtype=np.float64)
    f0, times = pw.dio(x, sample_rate, frame_period=FRAME_PERIOD_MS)
    f0 = pw.stonemask(x, f0, times, sample_rate)
    envelope = pw.cheaptrick(x, f0, times, sample_rate)
    aperiodicity = pw.d4c(x, f0, times, sample_rate)
    return WorldFeatures(f0, envelope, aperiodicity, sample_rate, FRAME_PERIOD_MS)


def synthesize(features: WorldFeatures, *, rate: float = 1.0) -> np.ndarray:
    """Resynthesizes audio from WORLD parameters.

    Args:
        features: The parameters, e.g. from :func:`analyze` with some of them changed
            (``dataclasses.replace``).
        rate: Speaking-rate factor (> 1 faster): the frame period is divided by it.

    Returns:
        float32 audio of shape ``(t',)`` with ``t' ~ frames * frame_period / rate`` samples.
    """
    pw = pyworld()
    y = pw.synthesize(
        np.ascontiguousarray(features.f0, dtype=np.float64),
        np.ascontiguousarray(features.envelope, dtype=np.float64),
        np.ascontiguousarray(features.aperiodicity, dtype=np.float64),
        features.sample_rate,
        features.frame_period_ms / rate,
    )
    return y.astype(np.float32)
