"""Speed and pitch: the latent stretch and the pitch resampler, checked on a toy sine "decoder"."""

import numpy as np
import pytest
import torch

from speech.inference import prosody

SR, HOP = 16000, 320


def sine_decoder(latents: torch.Tensor) -> np.ndarray:
    """A stand-in for the Flow-VAE decoder: each frame ``(d,)`` renders ``HOP`` samples of a sine at
    ``100 * latents[f, 0]`` Hz, phase carried across frames, as a vocoder keeps the voice's pitch."""
    freqs = np.repeat(100.0 * latents[:, 0].numpy(), HOP)
    return np.sin(2 * np.pi * np.cumsum(freqs) / SR).astype(np.float32)


def dominant_hz(wav: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    return float(np.argmax(spectrum) * SR / len(wav))


def test_pitch_factor_is_twelve_tone():
    assert prosody.pitch_factor(12) == 2.0 and prosody.pitch_factor(-12) == 0.5
    assert prosody.pitch_factor(7) == pytest.approx(1.4983, abs=1e-4)
    assert prosody.stretch_factor(2.0, 12) == 1.0 and prosody.stretch_factor(0.5, 0) == 2.0


def test_stretch_lengths_and_untouched_rows():
    latents = torch.randn(3, 10, 4)
    lens = torch.tensor([10, 6, 7])
    out, out_lens = prosody.stretch_latents(latents, lens, [2.0, 0.5, 1.0])
    assert out_lens.tolist() == [20, 3, 7] and out.shape == (3, 20, 4)
    torch.testing.assert_close(out[2, :7], latents[2, :7])  # factor 1: the same frames
    assert (out[1, 3:] == 0).all() and (out[2, 7:] == 0).all()  # zero past each row's end
    # A constant row stays that constant, whatever the factor (interpolation, not extrapolation).
    flat = torch.ones(1, 5, 2) * 3
    stretched, _ = prosody.stretch_latents(flat, torch.tensor([5]), [1.7])
    torch.testing.assert_close(stretched[0, :8], torch.full((8, 2), 3.0))


def test_stretch_errors():
    with pytest.raises(ValueError, match="one factor per row: 2 rows, 1 factors"):
        prosody.stretch_latents(torch.zeros(2, 3, 4), torch.tensor([3, 3]), [1.0])
    with pytest.raises(ValueError, match="factors must be > 0"):
        prosody.stretch_latents(torch.zeros(1, 3, 4), torch.tensor([3]), [0.0])


@pytest.mark.parametrize(("speed", "semitones"), [(1.0, 12), (1.0, -7), (2.0, 0), (0.5, 5), (1.5, -12)])
def test_speed_and_pitch_on_a_sine_decoder(speed, semitones):
    frames = 50  # 1 s at 50 frames/s
    latents = torch.full((1, frames, 4), 2.0)  # 200 Hz
    stretched, lens = prosody.stretch_latents(
        latents, torch.tensor([frames]), [prosody.stretch_factor(speed, semitones)]
    )
    wav = prosody.shift_pitch(sine_decoder(stretched[0, : int(lens[0])]), SR, prosody.pitch_factor(semitones))
    assert len(wav) == pytest.approx(SR / speed, abs=HOP)  # duration follows speed only
    assert dominant_hz(wav) == pytest.approx(200 * prosody.pitch_factor(semitones), rel=0.03)


def test_pitch_stream_joins_into_the_whole():
    wav = np.random.default_rng(0).standard_normal(SR).astype(np.float32)
    whole = prosody.shift_pitch(wav, SR, prosody.pitch_factor(3))
    stream = prosody.pitch_stream(SR, prosody.pitch_factor(3))
    pieces = [stream.resample_chunk(wav[i : i + 3000], last=i + 3000 >= SR) for i in range(0, SR, 3000)]
    np.testing.assert_allclose(np.concatenate(pieces), whole, atol=1e-5)
    assert prosody.shift_pitch(wav, SR, 1.0) is wav
