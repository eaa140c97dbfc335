"""The model's waveform -> the audio a request asked for (Speech-02 ``audio_setting`` and ``vol``).

Volume is a gain (clipped to [-1, 1] when written), the sample rate is changed with soxr
(``speech.audio.io.resample``), ``channel=2`` puts the mono signal on both channels, and the bytes are
written by soundfile: ``wav`` (16-bit PCM), ``flac`` (16-bit), ``mp3`` (libsndfile >= 1.1) or ``pcm``
(headerless 16-bit little-endian, the Speech-02 ``pcm`` format).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf

from speech.audio.io import resample
from speech.inference.request import AudioSetting, VoiceSetting

_SOUNDFILE = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "mp3": ("MP3", "MPEG_LAYER_III")}


def silence(seconds: float, sample_rate: int) -> np.ndarray:
    """``round(seconds * sample_rate)`` zeros, float32."""
    return np.zeros(int(round(seconds * sample_rate)), dtype=np.float32)


def render(
    wav: np.ndarray, sample_rate: int, voice: VoiceSetting, audio: AudioSetting
) -> tuple[np.ndarray, int]:
    """Applies volume, output rate and channels.

    Args:
        wav: ``(t,)`` mono float waveform from the model.
        sample_rate: Its rate.
        voice: ``volume`` is applied (the other voice options are checked elsewhere).
        audio: ``sample_rate`` and ``channel``.

    Returns:
        ``(out, rate)``: ``(t',)`` for one channel or ``(t', 2)`` for two, float32.
    """
    out = np.asarray(wav, dtype=np.float32) * np.float32(voice.volume)
    rate = audio.sample_rate or sample_rate
    out = resample(out, sample_rate, rate)
    if audio.channel == 2:
        out = np.stack([out, out], axis=1)
    return np.ascontiguousarray(out, dtype=np.float32), rate


def encode(wav: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """Audio ``(t,)`` or ``(t, c)`` -> file bytes in ``fmt`` (``wav``, ``flac``, ``mp3`` or ``pcm``)."""
    clipped = np.clip(wav, -1.0, 1.0)
    if fmt == "pcm":
        return (clipped * 32767.0).round().astype("<i2").tobytes()
    if fmt not in _SOUNDFILE:
        raise ValueError(f"unknown audio format {fmt!r}; one of {['pcm', *_SOUNDFILE]}")
    container, subtype = _SOUNDFILE[fmt]
    buffer = io.BytesIO()
    sf.write(buffer, clipped, sample_rate, format=container, subtype=subtype)
    return buffer.getvalue()


def write(path: str | Path, wav: np.ndarray, sample_rate: int, fmt: str) -> Path:
    """Writes :func:`encode` 's bytes to ``path`` (parents created) through a temporary file, so an
    interrupted run never leaves a truncated file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(encode(wav, sample_rate, fmt))
    tmp.replace(path)
    return path
