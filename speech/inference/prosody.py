"""Speech-02 ``speed`` and ``pitch`` done with the model's own decoder plus one resampler.

Legend: b batch, f latent frames, d latent dim, t samples.

Speed changes the duration and keeps the pitch: the Flow-VAE latents are stretched in time (linear
interpolation, ``f -> round(f / speed)`` frames) before the decoder turns them into audio, so the decoder
renders the same voice over more or fewer frames (the way CosyVoice stretches its mel before the vocoder).

Pitch changes the pitch and keeps the duration: shifting by ``n`` semitones multiplies every frequency by
``r = 2 ** (n / 12)``. The latents are stretched by ``r`` as well, and the decoded audio is then resampled as
if it had been recorded at ``r`` times the model's rate, which plays it ``r`` times faster: pitch times ``r``,
length back to ``1 / speed``. Formants move with the pitch, as with any resampling pitch shifter
(``librosa.effects.pitch_shift`` included).

So one latent stretch by ``pitch_factor / speed`` and one resampler (:func:`shift_pitch`, or
:func:`pitch_stream` chunk by chunk when streaming) do both.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import soxr
import torch
import torch.nn.functional as F

from speech.tensors import pad_sequences


def pitch_factor(semitones: float) -> float:
    """Frequency ratio of a shift by ``semitones`` (12 per octave)."""
    return 2.0 ** (semitones / 12.0)


def stretch_factor(speed: float, semitones: float) -> float:
    """How much longer the latents are made: ``pitch_factor(semitones) / speed``."""
    return pitch_factor(semitones) / speed


def stretch_latents(
    latents: torch.Tensor, lens: torch.Tensor, factors: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stretches each row's valid frames in time by its factor (linear interpolation).

    Args:
        latents: ``(b, f, d)`` zero-padded latents.
        lens: ``(b,)`` valid frames per row.
        factors: ``b`` factors > 0; a row with factor 1 is copied unchanged.

    Returns:
        ``(latents (b, f', d), lens (b,))`` with ``lens[i] = round(lens[i] * factors[i])`` (at least 1 for a
        non-empty row), zero-padded, on the input's device and dtype.
    """
    if len(factors) != latents.shape[0]:
        raise ValueError(f"need one factor per row: {latents.shape[0]} rows, {len(factors)} factors")
    rows = []
    for row, n, factor in zip(latents, lens.tolist(), factors, strict=True):
        if factor <= 0:
            raise ValueError(f"stretch factors must be > 0, got {factor}")
        frames = row[:n]
        size = max(1, round(n * factor)) if n else 0
        if size != n and n:
            # interpolate over time: (f, d) -> (1, d, f) -> (1, d, size) -> (size, d)
            frames = F.interpolate(frames.T[None].float(), size=size, mode="linear", align_corners=False)
            frames = frames[0].T.to(latents.dtype)
        rows.append(frames)
    stretched, new_lens, _ = pad_sequences(rows)
    return stretched, new_lens


def shift_pitch(wav: np.ndarray, sample_rate: int, factor: float) -> np.ndarray:
    """Plays ``wav (t,)`` ``factor`` times faster at the same rate: pitch times ``factor``, ``t / factor``
    samples. ``factor == 1`` returns ``wav`` itself."""
    if factor == 1.0:
        return wav
    return soxr.resample(wav, sample_rate * factor, sample_rate, quality="HQ").astype(np.float32, copy=False)


def pitch_stream(sample_rate: int, factor: float) -> soxr.ResampleStream:
    """:func:`shift_pitch` for audio that arrives in chunks: ``resample_chunk(x, last=...)`` on each chunk
    gives, joined, the same samples as one call on the whole."""
    return soxr.ResampleStream(sample_rate * factor, sample_rate, 1, dtype="float32", quality="HQ")
