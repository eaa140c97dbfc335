"""GAN discriminators for waveform decoders and their losses.

- Multi-period (HiFi-GAN MPD): the waveform folded into ``(t / p, p)`` images, 2-D convs along time.
- Multi-resolution STFT (UnivNet / DAC style): 2-D convs over log-magnitude spectrograms.

Each sub-discriminator returns its logits and the feature maps after every layer (feature matching).

Legend: b batch, t samples, p period, c channels, n frames, k frequency bins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

LEAKY_SLOPE = 0.1
MPD_KERNEL, MPD_STRIDE = 5, 3
STFT_KERNEL, STFT_STRIDE = (3, 9), (1, 2)
LOG_EPS = 1e-5


class DiscriminatorOutput(NamedTuple):
    logits: list[torch.Tensor]  # one score map per sub-discriminator
    features: list[list[torch.Tensor]]  # per sub-discriminator, the activations of every layer


def _run_convs(
    convs: nn.ModuleList, out: nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Leaky-ReLU conv stack then the output conv; returns flattened logits and every layer's feature map."""
    features = []
    for conv in convs:
        x = F.leaky_relu(conv(x), LEAKY_SLOPE)
        features.append(x)
    x = out(x)
    features.append(x)
    return x.flatten(1), features


class PeriodDiscriminator(nn.Module):
    """One MPD branch: the waveform reshaped to ``(t / p, p)``, strided convs over the time axis."""

    def __init__(self, period: int, channels: Sequence[int]) -> None:
        super().__init__()
        self.period = period
        widths = [1, *channels]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(c_in, c_out, (MPD_KERNEL, 1), (MPD_STRIDE, 1), (MPD_KERNEL // 2, 0)))
            for c_in, c_out in zip(widths[:-1], widths[1:], strict=True)
        )
        self.out = weight_norm(nn.Conv2d(widths[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(b, t) -> (logits (b, n), features)``."""
        pad = (-audio.shape[-1]) % self.period
        x = F.pad(audio, (0, pad), mode="reflect" if pad < audio.shape[-1] else "constant")
        x = rearrange(x, "b (n p) -> b 1 n p", p=self.period)
        return _run_convs(self.convs, self.out, x)


class STFTDiscriminator(nn.Module):
    """One resolution: log-magnitude STFT as a ``(frames, bins)`` image, convs strided along frequency."""

    def __init__(self, n_fft: int, hop_length: int, channels: int, layers: int) -> None:
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        pad = (STFT_KERNEL[0] // 2, STFT_KERNEL[1] // 2)
        widths = [1] + [channels] * layers
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(c_in, c_out, STFT_KERNEL, STFT_STRIDE, pad))
            for c_in, c_out in zip(widths[:-1], widths[1:], strict=True)
        )
        self.out = weight_norm(nn.Conv2d(widths[-1], 1, (3, 3), padding=(1, 1)))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(b, t) -> (logits (b, n * k'), features)``."""
        spec = torch.stft(audio.float(), self.n_fft, self.hop_length, window=self.window,
                          return_complex=True)  # fmt: skip
        x = rearrange(torch.log(spec.abs() + LOG_EPS), "b k n -> b 1 n k")
        return _run_convs(self.convs, self.out, x)


class CombinedDiscriminator(nn.Module):
    """Multi-period + multi-resolution STFT discriminators applied to the same waveforms.

    Args:
        periods: MPD periods (HiFi-GAN: ``[2, 3, 5, 7, 11]``); empty for none.
        period_channels: Conv widths of every MPD branch.
        fft_sizes: STFT sizes of the spectral discriminators (hop = n_fft / 4); empty for none.
        stft_channels: Conv width of every spectral discriminator.
        stft_layers: Strided conv layers of every spectral discriminator.
    """

    def __init__(
        self,
        periods: Sequence[int] = (2, 3, 5, 7, 11),
        period_channels: Sequence[int] = (32, 128, 256, 256),
        fft_sizes: Sequence[int] = (512, 1024, 2048),
        stft_channels: int = 32,
        stft_layers: int = 4,
    ) -> None:
        super().__init__()
        if not periods and not fft_sizes:
            raise ValueError("CombinedDiscriminator needs at least one period or one fft size")
        subs: list[nn.Module] = [PeriodDiscriminator(int(p), list(period_channels)) for p in periods]
        subs += [STFTDiscriminator(int(n), int(n) // 4, stft_channels, stft_layers) for n in fft_sizes]
        self.discriminators = nn.ModuleList(subs)

    def forward(self, audio: torch.Tensor) -> DiscriminatorOutput:
        """Scores waveforms ``(b, t)``."""
        logits, features = [], []
        for disc in self.discriminators:
            score, feats = disc(audio)
            logits.append(score)
            features.append(feats)
        return DiscriminatorOutput(logits, features)


def discriminator_loss(real: list[torch.Tensor], fake: list[torch.Tensor], kind: str) -> torch.Tensor:
    """Discriminator loss summed over sub-discriminators: ``"lsgan"`` (real 1, fake 0) or ``"hinge"``."""
    if kind == "lsgan":
        terms = [(1 - r).pow(2).mean() + f.pow(2).mean() for r, f in zip(real, fake, strict=True)]
    elif kind == "hinge":
        terms = [F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real, fake, strict=True)]
    else:
        raise ValueError(f"unknown adversarial loss {kind!r}: use 'lsgan' or 'hinge'")
    return torch.stack(terms).sum()


def generator_loss(fake: list[torch.Tensor], kind: str) -> torch.Tensor:
    """Generator adversarial loss summed over sub-discriminators (``"lsgan"`` or ``"hinge"``)."""
    if kind == "lsgan":
        terms = [(1 - f).pow(2).mean() for f in fake]
    elif kind == "hinge":
        terms = [(-f).mean() for f in fake]
    else:
        raise ValueError(f"unknown adversarial loss {kind!r}: use 'lsgan' or 'hinge'")
    return torch.stack(terms).sum()


def feature_matching_loss(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """Mean L1 between real (detached) and fake feature maps, averaged over layers, summed over
    sub-discriminators."""
    terms = [
        torch.stack([F.l1_loss(f, r.detach()) for r, f in zip(rs, fs, strict=True)]).mean()
        for rs, fs in zip(real, fake, strict=True)
    ]
    return torch.stack(terms).sum()
