import librosa
import numpy as np
import pytest
import torch

from speech.audio.mel import LogMelSpectrogram


def test_frames_and_lengths():
    mel = LogMelSpectrogram(sample_rate=16000, hop_length=160, n_mels=80)
    feats, lens = mel(torch.randn(3, 16000), torch.tensor([16000, 8000, 1600]))
    assert feats.shape == (3, 100, 80)
    assert lens.tolist() == [100, 50, 10]


def test_padding_does_not_change_valid_frames():
    torch.manual_seed(0)
    mel = LogMelSpectrogram()
    x = torch.randn(2, 12000)
    batched, _ = mel(x, torch.tensor([12000, 7000]))
    alone, _ = mel(x[1:, :7000])
    assert torch.allclose(batched[1, :43], alone[0], atol=1e-5)
    assert torch.all(batched[1, 43:] == np.log(1e-5).astype(np.float32))


def test_matches_librosa_in_the_interior():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(16000).astype(np.float32) * 0.1
    mel = LogMelSpectrogram(sample_rate=16000, n_fft=1024, win_length=1024, hop_length=160, n_mels=80)
    ref = librosa.feature.melspectrogram(
        y=x, sr=16000, n_fft=1024, win_length=1024, hop_length=160, n_mels=80, power=1.0, center=True
    )
    ref = np.log(np.maximum(ref, 1e-5)).T
    # librosa centres frame i on sample i*hop, ours on i*hop + hop/2: delay the signal by half a hop.
    shifted = np.concatenate([np.zeros(80, np.float32), x])[:16000]
    ours_shifted, _ = mel(torch.from_numpy(shifted)[None])
    assert np.abs(ours_shifted[0, 10:90].numpy() - ref[10:90]).max() < 1e-3


def test_rejects_bad_shapes_and_settings():
    with pytest.raises(ValueError, match="win_length"):
        LogMelSpectrogram(n_fft=512, win_length=1024)
    with pytest.raises(ValueError, match=r"\(batch, samples\)"):
        LogMelSpectrogram()(torch.randn(16000))
