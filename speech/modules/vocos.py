"""Vocos-style Flow-VAE decoder and encoder: ConvNeXt blocks at the latent frame rate, with an inverse STFT
after the decoder and an STFT before the encoder.

Siuzdenko et al. 2023 (Vocos) predict each frame's STFT magnitude and phase and let an inverse STFT make
the samples, instead of learning the upsampling to the audio rate with transposed convolutions (DAC,
HiFi-GAN). Every layer runs at the frame rate (50 Hz here instead of 16 kHz for DAC's last blocks), so a
step is cheap, and the spectral envelope that intelligibility rests on is a direct output rather than
something the upsampling stack must discover. On the tiny corpus the DAC decoder still produced a blurred,
harmonic-free spectrogram after 2,000 CPU steps (docs/flow_vae.md), which is what this decoder is for.

The encoder is the decoder's mirror: a log-magnitude STFT with the latent hop, then ConvNeXt blocks. DAC's
encoder runs its first blocks at the audio rate with few channels, which a CPU does slowly: on the tiny
Flow-VAE it was three quarters of a training step (docs/flow_vae.md). Here every layer runs at the frame
rate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from speech.modules.dac import lengths_mask

MAX_LOG_MAGNITUDE = 4.6  # exp(4.6) ~ 100: Vocos's clip of the predicted magnitude


class ConvNeXtBlock(nn.Module):
    """Depthwise convolution over frames, LayerNorm, pointwise MLP, layer-scaled residual.

    Args:
        dim: Channels.
        hidden: MLP width.
        kernel_size: Depthwise kernel over frames (odd).
        layer_scale: Initial scale of the residual branch.
    """

    def __init__(self, dim: int, hidden: int, kernel_size: int = 7, layer_scale: float = 0.1) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(b, c, f)``, mask ``(b, 1, f)`` -> ``(b, c, f)``, zero on padded frames."""
        y = self.dwconv(x * mask).transpose(1, 2)
        y = self.gamma * self.mlp(self.norm(y))
        return (x + y.transpose(1, 2)) * mask


