"""Codec reconstruction metrics: identity, monotonic degradation with noise, undefined cases as NaN."""

import math
import subprocess

import numpy as np
import pytest

from speech.audio.io import load_audio
from speech.metrics import codec
from speech.metrics.codec import align, codec_metrics, summarize
from speech.metrics.speaker.base import SpeakerEmbedder


class EnergyEmbedder(SpeakerEmbedder):
    """A stand-in embedder: band energies, so SIM is defined and cheap."""

    def embed(self, wav):
        spec = np.abs(np.fft.rfft(wav[:16000], n=512 * 8))
        return np.array([band.sum() for band in np.array_split(spec, 16)])


@pytest.fixture(scope="module")
def speech24k(tmp_path_factory):
    path = tmp_path_factory.mktemp("codec") / "slt.wav"
    text = "Please call Stella and ask her to bring these things with her from the store."
    subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(path)], check=True)
    return load_audio(path, sample_rate=24000)[0]  # a non-PESQ rate, to exercise resampling


def noisy(wav, snr_db, seed=0):
    noise = np.random.default_rng(seed).standard_normal(wav.size).astype(np.float32)
    scale = np.sqrt(np.mean(wav**2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    return (wav + scale * noise).astype(np.float32)


def test_identical_signals(speech24k):
    m = codec_metrics(speech24k, speech24k.copy(), 24000, embedder=EnergyEmbedder())
    assert m["mel_l1"] == 0 and m["stft_sc"] == 0 and m["stft_logmag"] == 0
    assert m["stoi"] == pytest.approx(1.0, abs=1e-6)
    assert m["pesq_wb"] > 4.5 and m["pesq_nb"] > 4.4  # P.862.2 tops out near 4.64, P.862 near 4.55
    assert m["sim"] == pytest.approx(1.0, abs=1e-6)


def test_noise_degrades_every_metric_monotonically(speech24k):
    emb = EnergyEmbedder()
    rows = [codec_metrics(speech24k, noisy(speech24k, snr), 24000, embedder=emb) for snr in (30, 15, 0)]
    for key in ("mel_l1", "stft_sc", "stft_logmag"):
        assert 0 < rows[0][key] < rows[1][key] < rows[2][key], key
    for key in ("stoi", "pesq_wb", "pesq_nb", "sim"):
        assert rows[0][key] > rows[1][key] > rows[2][key], key
    assert rows[2]["pesq_wb"] < 2.0 and rows[2]["stoi"] < 0.9


def test_lengths_are_trimmed_to_the_shorter(speech24k):
    longer = np.concatenate([speech24k, np.ones(777, np.float32)])
    assert codec_metrics(speech24k, longer, 24000)["mel_l1"] == 0
    ref, est = align(np.zeros((5, 1)), np.zeros(3))
    assert ref.shape == est.shape == (3,)
    with pytest.raises(ValueError, match="empty"):
        align(np.zeros(0), np.zeros(3))


def test_silence_gives_counted_nan_not_a_crash(speech24k):
    silence = np.zeros_like(speech24k)
    with pytest.warns(RuntimeWarning, match="PESQ"):
        m = codec_metrics(speech24k, silence, 24000)
    assert math.isnan(m["pesq_wb"]) and math.isnan(m["pesq_nb"])
    assert math.isfinite(m["mel_l1"]) and m["mel_l1"] > 1
    with pytest.warns(RuntimeWarning, match="STOI undefined for a digital-silence"):
        assert math.isnan(codec.stoi_score(silence, speech24k, 24000))
    short = speech24k[24000 : 24000 + 7200]  # 0.3 s: fewer than 30 STOI frames
    with pytest.warns(RuntimeWarning, match="STOI undefined: fewer than 30"):
        assert math.isnan(codec.stoi_score(short, short, 24000))
    good = codec_metrics(speech24k, noisy(speech24k, 20), 24000)
    s = summarize([good, m, {**good, "stoi": float("nan")}])
    assert s["pesq_wb"]["n"] == 2 and s["pesq_wb"]["n_nan"] == 1
    assert s["pesq_wb"]["mean"] == pytest.approx(good["pesq_wb"])
    assert s["stoi"]["n_nan"] == 1 and s["mel_l1"]["n_nan"] == 0
    assert math.isnan(summarize([{"x": float("nan")}])["x"]["mean"])


def test_pesq_refuses_too_short_input_with_nan():
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(1600) / 16000).astype(np.float32)  # 0.1 s
    with pytest.warns(RuntimeWarning, match="PESQ-wb failed"):
        assert math.isnan(codec.pesq_score(tone, tone, 16000, "wb"))
    with pytest.raises(ValueError, match="mode"):
        codec.pesq_score(tone, tone, 16000, "fb")


def test_distances_are_scale_aware_and_work_at_other_rates():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(8000).astype(np.float32) * 0.1
    assert codec.stft_distance(x, 0.5 * x)["stft_sc"] == pytest.approx(0.5, rel=1e-4)
    assert codec.stft_distance(x, 0.5 * x)["stft_logmag"] == pytest.approx(math.log(2), rel=1e-3)
    for sr in (8000, 22050, 44100):
        assert codec.mel_distance(x, x, sr) == 0 and codec.mel_distance(x, 0.5 * x, sr) > 0
