"""Uploaded audio -> mono float32 samples: libsndfile (wav, mp3, flac, ...), else FFmpeg through PyAV
(m4a/AAC, and whatever libsndfile cannot read). PyAV comes with the ``serve`` extra; without it, m4a is
refused with a message saying so. Decoding stops once the audio is longer than an upload may be, so a small
file that holds hours (a low-bitrate m4a) is refused without being decoded whole.
"""

from __future__ import annotations

import io
import itertools

import numpy as np
import soundfile as sf

from speech.serve.errors import ApiError

FFMPEG_ONLY = (".m4a",)  # libsndfile reads none of these: go to PyAV at once
OVER_SECONDS = 1.0  # decoding stops this far past max_seconds


class _TooLong(Exception):
    """Longer than the limit: ``seconds`` as the header tells, or ``None`` (decoding stopped)."""

    def __init__(self, seconds: float | None = None) -> None:
        super().__init__(seconds)
        self.seconds = seconds


def decode_audio(
    data: bytes, suffix: str, field: str, max_seconds: float | None = None
) -> tuple[np.ndarray, int]:
    """``(wav (t,) float32 mono, rate)`` of an audio file's bytes (channels averaged).

    Args:
        data: The file.
        suffix: Its name's suffix (``.m4a`` goes to PyAV without trying libsndfile).
        field: The request field named in errors.
        max_seconds: Refuse audio longer than this (by more than ``OVER_SECONDS``) without decoding it all.

    Raises:
        ApiError: 2013 naming ``field``: not decodable (with the decoder's reason), no samples, too long.
    """
    limit = None if max_seconds is None else max_seconds + OVER_SECONDS
    problems = []
    decoders = {"libsndfile": _libsndfile, "FFmpeg": _ffmpeg}
    if suffix.lower() in FFMPEG_ONLY:
        del decoders["libsndfile"]
    for name, decode in decoders.items():
        try:
            wav, rate = decode(data, limit)
            break
        except _TooLong as err:
            got = f"more than {limit:g} s" if err.seconds is None else f"{err.seconds:.2f} s"
            problem = f"must hold at most {max_seconds:g} s of audio, got {got}"
            raise ApiError.invalid(field, problem) from None
        except Exception as err:  # LibsndfileError, RuntimeError, av.FFmpegError, ImportError, ...
            problems.append(f"{name}: {err}")
    else:
        raise ApiError.invalid(field, f"not decodable audio ({'; '.join(problems)}); upload wav, mp3 or m4a")
    if wav.shape[0] == 0:
        raise ApiError.invalid(field, "holds no audio samples")
    return wav, rate


def _libsndfile(data: bytes, limit: float | None) -> tuple[np.ndarray, int]:
    with sf.SoundFile(io.BytesIO(data)) as f:
        if limit is not None and f.frames > limit * f.samplerate:
            raise _TooLong(f.frames / f.samplerate)
        wav = f.read(dtype="float32", always_2d=True)
        return wav.mean(axis=1), f.samplerate


def _ffmpeg(data: bytes, limit: float | None) -> tuple[np.ndarray, int]:
    try:
        import av
    except ImportError as err:
        raise ImportError("PyAV is not installed (pip install -e '.[serve]')") from err
    with av.open(io.BytesIO(data), mode="r") as container:
        if not container.streams.audio:
            raise ValueError("the file holds no audio stream")
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        resampler = av.AudioResampler(format="fltp", rate=rate)  # float planes, layout and rate kept
        pieces, samples = [], 0
        for frame in itertools.chain(container.decode(stream), [None]):  # None flushes the resampler
            for out in resampler.resample(frame):
                planes = out.to_ndarray()  # (channels, t)
                pieces.append(planes.mean(axis=0, dtype=np.float32))
                samples += planes.shape[1]
            if limit is not None and samples > limit * rate:
                raise _TooLong
    wav = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    return wav.astype(np.float32, copy=False), rate
