"""Reconstruction metrics between an original waveform and its resynthesis (codec, Flow-VAE, vocoder).

All functions take mono float arrays at one known sample rate and first trim both to the shorter length
(a decoder may return a few samples more or less). Lower is better for the distances, higher for STOI,
PESQ and speaker similarity.

- ``mel_l1``: mean absolute difference of natural-log mel spectrograms (``LogMelSpectrogram``, 80 bins,
  10 ms hop, 40 ms window, magnitudes floored at 1e-5).
- ``stft_sc`` / ``stft_logmag``: multi-resolution STFT distance, averaged over ``STFT_RESOLUTIONS``
  (Hann window of ``n_fft``, zero-padded centred frames): spectral convergence
  ``|| |S| - |S'| ||_F / || |S| ||_F`` and mean ``| log|S| - log|S'| |`` (magnitudes floored at 1e-5), as in
  Parallel WaveGAN's loss (Yamamoto et al., 2020) but measured, not trained.
- ``stoi``: pystoi's STOI; pystoi resamples to its 10 kHz itself (Octave-compatible polyphase filter).
  NaN when the reference is digital silence or fewer than 30 non-silent frames (~0.4 s) remain (pystoi
  would return 0 or 1e-5).
- ``pesq_wb`` / ``pesq_nb``: ITU-T P.862.2 wide-band at 16 kHz and P.862 narrow-band at 8 kHz (MOS-LQO,
  the ``pesq`` package), after soxr resampling. NaN, with a warning, when PESQ refuses the input (silence,
  shorter than ~0.25 s).
- ``sim``: cosine of speaker embeddings at 16 kHz, when an embedder is given.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from speech.audio.io import resample
from speech.audio.mel import LogMelSpectrogram
from speech.metrics.speaker.base import SIM_SAMPLE_RATE, SpeakerEmbedder

STFT_RESOLUTIONS: tuple[tuple[int, int], ...] = ((512, 128), (1024, 256), (2048, 512))  # (n_fft, hop)
MAG_FLOOR = 1e-5
PESQ_RATES = {"wb": 16000, "nb": 8000}


def align(ref: np.ndarray, est: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flattens both signals to float32 ``(t,)`` and trims them to the shorter length."""
    ref = np.asarray(ref, dtype=np.float32).reshape(-1)
    est = np.asarray(est, dtype=np.float32).reshape(-1)
    n = min(ref.size, est.size)
    if n == 0:
        raise ValueError(f"empty signal (reference {ref.size} samples, estimate {est.size} samples)")
    return ref[:n], est[:n]


def _undefined(why: str) -> float:
    """Warns (pointing at the caller of the metric function) and returns NaN."""
    warnings.warn(f"{why}; returning NaN", RuntimeWarning, stacklevel=3)
    return float("nan")


def _mel_for(sample_rate: int) -> LogMelSpectrogram:
    """10 ms hop (kept even, as ``LogMelSpectrogram`` pads symmetrically), 40 ms Hann window, 80 bins."""
    hop = 2 * round(sample_rate / 200)
    win = round(0.04 * sample_rate)
    n_fft = 1 << math.ceil(math.log2(win))
    return LogMelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, win_length=win, hop_length=hop, n_mels=80)


def mel_distance(ref: np.ndarray, est: np.ndarray, sample_rate: int) -> float:
    """Mean absolute log-mel difference (nats)."""
    ref, est = align(ref, est)
    mel = _mel_for(sample_rate)
    with torch.no_grad():
        feats, _ = mel(torch.from_numpy(np.stack([ref, est])))
    return float((feats[0] - feats[1]).abs().mean())


def stft_distance(
    ref: np.ndarray, est: np.ndarray, resolutions: Sequence[tuple[int, int]] = STFT_RESOLUTIONS
) -> dict[str, float]:
    """Multi-resolution STFT distance: ``{"stft_sc", "stft_logmag"}``, each averaged over resolutions."""
    ref, est = align(ref, est)
    x = torch.from_numpy(np.stack([ref, est]))
    sc, logmag = [], []
    for n_fft, hop in resolutions:
        spec = torch.stft(
            x, n_fft, hop_length=hop, window=torch.hann_window(n_fft), center=True, pad_mode="constant",
            return_complex=True,
        ).abs()  # fmt: skip
        diff = torch.linalg.norm(spec[0] - spec[1]) / torch.linalg.norm(spec[0]).clamp(min=MAG_FLOOR)
        sc.append(float(diff))
        log = spec.clamp(min=MAG_FLOOR).log()
        logmag.append(float((log[0] - log[1]).abs().mean()))
    return {"stft_sc": float(np.mean(sc)), "stft_logmag": float(np.mean(logmag))}


