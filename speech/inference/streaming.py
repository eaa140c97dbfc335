"""Pieces of streaming synthesis (``Synthesizer.stream``): audio leaves before the utterance is finished.

Legend: f latent frames, d latent dim, t samples.

Per text segment, ``Synthesizer.stream`` takes the AR model's tokens as they come and, every ``chunk_tokens``
tokens, lets flow matching continue the latents from those it made before (they are its prompt, the way a
one-shot reference is). This module holds what comes after:

- :class:`IncrementalDecoder`: the Flow-VAE decoder on a sliding window. A frame's audio is final once
  ``context`` frames follow it, ``context`` being the decoder's receptive radius measured by
  :func:`receptive_radius`, so the streamed audio equals decoding all the latents at once.

Rendering (volume, output rate, channels) is ``audio_output.ChunkRenderer``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

RADIUS_MARGIN = 2  # frames added to the measured radius: dependence too faint to measure still counts


@torch.inference_mode()
def receptive_radius(flow_vae: nn.Module, frames: int = 64) -> int:
    """How many latent frames on either side of a frame can change its decoded audio.

    Measured, not derived: random latents are decoded twice with one frame changed, in float32. The furthest
    frame whose samples moved by more than 1e-5 of the largest change (rounding noise of a convolution
    algorithm is no dependence), plus ``RADIUS_MARGIN``, is the radius; the window doubles until the change
    stays inside it.
    """
    param = next(flow_vae.parameters())
    hop, dim = flow_vae.hop_length, flow_vae.latent_dim
    generator = torch.Generator().manual_seed(0)
    while True:
        z = torch.randn(1, frames, dim, generator=generator).to(param)
        lens = torch.tensor([frames], device=param.device)
        center = frames // 2
        bumped = z.clone()
        bumped[0, center] += 1.0
        diff = (flow_vae.decode(bumped, lens).float() - flow_vae.decode(z, lens).float()).abs()
        per_frame = diff.reshape(frames, hop).amax(1)
        moved = torch.nonzero(per_frame > 1e-5 * per_frame.max()).flatten()
        radius = int((moved - center).abs().max()) + RADIUS_MARGIN
        if radius < center:
            return radius
        frames *= 2


class IncrementalDecoder:
    """Decodes latents that arrive in pieces; the audio it returns joins into ``flow_vae.decode`` of all.

    Args:
        flow_vae: The Flow-VAE (its ``decode``).
        context: Frames of context on each side (at least the decoder's :func:`receptive_radius`).
    """

    def __init__(self, flow_vae: nn.Module, context: int) -> None:
        if context < 0:
            raise ValueError(f"context must be >= 0 frames, got {context}")
        self.flow_vae, self.context = flow_vae, context
        self.latents: torch.Tensor | None = None  # (f, d): from `start` on
        self.start = 0  # absolute index of latents[0]
        self.final = 0  # frames whose audio has been returned

    @torch.inference_mode()
    def push(self, latents: torch.Tensor, last: bool = False) -> np.ndarray:
        """Adds ``latents (f, d)`` and returns the audio ``(t,)`` float32 of the frames that became final
        (all remaining ones when ``last``)."""
        self.latents = latents if self.latents is None else torch.cat([self.latents, latents])
        end = self.start + self.latents.shape[0]
        final = end if last else end - self.context
        if final <= self.final:
            return np.zeros(0, dtype=np.float32)
        window_start = max(self.start, self.final - self.context)
        window = self.latents[window_start - self.start :]
        lens = torch.tensor([window.shape[0]], device=window.device)
        audio = self.flow_vae.decode(window[None], lens)[0]
        hop = self.flow_vae.hop_length
        out = audio[(self.final - window_start) * hop : (final - window_start) * hop]
        self.final = final
        keep_from = max(self.start, final - self.context)  # what the next window can need
        self.latents, self.start = self.latents[keep_from - self.start :], keep_from
        return out.float().cpu().numpy()
