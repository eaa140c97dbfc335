import numpy as np
import pytest
import soundfile as sf

from speech.audio.io import AudioError, load_audio, save_audio


def test_load_resamples_and_downmixes(tmp_path):
    t = np.arange(22050) / 22050
    left, right = np.sin(2 * np.pi * 440 * t), np.zeros_like(t)
    sf.write(tmp_path / "st.wav", np.stack([left, right], 1).astype(np.float32), 22050)
    wav, sr = load_audio(tmp_path / "st.wav", sample_rate=16000)
    assert sr == 16000 and wav.ndim == 1 and abs(len(wav) - 16000) <= 1
    assert np.abs(wav).max() == pytest.approx(0.5, abs=0.02)  # mean of a full-scale and a silent channel


def test_load_span(tmp_path):
    sf.write(tmp_path / "a.wav", np.linspace(-1, 1, 16000, dtype=np.float32), 16000)
    wav, _ = load_audio(tmp_path / "a.wav", start=0.5, duration=0.25)
    assert len(wav) == 4000


def test_save_roundtrip(tmp_path):
    x = (0.5 * np.sin(np.arange(1600) / 5)).astype(np.float32)
    path = save_audio(tmp_path / "sub" / "x.wav", x, 16000)
    y, sr = load_audio(path)
    assert sr == 16000 and np.abs(x - y).max() < 1e-4
    assert sf.info(str(path)).subtype == "PCM_16"


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: None, "not found"),
        (lambda p: p.write_bytes(b"not audio at all"), "unreadable"),
        (lambda p: sf.write(p, np.zeros(0, np.float32), 16000), "no samples"),
    ],
)
def test_bad_audio_errors_name_the_file(tmp_path, make, match):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError, match=match) as err:
        load_audio(path)
    assert "bad.wav" in str(err.value)
