"""Vocos-style decoder and encoder: lengths, padding invariance, the [-1, 1] range, and they learn."""

import pytest
import torch

from speech.models.flow_vae import FlowVAE
from speech.modules.dac import DACEncoder
from speech.modules.vocos import VocosDecoder, VocosEncoder

pytestmark = pytest.mark.usefixtures("one_thread")
HOP = 320


def test_lengths_and_silence_past_each_row():
    torch.manual_seed(0)
    decoder = VocosDecoder(6, channels=32, layers=2, hop_length=HOP)
    audio = decoder(torch.randn(2, 6, 12), torch.tensor([12, 5]))
    assert audio.shape == (2, 1, 12 * HOP) and audio.abs().max() <= 1
    assert (
        torch.equal(audio[1, 0, 5 * HOP :], torch.zeros(7 * HOP)) and audio[1, 0, : 5 * HOP].abs().max() > 0
    )


def test_a_row_decodes_the_same_alone_and_padded_in_a_batch():
    torch.manual_seed(0)
    decoder = VocosDecoder(6, channels=32, layers=3, hop_length=HOP)
    z = torch.randn(2, 6, 40)
    batch = decoder(z, torch.tensor([40, 17]))
    alone = decoder(z[1:, :, :17], torch.tensor([17]))
    torch.testing.assert_close(batch[1, :, : 17 * HOP], alone[0], atol=1e-6, rtol=0)


def test_bad_sizes_are_refused_and_it_fits_the_flow_vae():
    with pytest.raises(ValueError, match=r"n_fft \(100\) must be at least hop_length \(320\)"):
        VocosDecoder(6, hop_length=HOP, n_fft=100)
    model = FlowVAE(DACEncoder(4, [2, 4, 5, 8], 12), VocosDecoder(6, channels=32, layers=2, hop_length=HOP))
    out = model(0.1 * torch.randn(2, 3200), torch.tensor([3200, 1600]))
    assert out.audio.shape == (2, 3200) and torch.isfinite(out.kl)


def test_it_learns_a_tone_from_a_constant_latent():
    # a 16-bin magnitude pattern is a direct output of the head: a few hundred steps fit a pure tone
    torch.manual_seed(0)
    decoder = VocosDecoder(4, channels=32, layers=2, hop_length=HOP)
    t = torch.arange(20 * HOP) / 16000
    target = 0.3 * torch.sin(2 * torch.pi * 250 * t)
    z, lens = torch.ones(1, 4, 20), torch.tensor([20])
    window = torch.hann_window(1024)

    def spectral_loss():
        est = torch.stft(decoder(z, lens)[0, 0], 1024, 256, window=window, return_complex=True).abs()
        ref = torch.stft(target, 1024, 256, window=window, return_complex=True).abs()
        return (torch.log(est + 0.01) - torch.log(ref + 0.01)).abs().mean()

    opt = torch.optim.Adam(decoder.parameters(), lr=3e-3)
    first = spectral_loss().item()
    for _ in range(150):
        loss = spectral_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_encoder_frames_and_padding_invariance():
    torch.manual_seed(0)
    encoder = VocosEncoder(8, channels=32, layers=2, hop_length=HOP)
    audio = 0.1 * torch.randn(2, 1, 30 * HOP)
    batch = encoder(audio, torch.tensor([30, 11]))
    assert batch.shape == (2, 8, 30) and torch.equal(batch[1, :, 11:], torch.zeros(8, 19))
    alone = encoder(audio[1:, :, : 11 * HOP], torch.tensor([11]))
    torch.testing.assert_close(batch[1:, :, :11], alone, atol=1e-5, rtol=0)


def test_encoder_sizes_are_checked_and_it_fits_the_flow_vae():
    with pytest.raises(ValueError, match=r"n_fft \(100\) must be at least hop_length \(320\)"):
        VocosEncoder(8, hop_length=HOP, n_fft=100)
    model = FlowVAE(VocosEncoder(12, channels=32, layers=2, hop_length=HOP),
                    VocosDecoder(6, channels=32, layers=2, hop_length=HOP))  # fmt: skip
    mu, log_sigma, lens = model.posterior(0.1 * torch.randn(2, 3200), torch.tensor([3200, 1600]))
    assert mu.shape == log_sigma.shape == (2, 10, 6) and lens.tolist() == [10, 5]


def test_encoder_learns_each_frames_loudness():
    # the STFT front passes gradients: a few hundred steps read each frame's log energy off the spectrum
    torch.manual_seed(0)
    encoder = VocosEncoder(1, channels=32, layers=1, hop_length=HOP)
    gains = torch.exp(torch.linspace(-4, 0, 16))[torch.randperm(16)]
    audio = (torch.randn(4, 16, HOP) * gains[None, :, None]).reshape(4, 1, 16 * HOP)
    target = torch.log(gains)[None].expand(4, -1)
    lens = torch.full((4,), 16)
    opt = torch.optim.Adam(encoder.parameters(), lr=3e-3)
    first = (encoder(audio, lens)[:, 0] - target).pow(2).mean().item()
    for _ in range(200):
        loss = (encoder(audio, lens)[:, 0] - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * first


def test_decoder_parameter_names_are_those_of_older_checkpoints():
    # checkpoints written before the encoder existed hold stem/norm_in/blocks/norm_out/head at the top
    names = {k.split(".")[0] for k in VocosDecoder(6, channels=32, layers=2, hop_length=HOP).state_dict()}
    assert names == {"stem", "norm_in", "blocks", "norm_out", "head"}
