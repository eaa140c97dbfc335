"""The model's waveform -> the audio a request asked for (Speech-02 ``audio_setting`` and ``vol``).

Volume is a gain (clipped to [-1, 1] when written), the sample rate is changed with soxr's streaming
resampler (so :class:`ChunkRenderer` renders streamed chunks into the same samples), ``channel=2`` puts the
mono signal on both channels, and the bytes are written by soundfile: ``wav`` (16-bit PCM), ``flac``
(16-bit), ``mp3`` (libsndfile >= 1.1) or ``pcm`` (headerless 16-bit little-endian, the Speech-02 format).

An mp3 ``bitrate`` (``BITRATES``) is written as constant bitrate, exactly that rate; which bitrates a sample
rate can carry depends on its MPEG version (``speech.inference.request.mp3_bitrates``, where the audio
settings and their rules live), e.g. 256 kbps needs 32 kHz or more. Without one, mp3 gets libsndfile's
default.

Where files go is checked before anything is generated (:func:`check_destination`, :func:`check_folder`):
a file's suffix must name its format, and its folder must take a new file. A failed write names the file
and leaves nothing under its name (``OutputError``).
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from speech.inference.request import (
    FORMATS,
    AudioSetting,
    VoiceSetting,
    mp3_bitrate_problem,
    mp3_kbps_range,
)

_SOUNDFILE = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "mp3": ("MP3", "MPEG_LAYER_III")}


class OutputError(ValueError):
    """An output path that cannot be written: a suffix that is not its format's, a folder that cannot take a
    file, or a write that failed (the message names the file)."""


def check_finite(wav: np.ndarray, consequence: str = "nothing is written") -> None:
    """Refuses audio with NaN or infinite samples, which a broken model makes (they would be written as
    full-scale clicks or zeros, and mp3 encoding aborts the process on them).

    Raises:
        ValueError: ``the audio holds NaN or infinite samples; <consequence>``.
    """
    if not np.isfinite(wav).all():
        raise ValueError(f"the audio holds NaN or infinite samples; {consequence}")


def silence(seconds: float, sample_rate: int) -> np.ndarray:
    """``round(seconds * sample_rate)`` zeros, float32."""
    return np.zeros(int(round(seconds * sample_rate)), dtype=np.float32)


def render(
    wav: np.ndarray, sample_rate: int, voice: VoiceSetting, audio: AudioSetting
) -> tuple[np.ndarray, int]:
    """Applies volume, output rate and channels to a whole waveform.

    Args:
        wav: ``(t,)`` mono float waveform from the model.
        sample_rate: Its rate.
        voice: ``volume`` is applied (speed and pitch are the synthesizer's).
        audio: ``sample_rate`` and ``channel``.

    Returns:
        ``(out, rate)``: ``(t',)`` for one channel or ``(t', 2)`` for two, float32.
    """
    renderer = ChunkRenderer(sample_rate, voice, audio)
    return renderer(wav, last=True), renderer.rate


class ChunkRenderer:
    """:func:`render` for a waveform that arrives in chunks (streaming); joined, the chunks it returns are
    :func:`render` 's output for the whole (soxr's streaming resampler keeps its state between chunks).

    Args:
        sample_rate: The model's rate.
        voice: ``volume`` is applied.
        audio: ``sample_rate`` and ``channel``.
    """

    def __init__(self, sample_rate: int, voice: VoiceSetting, audio: AudioSetting) -> None:
        self.rate = audio.sample_rate or sample_rate
        self.volume, self.channel = np.float32(voice.volume), audio.channel
        self._resampler = None
        if self.rate != sample_rate:
            self._resampler = soxr.ResampleStream(sample_rate, self.rate, 1, dtype="float32", quality="HQ")

    def __call__(self, wav: np.ndarray, last: bool = False) -> np.ndarray:
        """Mono chunk ``(t,)`` at the model's rate -> ``(t',)`` or ``(t', 2)`` float32 at ``self.rate``;
        ``last`` flushes the resampler."""
        out = np.asarray(wav, dtype=np.float32) * self.volume
        if self._resampler is not None:
            out = self._resampler.resample_chunk(out, last=last)
        if self.channel == 2:
            out = np.stack([out, out], axis=1)
        return np.ascontiguousarray(out, dtype=np.float32)


def _compression_level(bitrate: int, sample_rate: int) -> float:
    """libsndfile's compression level that writes constant-bitrate mp3 at ``bitrate`` bit/s.

    In constant-bitrate mode libsndfile maps a level c in [0, 1] to ``int(hi - c * (hi - lo))`` kbps of the
    rate's MPEG version (``mp3_kbps_range``). It truncates its kbps to an integer, so this aims half a kbps
    above the target. That also keeps the level below 1, which fails: soundfile sets the level while
    libsndfile is still in VBR mode, where 1 becomes LAME VBR quality 10, out of its range.
    """
    lo, hi = mp3_kbps_range(sample_rate)
    return max(0.0, (hi - (bitrate / 1000 + 0.5)) / (hi - lo))


def encode(wav: np.ndarray, sample_rate: int, fmt: str, bitrate: int | None = None) -> bytes:
    """Audio ``(t,)`` or ``(t, c)`` -> file bytes in ``fmt`` (``wav``, ``flac``, ``mp3`` or ``pcm``).

    Args:
        bitrate: mp3 only: constant bitrate in bit/s, one of ``request.mp3_bitrates(sample_rate)``;
            ``None``: libsndfile's default.

    Raises:
        ValueError: unknown ``fmt``, a ``bitrate`` for another format than mp3, or one the rate cannot carry;
            NaN or infinite samples (a broken model: they would be written as full-scale clicks or zeros).
    """
    check_finite(wav)
    if bitrate is not None and fmt != "mp3":
        raise ValueError(f"a bitrate applies to mp3 only, the format is {fmt!r}")
    clipped = np.clip(wav, -1.0, 1.0)
    if fmt == "pcm":
        return (clipped * 32767.0).round().astype("<i2").tobytes()
    if fmt not in _SOUNDFILE:
        raise ValueError(f"unknown audio format {fmt!r}; one of {['pcm', *_SOUNDFILE]}")
    container, subtype = _SOUNDFILE[fmt]
    options = {}
    if bitrate is not None:
        if problem := mp3_bitrate_problem(bitrate, sample_rate):
            raise ValueError(problem)
        options = {"compression_level": _compression_level(bitrate, sample_rate), "bitrate_mode": "CONSTANT"}
    buffer = io.BytesIO()
    sf.write(buffer, clipped, sample_rate, format=container, subtype=subtype, **options)
    return buffer.getvalue()


def write(path: str | Path, wav: np.ndarray, sample_rate: int, fmt: str, bitrate: int | None = None) -> Path:
    """Writes :func:`encode` 's bytes to ``path`` (parents created) through a temporary file, so an
    interrupted run never leaves a truncated file under the final name.

    Raises:
        ValueError: as :func:`encode` (nothing is written).
        OutputError: the file could not be written (a read-only folder, a full disk); the partial temporary
            file is removed.
    """
    path = Path(path)
    data = encode(wav, sample_rate, fmt, bitrate)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(
            f"could not write {path}: {err.strerror or err}; nothing is written under that name"
        ) from err
    return path


def check_destination(path: str | Path, fmt: str) -> Path:
    """Checks, before anything is generated, that a ``fmt`` file can be written at ``path``: its suffix
    names the format (``.wav``, ``.flac``, ``.mp3``, ``.pcm``, any case) and its folder takes a new file
    (:func:`check_folder`).

    Raises:
        OutputError: another or no suffix, or a folder that cannot be written; the message says what is
            allowed.
    """
    path = Path(path)
    if not path.name or path.is_dir():
        raise OutputError(f"{str(path)!r} is a folder, not a file name ending in .{fmt}")
    suffix = path.suffix.lstrip(".").lower()
    if suffix in FORMATS and suffix != fmt:
        raise OutputError(
            f"{path} ends in .{suffix} but audio.format={fmt}; set audio.format={suffix} or write to "
            f"{path.with_suffix('.' + fmt)}"
        )
    if suffix != fmt:
        got = f"ends in {path.suffix}" if path.suffix else "has no suffix"
        allowed = ", ".join(f".{f}" for f in FORMATS)
        raise OutputError(
            f"{path} {got}: the suffix must name the audio format, one of {allowed}; for audio.format={fmt} "
            f"write to {path.with_suffix('.' + fmt)}"
        )
    check_folder(path.parent)
    return path


def check_folder(folder: str | Path) -> Path:
    """Creates ``folder`` if needed and writes (and removes) a probe file in it, so that a read-only or
    unwritable folder is found before anything is generated.

    Raises:
        OutputError: the folder cannot be created or written; the message names it and the reason.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"the output folder {folder} is a file")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the output folder {folder}: {err.strerror or err}") from err
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write_check_"):
            pass
    except OSError as err:
        raise OutputError(
            f"cannot write to the output folder {folder}: {err.strerror or err}; choose another folder or "
            "make it writable"
        ) from err
    return folder
