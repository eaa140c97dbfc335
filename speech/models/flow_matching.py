"""Latent flow matching (paper section 2.2.1, Fig. 3b): a DiT predicts the velocity that carries Gaussian
noise to Flow-VAE latents, conditioned on upsampled audio tokens, a speaker vector and, with some
probability, the latents of the utterance's first frames (the prompt).

Legend: b batch, k audio tokens (25 Hz), f latent frames (``frames_per_token * k``, 50 Hz), l latent dim,
d model dim, c speaker-vector dim, m mel bins.

Optimal-transport conditional flow matching (Lipman et al. 2023): with noise ``x0``, data ``x1`` and
``t ~ U(0, 1)`` (or logit-normal), ``x_t = (1 - (1 - sigma_min) t) x0 + t x1`` and the target velocity is
``x1 - (1 - sigma_min) x0``. The loss covers only valid frames after the prompt. Tokens, speaker and
prompt are dropped together with probability ``cond_dropout`` for classifier-free guidance.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from speech.models.speaker_encoder import SpeakerEncoder
from speech.modules.codes import CodeEmbedding
from speech.modules.dit import DiT
from speech.tensors import lengths_to_mask

SOLVERS = ("euler", "midpoint")
TIME_SCHEDULES = ("uniform", "logit_normal")


class FMOutput(NamedTuple):
    """Training outputs: scalar ``loss``; ``prompt_lens (b,)`` prompt frames given to each row (0 = none);
    ``loss_frames (b,)`` frames the loss covered per row."""

    loss: torch.Tensor
    prompt_lens: torch.Tensor
    loss_frames: torch.Tensor


def fit_frames(latents: torch.Tensor, latent_lens: torch.Tensor, frames: int) -> torch.Tensor:
    """``latents (b, f', l)`` cropped or extended to ``frames``; each row past its ``latent_lens`` repeats its
    last valid frame (the cache can be a frame short of ``frames_per_token * token_lens``)."""
    last = (latent_lens - 1).clamp(min=0)[:, None]
    idx = torch.minimum(torch.arange(frames, device=latents.device)[None], last)
    return torch.gather(latents, 1, idx[..., None].expand(-1, -1, latents.shape[-1]))


class TokenUpsampler(nn.Module):
    """Audio tokens -> frame-rate condition ("Conv1d && Upsample", Fig. 3b): embedding, a conv at the
    token rate, repeat each token ``factor`` times, a conv at the frame rate. Padded positions are zeroed
    before each conv, so padding never leaks into valid frames.

    Args:
        vocab_size: Audio token ids.
        dim: Channels ``d``.
        factor: Frames per token.
        kernel_size: Odd kernel of both convs.
        codebooks: Residual codes per token (``speech.modules.codes``): a token is embedded as the sum of
            its codes' vectors.
    """

    def __init__(
        self, vocab_size: int, dim: int, factor: int, kernel_size: int = 3, codebooks: int = 1
    ) -> None:
        super().__init__()
        self.factor = factor
        self.embed = CodeEmbedding(vocab_size, dim, codebooks)
        self.token_conv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2)
        self.frame_conv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2)

    def forward(self, tokens: torch.Tensor, token_lens: torch.Tensor) -> torch.Tensor:
        """``tokens (b, k)``, ``token_lens (b,)`` -> ``(b, f, d)``, ``f = factor * k``, zero past the end."""
        k_valid = lengths_to_mask(token_lens, tokens.shape[1])[..., None]
        h = self.embed(tokens) * k_valid
        h = F.silu(rearrange(self.token_conv(rearrange(h, "b k d -> b d k")), "b d k -> b k d")) * k_valid
        h = h.repeat_interleave(self.factor, dim=1)
        f_valid = lengths_to_mask(token_lens * self.factor, h.shape[1])[..., None]
        return rearrange(self.frame_conv(rearrange(h, "b f d -> b d f")), "b d f -> b f d") * f_valid


class FlowMatching(nn.Module):
    """Conditional flow matching over Flow-VAE latents with a DiT estimator and its own speaker encoder.

    Args:
        estimator: The velocity network; its ``dim`` sets the width of every condition.
        speaker_encoder: Reference mel -> speaker vector, trained jointly.
        token_vocab_size: Audio token ids (the tokenizer's ``codebook_size``).
        token_codebooks: Residual codes per token (the tokenizer's ``codebooks``).
        latent_dim: Flow-VAE latent channels ``l``.
        frames_per_token: Latent frames per audio token (50 Hz / 25 Hz = 2).
        prompt_prob: Probability that a training row gets a prompt.
        max_prompt_ratio: A prompt covers a uniform fraction in ``[0, max_prompt_ratio]`` of the tokens.
        cond_dropout: Probability that a row loses tokens, speaker and prompt together (CFG).
        sigma_min: Noise level left at ``t = 1``.
        time_schedule: ``"uniform"`` or ``"logit_normal"`` (more training on mid-range ``t``).
        latent_mean, latent_std: Latents are modelled as ``(z - mean) / std``.
    """

    def __init__(
        self,
        estimator: DiT,
        speaker_encoder: SpeakerEncoder,
        *,
        token_vocab_size: int,
        latent_dim: int,
        frames_per_token: int = 2,
        prompt_prob: float = 0.5,
        max_prompt_ratio: float = 0.3,
        cond_dropout: float = 0.2,
        sigma_min: float = 1e-6,
        time_schedule: str = "uniform",
        latent_mean: float = 0.0,
        latent_std: float = 1.0,
        token_codebooks: int = 1,
    ) -> None:
        super().__init__()
        if time_schedule not in TIME_SCHEDULES:
            raise ValueError(f"time_schedule must be one of {TIME_SCHEDULES}, got {time_schedule!r}")
        if estimator.out_dim != latent_dim:
            raise ValueError(f"estimator.out_dim {estimator.out_dim} != latent_dim {latent_dim}")
        self.estimator, self.speaker_encoder = estimator, speaker_encoder
        self.token_vocab_size, self.latent_dim = token_vocab_size, latent_dim
        self.frames_per_token, self.prompt_prob = frames_per_token, prompt_prob
        self.max_prompt_ratio, self.cond_dropout = max_prompt_ratio, cond_dropout
        self.sigma_min, self.time_schedule = sigma_min, time_schedule
        self.latent_mean, self.latent_std = latent_mean, latent_std
        dim = estimator.dim
        self.upsampler = TokenUpsampler(token_vocab_size, dim, frames_per_token, codebooks=token_codebooks)
        self.speaker_proj = nn.Linear(speaker_encoder.out_dim, dim)
        self.in_proj = nn.Linear(2 * latent_dim + dim, dim)  # concat(x_t, prompt latents, token condition)

    def speaker_vector(self, ref_mel: torch.Tensor, ref_mel_lens: torch.Tensor) -> torch.Tensor:
        """``ref_mel (b, f, m)``, ``ref_mel_lens (b,)`` -> speaker vectors ``(b, c)``."""
        return self.speaker_encoder(ref_mel, ref_mel_lens)

    def estimate(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        *,
        token_cond: torch.Tensor,
        prompt: torch.Tensor,
        speaker: torch.Tensor,
        valid: torch.Tensor,
    ) -> torch.Tensor:
        """One estimator call -> velocity ``(b, f, l)``.

        Args:
            x: ``(b, f, l)`` state; ``t (b,)`` flow time.
            token_cond: ``(b, f, d)`` from ``TokenUpsampler`` (zero = dropped).
            prompt: ``(b, f, l)`` normalized prompt latents, zero outside the prompt.
            speaker: ``(b, c)`` speaker vectors (zero = dropped).
            valid: ``(b, f)`` bool, True on real frames.
        """
        h = self.in_proj(torch.cat((x, prompt, token_cond), dim=-1))
        return self.estimator(h, t, self.speaker_proj(speaker), valid)

    def _sample_time(self, b: int, device, generator: torch.Generator | None) -> torch.Tensor:
        if self.time_schedule == "logit_normal":
            return torch.sigmoid(torch.randn(b, device=device, generator=generator))
        return torch.rand(b, device=device, generator=generator)

    def _draw_prompts(self, token_lens: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Prompt frames per row: ``frames_per_token * floor(u * max_prompt_ratio * token_lens)`` with
        probability ``prompt_prob``, else 0 (a whole number of tokens, as at inference)."""
        b, device = len(token_lens), token_lens.device
        u = torch.rand(b, device=device, generator=generator)
        give = torch.rand(b, device=device, generator=generator) < self.prompt_prob
        tokens = (u * self.max_prompt_ratio * token_lens).long()
        return torch.where(give, tokens * self.frames_per_token, torch.zeros_like(tokens))

    def forward(
        self,
        *,
        latents: torch.Tensor,
        latent_lens: torch.Tensor,
        tokens: torch.Tensor,
        token_lens: torch.Tensor,
        speaker: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> FMOutput:
        """Flow-matching loss of one batch.

        Args:
            latents: ``(b, f', l)`` Flow-VAE latents (un-normalized); ``f'`` may differ from
                ``frames_per_token * k`` by a frame: they are cropped or extended (last frame repeated) to
                it, and frames past ``latent_lens`` are left out of the loss.
            latent_lens: ``(b,)`` valid latent frames.
            tokens: ``(b, k)`` audio tokens; ``token_lens (b,)``.
            speaker: ``(b, c)`` speaker vectors.
            generator: Source of the random draws (time, noise, prompts, dropout); None = global RNG.

        Returns:
            ``FMOutput``: mean squared velocity error over valid frames after the prompt.
        """
        b, device, fpt = latents.shape[0], latents.device, self.frames_per_token
        frames = fpt * tokens.shape[1]
        frame_lens = fpt * token_lens
        valid = lengths_to_mask(frame_lens, frames)
        x1 = (fit_frames(latents, latent_lens, frames) - self.latent_mean) / self.latent_std
        x1 = x1 * valid[..., None]

        t = self._sample_time(b, device, generator).to(x1.dtype)
        x0 = torch.randn(x1.shape, device=device, dtype=x1.dtype, generator=generator)
        prompt_lens = self._draw_prompts(token_lens, generator)
        keep = torch.rand(b, device=device, generator=generator) >= self.cond_dropout
        prompt_lens = prompt_lens * keep  # a dropped row has no prompt: its loss covers every frame

        tt = t[:, None, None]
        x_t = (1 - (1 - self.sigma_min) * tt) * x0 + tt * x1
        target = x1 - (1 - self.sigma_min) * x0
        in_prompt = lengths_to_mask(prompt_lens, frames)
        prompt = x1 * in_prompt[..., None]
        token_cond = self.upsampler(tokens, token_lens) * keep[:, None, None]
        pred = self.estimate(x_t, t, token_cond=token_cond, prompt=prompt, speaker=speaker * keep[:, None],
                             valid=valid)  # fmt: skip

        loss_mask = valid & ~in_prompt & lengths_to_mask(latent_lens, frames)
        err = (pred.float() - target.float()).pow(2).mean(-1) * loss_mask
        loss = err.sum() / loss_mask.sum().clamp(min=1)
        return FMOutput(loss, prompt_lens, loss_mask.sum(1))

    def guided_velocity(
        self, x: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor], cfg_scale: float
    ) -> torch.Tensor:
        """Classifier-free guided velocity ``(1 + s) v_cond - s v_uncond`` in ONE estimator call: the
        conditional and unconditional rows are stacked into a ``2b`` batch. ``s = 0`` runs ``b`` rows only.

        Args:
            x: ``(b, f, l)`` current state; ``t (b,)``.
            cond: ``token_cond (b, f, d)``, ``prompt (b, f, l)``, ``speaker (b, c)``, ``valid (b, f)``.
            cfg_scale: Guidance strength ``s``.
        """
        if cfg_scale == 0:
            return self.estimate(x, t, **cond)
        null = {k: (v if k == "valid" else torch.zeros_like(v)) for k, v in cond.items()}
        stacked = {k: torch.cat((cond[k], null[k])) for k in cond}
        v_cond, v_uncond = self.estimate(torch.cat((x, x)), torch.cat((t, t)), **stacked).chunk(2)
        return (1 + cfg_scale) * v_cond - cfg_scale * v_uncond

    @torch.inference_mode()
    def sample(
        self,
        *,
        tokens: torch.Tensor,
        token_lens: torch.Tensor,
        speaker: torch.Tensor,
        prompt_latents: torch.Tensor | None = None,
        prompt_lens: torch.Tensor | None = None,
        steps: int = 10,
        solver: str = "euler",
        cfg_scale: float = 0.7,
        noise_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Integrates the ODE from noise (``t = 0``) to latents (``t = 1``) with a fixed-step solver.

        Args:
            tokens: ``(b, k)`` prompt tokens followed by the new tokens; ``token_lens (b,)``.
            speaker: ``(b, c)`` speaker vectors.
            prompt_latents: ``(b, p, l)`` un-normalized latents of the prompt audio, or None.
            prompt_lens: ``(b,)`` prompt frames to use, normally ``frames_per_token * prompt tokens``
                (``<= p``); None with ``prompt_latents`` means all ``p``.
            steps: Solver steps (the midpoint solver calls the estimator twice per step).
            solver: ``"euler"`` or ``"midpoint"``.
            cfg_scale: Classifier-free guidance ``s`` in ``(1 + s) v_cond - s v_uncond``; 0 = none.
            noise_scale: Standard deviation of the starting noise.
            generator: Noise source.

        Returns:
            ``(latents (b, f_new, l), lens (b,))``: the frames after each row's prompt, un-normalized,
            left-aligned and zero-padded; ``lens = frames_per_token * token_lens - prompt_lens``.
        """
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        b, device = tokens.shape[0], tokens.device
        frames, frame_lens = self.frames_per_token * tokens.shape[1], self.frames_per_token * token_lens
        valid = lengths_to_mask(frame_lens, frames)
        dtype = self.in_proj.weight.dtype
        prompt, prompt_lens = self._prompt_canvas(prompt_latents, prompt_lens, b, frames, dtype, device)
        if (prompt_lens > frame_lens).any():
            raise ValueError(f"prompt_lens {prompt_lens.tolist()} exceed the frames {frame_lens.tolist()}")
        in_prompt = lengths_to_mask(prompt_lens, frames)[..., None]
        cond = {"token_cond": self.upsampler(tokens, token_lens), "prompt": prompt,
                "speaker": speaker.to(dtype), "valid": valid}  # fmt: skip

        shape = (b, frames, self.latent_dim)
        x0 = noise_scale * torch.randn(shape, device=device, dtype=dtype, generator=generator)
        x, dt = x0, 1.0 / steps
        for i in range(steps):
            t = torch.full((b,), i * dt, device=device, dtype=dtype)
            tt = t[:, None, None]
            # the prompt span holds the training-time interpolation of the known latents at time t
            x = torch.where(in_prompt, (1 - (1 - self.sigma_min) * tt) * x0 + tt * prompt, x)
            v = self.guided_velocity(x, t, cond, cfg_scale)
            if solver == "midpoint":
                v = self.guided_velocity(x + 0.5 * dt * v, t + 0.5 * dt, cond, cfg_scale)
            x = x + dt * v
        x = x * self.latent_std + self.latent_mean
        return self._after_prompt(x, prompt_lens, frame_lens)

    def _prompt_canvas(self, prompt_latents, prompt_lens, b: int, frames: int, dtype, device):
        """Normalized prompt latents on a ``(b, f, l)`` zero canvas and the prompt frames per row."""
        canvas = torch.zeros(b, frames, self.latent_dim, device=device, dtype=dtype)
        if prompt_latents is None:
            return canvas, torch.zeros(b, dtype=torch.long, device=device)
        if prompt_lens is None:
            prompt_lens = torch.full((b,), prompt_latents.shape[1], dtype=torch.long, device=device)
        p = min(prompt_latents.shape[1], frames)
        z = (prompt_latents[:, :p].to(dtype) - self.latent_mean) / self.latent_std
        canvas[:, :p] = z * lengths_to_mask(prompt_lens, p)[..., None]
        return canvas, prompt_lens.to(device)

    @staticmethod
    def _after_prompt(x: torch.Tensor, prompt_lens: torch.Tensor, frame_lens: torch.Tensor):
        """Rows of ``x (b, f, l)`` from ``prompt_lens`` to ``frame_lens``, left-aligned: ``(b, f_new, l)``."""
        lens = frame_lens - prompt_lens
        f_new = int(lens.max()) if len(lens) else 0
        idx = (prompt_lens[:, None] + torch.arange(f_new, device=x.device)).clamp(max=x.shape[1] - 1)
        out = torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))
        return out * lengths_to_mask(lens, f_new)[..., None], lens
