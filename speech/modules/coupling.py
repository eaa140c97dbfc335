"""Invertible normalizing-flow layers over latent sequences: affine coupling and channel flips.

Each layer maps ``z -> y`` with an exact, cheap log-determinant of its Jacobian, summed over the valid
frames of each row (RealNVP / Glow coupling as in VITS and PortaSpeech, but with a scale, so the
log-determinant is not always zero). Frames past a row's end pass through unchanged and add nothing.

Legend: b batch, c channels (latent dim), t frames, h hidden width.
"""

from __future__ import annotations

import torch
from torch import nn


def _frame_mask(mask: torch.Tensor) -> torch.Tensor:
    """``(b, t)`` bool -> ``(b, 1, t)`` float."""
    return mask[:, None].to(torch.float32)


class CouplingNet(nn.Module):
    """Non-causal conv stack predicting shift and log-scale from the conditioning half (zero-init output)."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int, kernel_size: int, layers: int):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"coupling kernel_size must be odd, got {kernel_size}")
        self.pre = nn.Conv1d(in_channels, hidden, 1)
        self.convs = nn.ModuleList(
            nn.Conv1d(hidden, hidden, kernel_size, padding=kernel_size // 2) for _ in range(layers)
        )
        self.act = nn.SiLU()
        self.post = nn.Conv1d(hidden, out_channels, 1)
        # zero init: every coupling starts as the identity (Glow), so training starts from a plain VAE
        nn.init.zeros_(self.post.weight)
        nn.init.zeros_(self.post.bias)

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """``(b, c_in, t), (b, 1, t) -> (b, c_out, t)``, zero past each row's end."""
        h = self.pre(x) * m
        for conv in self.convs:
            h = (h + self.act(conv(h))) * m
        return self.post(h) * m


class AffineCoupling(nn.Module):
    """``y_a = z_a``, ``y_b = z_b * exp(s(z_a)) + t(z_a)``: the first half conditions the second.

    ``log|det dy/dz| = sum s(z_a)`` over the second half's channels and the valid frames. The log-scale
    is soft-clamped to ``(-max_log_scale, max_log_scale)`` so early training cannot blow up.

    Args:
        channels: Latent channels (split ``channels // 2`` + the rest).
        hidden: Width of the conditioning network.
        kernel_size: Its convolution kernel (odd).
        layers: Its residual convolutions.
        mean_only: Shift only (volume-preserving, log-det 0), as in VITS/PortaSpeech.
        max_log_scale: Bound of the soft clamp on the log-scale.
    """

    def __init__(
        self,
        channels: int,
        hidden: int,
        kernel_size: int = 5,
        layers: int = 2,
        *,
        mean_only: bool = False,
        max_log_scale: float = 3.0,
    ) -> None:
        super().__init__()
        if channels < 2:
            raise ValueError(f"a coupling layer needs at least 2 channels, got {channels}")
        self.n_a = channels // 2
        self.n_b = channels - self.n_a
        self.mean_only, self.max_log_scale = mean_only, max_log_scale
        out = self.n_b if mean_only else 2 * self.n_b
        self.net = CouplingNet(self.n_a, out, hidden, kernel_size, layers)

    def _shift_log_scale(self, z_a: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stats = self.net(z_a, m)
        if self.mean_only:
            return stats, torch.zeros_like(stats)
        shift, raw = stats.split(self.n_b, dim=1)
        log_scale = self.max_log_scale * torch.tanh(raw / self.max_log_scale) * m
        return shift, log_scale

    def forward(self, z: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(b, c, t), (b, t) bool -> (y (b, c, t), logdet (b,))``."""
        m = _frame_mask(mask)
        z_a, z_b = z.split([self.n_a, self.n_b], dim=1)
        shift, log_scale = self._shift_log_scale(z_a, m)
        y_b = (z_b * torch.exp(log_scale) + shift) * m + z_b * (1 - m)
        return torch.cat([z_a, y_b], dim=1), log_scale.sum(dim=(1, 2))

    def inverse(self, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(b, c, t), (b, t) bool -> z (b, c, t)``."""
        m = _frame_mask(mask)
        y_a, y_b = y.split([self.n_a, self.n_b], dim=1)
        shift, log_scale = self._shift_log_scale(y_a, m)
        z_b = ((y_b - shift) * torch.exp(-log_scale)) * m + y_b * (1 - m)
        return torch.cat([y_a, z_b], dim=1)


class ChannelFlip(nn.Module):
    """Reverses the channel order, so the next coupling transforms the other half (log-det 0)."""

    def forward(self, z: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(b, c, t), (b, t) -> (y (b, c, t), logdet (b,) zeros)``."""
        return z.flip(1), z.new_zeros(z.shape[0])

    def inverse(self, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(b, c, t), (b, t) -> z (b, c, t)``."""
        return y.flip(1)


class CouplingFlow(nn.Module):
    """A stack of ``n_flows`` (affine coupling, channel flip) pairs: ``f`` of the Flow-VAE's KL.

    Args:
        channels: Latent channels.
        n_flows: Coupling layers.
        hidden, kernel_size, layers, mean_only, max_log_scale: Of every ``AffineCoupling``.
    """

    def __init__(
        self,
        channels: int,
        n_flows: int = 4,
        hidden: int = 64,
        kernel_size: int = 5,
        layers: int = 2,
        *,
        mean_only: bool = False,
        max_log_scale: float = 3.0,
    ) -> None:
        super().__init__()
        self.channels = channels
        layers_: list[nn.Module] = []
        for _ in range(n_flows):
            layers_.append(AffineCoupling(channels, hidden, kernel_size, layers,
                                          mean_only=mean_only, max_log_scale=max_log_scale))  # fmt: skip
            layers_.append(ChannelFlip())
        self.flows = nn.ModuleList(layers_)

    def forward(self, z: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps latents towards N(0, I).

        Args:
            z: ``(b, c, t)`` latents.
            mask: ``(b, t)`` bool, True on valid frames.

        Returns:
            ``(y, logdet)``: ``(b, c, t)`` and ``(b,)`` log|det dy/dz| summed over valid frames.
        """
        logdet = z.new_zeros(z.shape[0])
        for flow in self.flows:
            z, ld = flow(z, mask)
            logdet = logdet + ld
        return z, logdet

    def inverse(self, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(b, c, t), (b, t) bool -> z (b, c, t)``: undoes ``forward``."""
        for flow in reversed(self.flows):
            y = flow.inverse(y, mask)
        return y
