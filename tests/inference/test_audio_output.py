"""Rendering and encoding the output audio: volume, sample rate, channels, wav/flac/pcm/mp3 bytes."""

import io

import numpy as np
import pytest
import soundfile as sf

from speech.inference import audio_output
from speech.inference.request import AudioSetting, VoiceSetting

SR = 16000


@pytest.fixture
def tone():
    t = np.arange(SR) / SR
    return (0.25 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_volume_sample_rate_and_channels(tone):
    out, rate = audio_output.render(tone, SR, VoiceSetting(volume=2.0), AudioSetting())
    assert rate == SR and out.shape == tone.shape
    np.testing.assert_allclose(out, 2 * tone, rtol=1e-6)
    out, rate = audio_output.render(tone, SR, VoiceSetting(), AudioSetting(sample_rate=8000, channel=2))
    assert rate == 8000 and out.shape == (8000, 2)
    np.testing.assert_array_equal(out[:, 0], out[:, 1])
    # The tone survives resampling: same RMS (it is far below the new Nyquist frequency).
    assert np.sqrt(np.mean(out[:, 0] ** 2)) == pytest.approx(0.25 / np.sqrt(2), rel=0.02)


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_wav_and_flac_round_trip(tone, fmt):
    data = audio_output.encode(tone, SR, fmt)
    wav, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert rate == SR and sf.info(io.BytesIO(data)).format == fmt.upper()
    np.testing.assert_allclose(wav, tone, atol=1 / 16384)


def test_pcm_is_headerless_int16_and_clipped(tone):
    loud = tone * 8  # peaks at 2.0: clipped to full scale
    data = audio_output.encode(loud, SR, "pcm")
    samples = np.frombuffer(data, dtype="<i2")
    assert samples.shape == tone.shape
    assert samples.max() == 32767 and samples.min() == -32767
    np.testing.assert_allclose(samples[:10] / 32767, np.clip(loud[:10], -1, 1), atol=1e-4)


def test_mp3_encodes(tone):
    data = audio_output.encode(tone, SR, "mp3")
    wav, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert rate == SR and abs(len(wav) - len(tone)) < 2000  # the codec adds encoder delay/padding
    assert np.sqrt(np.mean(wav**2)) == pytest.approx(0.25 / np.sqrt(2), rel=0.1)


def test_write_stereo_wav(tmp_path, tone):
    stereo = np.stack([tone, tone], axis=1)
    path = audio_output.write(tmp_path / "a" / "out.wav", stereo, SR, "wav")
    info = sf.info(path)
    assert info.channels == 2 and info.frames == SR and not (tmp_path / "a" / "out.wav.tmp").exists()


def test_silence_length():
    assert audio_output.silence(0.01, SR).shape == (160,) and not audio_output.silence(1.5, SR).any()
    assert audio_output.silence(99.99, 8000).shape == (799920,)