class ConvNeXtStack(nn.Module):
    """What the Vocos-style encoder and decoder share: the sizes of their STFT and a body at the frame rate
    (stem convolution, LayerNorm, ConvNeXt blocks, final LayerNorm). A base class, so that the decoder's
    parameter names stayed as they were before the encoder existed.

    Args:
        in_channels: Input features per frame; ``None``: the STFT's bins (``n_fft // 2 + 1``).
        channels: Width of the blocks.
        layers: Number of blocks.
        hop_length: Samples per frame.
        n_fft: FFT and window size (``4 * hop_length`` by default: 75 % overlap).
        hidden: MLP width of the blocks (``3 * channels`` by default).
        kernel_size: Stem and depthwise kernel over frames.
    """

    def __init__(
        self,
        in_channels: int | None,
        channels: int,
        layers: int,
        hop_length: int,
        n_fft: int | None,
        hidden: int | None,
        kernel_size: int,
    ) -> None:
        super().__init__()
        self.hop_length, self.n_fft = hop_length, n_fft or 4 * hop_length
        if self.n_fft < hop_length:
            raise ValueError(f"n_fft ({self.n_fft}) must be at least hop_length ({hop_length})")
        self.bins = self.n_fft // 2 + 1
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        self.stem = nn.Conv1d(in_channels or self.bins, channels, kernel_size, padding=kernel_size // 2)
        self.norm_in = nn.LayerNorm(channels)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(channels, hidden or 3 * channels, kernel_size, layer_scale=1.0 / layers)
            for _ in range(layers)
        )
        self.norm_out = nn.LayerNorm(channels)

    def body(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(b, in_channels, f)``, mask ``(b, 1, f)`` -> ``(b, f, channels)`` (channels last, for a head)."""
        x = self.stem(x * mask)
        x = self.norm_in(x.transpose(1, 2)).transpose(1, 2) * mask
        for block in self.blocks:
            x = block(x, mask)
        return self.norm_out(x.transpose(1, 2))


class VocosEncoder(ConvNeXtStack):
    """Waveform -> ``out_channels`` features per ``hop_length`` samples: log-magnitude STFT, ConvNeXt blocks.

    Args:
        out_channels: Output features (``2 * latent_dim`` for a Gaussian posterior).
        channels: Width of the ConvNeXt blocks.
        layers: Number of blocks.
        hop_length: Samples per output frame.
        n_fft: FFT and window size (``4 * hop_length`` by default).
        hidden: MLP width of the blocks (``3 * channels`` by default).
        kernel_size: Stem and depthwise kernel over frames.
    """

    def __init__(
        self,
        out_channels: int,
        channels: int = 128,
        layers: int = 4,
        hop_length: int = 320,
        n_fft: int | None = None,
        hidden: int | None = None,
        kernel_size: int = 7,
    ) -> None:
        super().__init__(None, channels, layers, hop_length, n_fft, hidden, kernel_size)
        self.out_channels = out_channels
        self.head = nn.Linear(channels, out_channels)

    def forward(self, audio: torch.Tensor, frame_lens: torch.Tensor) -> torch.Tensor:
        """``audio (b, 1, t)``, ``t = f * hop_length``, and ``frame_lens (b,)`` valid frames -> ``(b,
        out_channels, f)``, zero past ``frame_lens`` (the contract of ``DACEncoder.forward``)."""
        frames = audio.shape[-1] // self.hop_length
        x = audio[:, 0].float() * lengths_mask(frame_lens * self.hop_length, audio.shape[-1])[:, 0]
        # zero padding at both ends: a row's frames are the same alone or padded in a batch
        spectrum = torch.stft(x, self.n_fft, self.hop_length, self.n_fft, self.window.float(), center=True,
                              pad_mode="constant", return_complex=True)[..., :frames]  # fmt: skip
        features = torch.log(spectrum.abs().clamp(min=1e-5)).to(audio.dtype)  # (b, bins, f)
        mask = lengths_mask(frame_lens, frames)
        return self.head(self.body(features, mask)).transpose(1, 2) * mask


class VocosDecoder(ConvNeXtStack):
    """Latent frames -> waveform in [-1, 1], ``hop_length`` samples per frame.

    Args:
        in_channels: Latent dimension.
        channels: Width of the ConvNeXt blocks.
        layers: Number of blocks.
        hop_length: Samples per latent frame (the encoder's hop).
        n_fft: FFT and window size of the inverse STFT (``4 * hop_length`` by default: 75 % overlap).
        hidden: MLP width of the blocks (``3 * channels`` by default).
        kernel_size: Depthwise kernel over frames.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int = 256,
        layers: int = 6,
        hop_length: int = 320,
        n_fft: int | None = None,
        hidden: int | None = None,
        kernel_size: int = 7,
    ) -> None:
        super().__init__(in_channels, channels, layers, hop_length, n_fft, hidden, kernel_size)
        self.in_channels = in_channels
        self.head = nn.Linear(channels, 2 * self.bins)  # log magnitude and phase per bin

    def forward(self, z: torch.Tensor, frame_lens: torch.Tensor) -> torch.Tensor:
        """Decodes.

        Args:
            z: ``(b, in_channels, f)`` latents.
            frame_lens: ``(b,)`` valid frames per row.

        Returns:
            ``(b, 1, f * hop_length)`` waveform, zero past ``frame_lens * hop_length``.
        """
        frames = z.shape[-1]
        mask = lengths_mask(frame_lens, frames)
        log_magnitude, phase = self.head(self.body(z, mask)).float().chunk(2, dim=-1)
        magnitude = torch.exp(log_magnitude.clamp(max=MAX_LOG_MAGNITUDE)) * mask.transpose(1, 2)
        # (b, bins, f), plus the silent frames whose windows still reach the last sample: the overlap-add
        # normalization of a row's samples then never depends on how far the batch is padded
        reach = -(-self.n_fft // (2 * self.hop_length))
        spectrum = F.pad(torch.polar(magnitude, phase).transpose(1, 2), (0, reach))
        audio = torch.istft(spectrum, self.n_fft, self.hop_length, self.n_fft, self.window.float(),
                            center=True, length=frames * self.hop_length)  # fmt: skip
        audio = audio.clamp(-1.0, 1.0).to(z.dtype)
        return audio[:, None] * lengths_mask(frame_lens * self.hop_length, audio.shape[-1])
