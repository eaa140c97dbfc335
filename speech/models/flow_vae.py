"""Flow-VAE (MiniMax-Speech section 2.2.2, Fig. 3a): waveform -> continuous latents z -> waveform.

An encoder (DAC-style on the waveform, or Vocos-style on its STFT) gives a Gaussian posterior
``q(z|x) = N(mu, sigma)`` per latent frame; a decoder (DAC- or Vocos-style) turns ``z`` back into a
waveform. The KL term constrains the latent space through a normalizing flow ``f`` (coupling layers) that
maps ``z`` to N(0, I), so the posterior only has to be *some* normal distribution, not the standard one.
Single-sample estimate per latent element, z reparameterized::

    KL ~ log N(z; mu, sigma) - log N(f(z); 0, I) - log|det df/dz|

Without a flow (``flow=None``) the model is a plain VAE (the paper's "Dac-Vae" ablation, Tables 5-6) and
the KL is the closed form ``KL(N(mu, sigma) || N(0, I))``. The flow is used only in training: ``encode``
and ``decode`` (inference) use the encoder and decoder alone.

Legend: b batch, t samples, f latent frames, d latent dim.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from speech.modules.coupling import CouplingFlow
from speech.modules.dac import DACDecoder, DACEncoder
from speech.modules.vocos import VocosDecoder, VocosEncoder
from speech.tensors import lengths_to_mask

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class FlowVAEOutput(NamedTuple):
    audio: torch.Tensor  # (b, f * hop) reconstruction, zero past audio_lens
    audio_lens: torch.Tensor  # (b,) valid samples: latent_lens * hop (the tail < hop is dropped)
    z: torch.Tensor  # (b, f, d) reparameterized sample
    mu: torch.Tensor  # (b, f, d)
    log_sigma: torch.Tensor  # (b, f, d)
    latent_lens: torch.Tensor  # (b,)
    kl: torch.Tensor  # () the training KL, nats per valid latent element
    kl_standard: torch.Tensor  # () closed-form KL(q || N(0, I)), nats per valid latent element


def gaussian_kl_standard(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """Elementwise closed-form ``KL(N(mu, sigma^2) || N(0, 1)) = (mu^2 + sigma^2 - 1) / 2 - log sigma``."""
    return 0.5 * (mu.pow(2) + torch.exp(2 * log_sigma) - 1) - log_sigma


def flow_kl_sample(
    z: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """Elementwise ``log N(z; mu, sigma) - log N(y; 0, 1)`` for ``y = f(z)`` (the log-det is added per row).

    With ``f`` the identity its expectation over ``z ~ N(mu, sigma)`` is ``gaussian_kl_standard``.
    """
    log_q = -HALF_LOG_2PI - log_sigma - 0.5 * ((z - mu) * torch.exp(-log_sigma)).pow(2)
    log_p = -HALF_LOG_2PI - 0.5 * y.pow(2)
    return log_q - log_p


class FlowVAE(nn.Module):
    """Encoder -> (mu, log sigma) -> z -> decoder, with an optional flow prior for the KL.

    Args:
        encoder: Waveform -> ``2 * latent_dim`` channels per frame (mu and log sigma).
        decoder: ``latent_dim`` channels per frame -> waveform, same hop as the encoder.
        flow: Invertible map used in the KL (``None``: plain VAE with the closed-form KL).
        log_sigma_offset: Added to the encoder's log-sigma output. A freshly initialized encoder outputs
            values near 0, i.e. sigma ~ 1 against a mu that varies by ~0.01 over time: z would be pure noise,
            the decoder would learn to ignore it and the posterior would collapse to the prior within a few
            hundred steps (measured, docs/flow_vae.md). A negative offset starts training with sigma << 1.
        log_sigma_max: Smooth upper bound of log sigma, ``m - softplus(m - x)`` (``None``: unbounded). Below
            the bound it changes values by about ``exp(x - m)``; above it, sigma saturates near ``e^m``
            with the gradient kept, so one runaway frame cannot overflow the KL's ``sigma^2``. On by
            default: unbounded, both the plain VAE (step 203) and the Flow-VAE (step 305, before the flow
            joins the KL) overflowed on the tiny corpus (docs/flow_vae.md).
    """

    def __init__(
        self,
        encoder: DACEncoder | VocosEncoder,
        decoder: DACDecoder | VocosDecoder,
        flow: CouplingFlow | None = None,
        *,
        log_sigma_offset: float = 0.0,
        log_sigma_max: float | None = 4.0,
    ) -> None:
        super().__init__()
        if encoder.out_channels % 2:
            raise ValueError(f"encoder out_channels must be 2 * latent_dim, got {encoder.out_channels}")
        self.latent_dim = encoder.out_channels // 2
        if decoder.in_channels != self.latent_dim:
            raise ValueError(f"decoder in_channels ({decoder.in_channels}) != latent_dim ({self.latent_dim})")
        if encoder.hop_length != decoder.hop_length:
            raise ValueError(
                f"encoder hop ({encoder.hop_length}) and decoder hop ({decoder.hop_length}) differ"
            )
        if flow is not None and flow.channels != self.latent_dim:
            raise ValueError(f"flow channels ({flow.channels}) != latent_dim ({self.latent_dim})")
        self.encoder, self.decoder, self.flow = encoder, decoder, flow
        self.hop_length = encoder.hop_length
        self.log_sigma_offset, self.log_sigma_max = log_sigma_offset, log_sigma_max

    def latent_lengths(self, audio_lens: torch.Tensor) -> torch.Tensor:
        """Whole latent frames per row: ``audio_lens // hop_length``."""
        return torch.div(audio_lens, self.hop_length, rounding_mode="floor")

    def posterior(
        self, audio: torch.Tensor, audio_lens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(b, t), (b,) -> (mu (b, f, d), log_sigma (b, f, d), latent_lens (b,))``, ``f = t // hop``."""
        if audio.dim() != 2:
            raise ValueError(f"audio must be (batch, samples), got shape {tuple(audio.shape)}")
        latent_lens = self.latent_lengths(audio_lens)
        frames = audio.shape[1] // self.hop_length
        if frames < 1:
            raise ValueError(f"audio of {audio.shape[1]} samples is shorter than one hop ({self.hop_length})")
        x = rearrange(audio[:, : frames * self.hop_length], "b t -> b 1 t")
        stats = rearrange(self.encoder(x, latent_lens), "b c f -> b f c")
        mu, log_sigma = stats.chunk(2, dim=-1)
        log_sigma = log_sigma + self.log_sigma_offset
        if self.log_sigma_max is not None:
            log_sigma = self.log_sigma_max - F.softplus(self.log_sigma_max - log_sigma)
        return mu, log_sigma, latent_lens

    def _frame_mask(self, latent_lens: torch.Tensor, frames: int) -> torch.Tensor:
        """``(b,)`` -> ``(b, f)`` bool, True on valid latent frames."""
        return lengths_to_mask(latent_lens, frames)

    def kl_standard(
        self, mu: torch.Tensor, log_sigma: torch.Tensor, latent_lens: torch.Tensor
    ) -> torch.Tensor:
        """Closed-form ``KL(N(mu, sigma) || N(0, I))``, nats per valid latent element (``(b, f, d)`` in)."""
        valid = self._frame_mask(latent_lens, mu.shape[1])[..., None]
        count = (valid.sum() * self.latent_dim).clamp(min=1)
        return (gaussian_kl_standard(mu, log_sigma) * valid).sum() / count

    def kl(
        self, z: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor, latent_lens: torch.Tensor
    ) -> torch.Tensor:
        """The KL term, nats per valid latent element: closed form without a flow, else the flow estimate.

        Args:
            z, mu, log_sigma: ``(b, f, d)``; ``z`` a reparameterized sample of ``N(mu, sigma)``.
            latent_lens: ``(b,)`` valid frames.
        """
        if self.flow is None:
            return self.kl_standard(mu, log_sigma, latent_lens)
        mask = self._frame_mask(latent_lens, z.shape[1])  # (b, f)
        count = (mask.sum() * self.latent_dim).clamp(min=1)
        y, logdet = self.flow(rearrange(z, "b f d -> b d f"), mask)
        y = rearrange(y, "b d f -> b f d")
        return ((flow_kl_sample(z, mu, log_sigma, y) * mask[..., None]).sum() - logdet.sum()) / count

    def forward(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> FlowVAEOutput:
        """Training pass: posterior, reparameterized sample, KL and reconstruction.

        Args:
            audio: ``(b, t)`` waveform.
            audio_lens: ``(b,)`` valid samples.
        """
        mu, log_sigma, latent_lens = self.posterior(audio, audio_lens)
        z = mu + torch.exp(log_sigma) * torch.randn_like(mu)
        kl_standard = self.kl_standard(mu, log_sigma, latent_lens)
        kl = kl_standard if self.flow is None else self.kl(z, mu, log_sigma, latent_lens)
        audio_hat = self.decode(z, latent_lens)
        return FlowVAEOutput(audio_hat, latent_lens * self.hop_length, z, mu, log_sigma, latent_lens,
                             kl, kl_standard)  # fmt: skip

    @torch.no_grad()
    def encode(
        self, audio: torch.Tensor, audio_lens: torch.Tensor, *, sample: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference encoding (no flow).

        Args:
            audio: ``(b, t)`` waveform.
            audio_lens: ``(b,)`` valid samples.
            sample: Draw ``z ~ N(mu, sigma)`` instead of returning the mean.

        Returns:
            ``(latents (b, f, d), latent_lens (b,))``, ``f = t // hop_length``; zero past ``latent_lens``.
        """
        mu, log_sigma, latent_lens = self.posterior(audio, audio_lens)
        z = mu + torch.exp(log_sigma) * torch.randn_like(mu) if sample else mu
        return z * self._frame_mask(latent_lens, z.shape[1])[..., None], latent_lens

    def decode(self, z: torch.Tensor, latent_lens: torch.Tensor) -> torch.Tensor:
        """Latents ``(b, f, d)`` + ``(b,)`` lengths -> waveform ``(b, f * hop_length)``.

        Samples past ``latent_lens * hop_length`` are zero.
        """
        return rearrange(self.decoder(rearrange(z, "b f d -> b d f"), latent_lens), "b 1 t -> b t")