def stoi_score(ref: np.ndarray, est: np.ndarray, sample_rate: int, *, extended: bool = False) -> float:
    """STOI (or extended STOI), about [0, 1]; NaN with a warning for a silent or too short reference."""
    from pystoi import stoi

    ref, est = align(ref, est)
    if not np.any(ref):  # pystoi would report 0 for a digital-silence reference
        return _undefined("STOI undefined for a digital-silence reference")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score = float(stoi(ref.astype(np.float64), est.astype(np.float64), sample_rate, extended=extended))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        return _undefined("STOI undefined: fewer than 30 non-silent frames")
    return score


def pesq_score(ref: np.ndarray, est: np.ndarray, sample_rate: int, mode: str = "wb") -> float:
    """PESQ MOS-LQO in ``mode`` ``"wb"`` (16 kHz) or ``"nb"`` (8 kHz); NaN with a warning where undefined."""
    from pesq import PesqError, pesq

    if mode not in PESQ_RATES:
        raise ValueError(f"PESQ mode must be one of {sorted(PESQ_RATES)}, got {mode!r}")
    rate = PESQ_RATES[mode]
    ref, est = align(ref, est)
    ref, est = resample(ref, sample_rate, rate), resample(est, sample_rate, rate)
    if not (np.any(ref) and np.any(est)):
        # pesq divides by the peak: digital silence would become NaNs rather than its own error.
        return _undefined(f"PESQ-{mode} undefined for digital silence")
    try:
        return float(pesq(rate, ref, est, mode))
    except PesqError as err:
        return _undefined(f"PESQ-{mode} failed ({type(err).__name__}: {err})")


def codec_metrics(
    ref: np.ndarray, est: np.ndarray, sample_rate: int, embedder: SpeakerEmbedder | None = None
) -> dict[str, float]:
    """All reconstruction metrics for one pair.

    Args:
        ref: Original waveform ``(t,)``.
        est: Resynthesized waveform ``(t',)``; both are trimmed to ``min(t, t')``.
        sample_rate: Rate of both signals in Hz.
        embedder: Adds ``sim`` (speaker cosine at 16 kHz) when given.

    Returns:
        ``mel_l1``, ``stft_sc``, ``stft_logmag``, ``stoi``, ``pesq_wb``, ``pesq_nb`` (and ``sim``) as floats;
        NaN marks a metric that is undefined for this input.
    """
    ref, est = align(ref, est)
    out = {"mel_l1": mel_distance(ref, est, sample_rate), **stft_distance(ref, est)}
    out["stoi"] = stoi_score(ref, est, sample_rate)
    for mode in PESQ_RATES:
        out[f"pesq_{mode}"] = pesq_score(ref, est, sample_rate, mode)
    if embedder is not None:
        a, b = resample(ref, sample_rate, SIM_SAMPLE_RATE), resample(est, sample_rate, SIM_SAMPLE_RATE)
        out["sim"] = embedder.similarity(a, b)
    return out


def summarize(rows: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per-metric mean and std over the finite values, with counts.

    Returns:
        ``{metric: {"mean", "std", "n", "n_nan"}}``, where ``n`` counts finite values and ``n_nan`` the
        undefined ones (NaN, inf or absent in a row); ``mean``/``std`` are NaN when ``n == 0``.
    """
    names = sorted({k for row in rows for k in row})
    summary = {}
    for name in names:
        values = np.array([row.get(name, np.nan) for row in rows], dtype=np.float64)
        finite = values[np.isfinite(values)]
        summary[name] = {
            "mean": float(finite.mean()) if finite.size else float("nan"),
            "std": float(finite.std()) if finite.size else float("nan"),
            "n": int(finite.size),
            "n_nan": int(values.size - finite.size),
        }
    return summary
