"""Clip clean-up: leading/trailing silence trimmed to a fixed margin, loudness normalized, peaks bounded."""

from __future__ import annotations

import numpy as np

FRAME_S = 0.01
SILENCE_FLOOR_DB = -60.0  # frames below this level are silence whatever the clip's loudest frame is


def frame_levels_db(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """RMS level of consecutive 10 ms frames in dBFS (the last partial frame included)."""
    hop = max(1, int(round(FRAME_S * sample_rate)))
    n = -(-wav.size // hop)
    padded = np.zeros(n * hop, dtype=np.float64)
    padded[: wav.size] = wav
    power = np.mean(padded.reshape(n, hop) ** 2, axis=1)
    return 10.0 * np.log10(power + 1e-12)


def trim_silence(wav: np.ndarray, sample_rate: int, *, margin: float, threshold_db: float) -> np.ndarray:
    """Cuts leading and trailing silence, keeping ``margin`` seconds before and after the speech.

    Args:
        wav: Mono audio, shape ``(t,)``.
        sample_rate: Its rate.
        margin: Seconds kept on each side of the first and last active frame.
        threshold_db: A frame is active when it is within this many dB of the loudest frame (and above
            -60 dBFS).

    Returns:
        The active part with exactly ``margin`` seconds before and after it (zeros are added where the
        clip has less); an empty array when nothing is active.
    """
    levels = frame_levels_db(wav, sample_rate)
    if levels.size == 0:
        return wav[:0]
    threshold = max(levels.max() - threshold_db, SILENCE_FLOOR_DB)
    active = np.flatnonzero(levels > threshold)
    if active.size == 0:
        return wav[:0]
    hop = int(round(FRAME_S * sample_rate))
    pad = int(round(margin * sample_rate))
    first, last = active[0] * hop, min(wav.size, (active[-1] + 1) * hop)
    start, end = max(0, first - pad), min(wav.size, last + pad)
    lead, trail = pad - (first - start), pad - (end - last)
    return np.concatenate([np.zeros(lead, wav.dtype), wav[start:end], np.zeros(trail, wav.dtype)])


def normalize_loudness(
    wav: np.ndarray, sample_rate: int, *, target_db: float, peak: float, gate_db: float = 40.0
) -> np.ndarray:
    """Scales ``wav`` so that its active frames have an RMS of ``target_db`` dBFS, peaks at most ``peak``.

    Active frames are those within ``gate_db`` of the loudest one, so pauses do not lower the measured
    level. Where reaching the target would push a sample past ``peak``, the gain stops there.
    """
    levels = frame_levels_db(wav, sample_rate)
    active = levels[levels > levels.max() - gate_db]
    level_db = 10.0 * np.log10(np.mean(10.0 ** (active / 10.0)) + 1e-12)
    gain = 10.0 ** ((target_db - level_db) / 20.0)
    top = float(np.max(np.abs(wav))) * gain
    if top > peak:
        gain *= peak / top
    return (wav * gain).astype(np.float32)
