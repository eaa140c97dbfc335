"""Reading and writing audio: soundfile for I/O, soxr for resampling, mean for downmixing.

torchaudio is deliberately not used: no torchaudio build matches a CPU-only torch from PyPI and its
I/O layer is deprecated upstream.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr


class AudioError(ValueError):
    """Audio that cannot be used; the message names the file and what is wrong."""


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resamples ``wav`` of shape ``(t,)`` or ``(t, c)`` with soxr's high-quality filter."""
    if orig_sr == target_sr:
        return wav
    return soxr.resample(wav, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def load_audio(
    path: str | Path,
    *,
    sample_rate: int | None = None,
    start: float = 0.0,
    duration: float | None = None,
) -> tuple[np.ndarray, int]:
    """Loads mono float32 audio.

    Args:
        path: Any file libsndfile reads (wav, flac, ogg, mp3 with libsndfile >= 1.1).
        sample_rate: Resample to this rate; ``None`` keeps the file's rate.
        start: Offset in seconds.
        duration: Seconds to read from ``start``; ``None`` reads to the end.

    Returns:
        ``(wav, sr)`` with ``wav`` of shape ``(t,)``; multi-channel files are averaged to mono.

    Raises:
        AudioError: the file is missing, unreadable or holds no samples in the requested span.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    try:
        info = sf.info(str(path))
        first = int(round(start * info.samplerate))
        frames = -1 if duration is None else int(round(duration * info.samplerate))
        wav, sr = sf.read(str(path), start=first, frames=frames, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise AudioError(f"{path}: unreadable audio ({err})") from err
    if wav.shape[0] == 0:
        raise AudioError(f"{path}: no samples (empty file or span past its end)")
    wav = wav.mean(axis=1) if wav.shape[1] > 1 else wav[:, 0]
    if sample_rate is not None and sample_rate != sr:
        wav, sr = resample(wav, sr, sample_rate), sample_rate
    return np.ascontiguousarray(wav, dtype=np.float32), sr


def save_audio(path: str | Path, wav: np.ndarray, sample_rate: int) -> Path:
    """Writes mono audio of shape ``(t,)``; 16-bit PCM for wav, the format's default otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    subtype = "PCM_16" if path.suffix.lower() == ".wav" else None
    sf.write(str(path), np.clip(wav, -1.0, 1.0), sample_rate, subtype=subtype)
    return path
