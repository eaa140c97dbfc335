"""LightningModule of the Flow-VAE (stage ``flow_vae``): GAN training with manual optimization.

Per batch: (after ``disc_start_step``) one discriminator update on detached reconstructions, then one
generator update on ``mel_weight * multi-resolution mel L1 + stft_weight * multi-resolution log-STFT L1 +
kl_weight * warm-up * KL + adv_weight * adversarial + fm_weight * feature matching``.

``global_step`` counts generator updates (= batches): the discriminator's optimizer is stepped directly,
not through Lightning's wrapper, because Lightning counts every wrapped ``step()`` as a global step and
``max_steps``, checkpoint intervals and the schedules here would then mean different things before and
after the discriminator starts. That bypass supports 32-bit and bf16 precision, not fp16 loss scaling.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch

from speech.audio.mel import LogMelSpectrogram
from speech.lit.schedules import AdamWSchedule
from speech.models.flow_vae import FlowVAE, FlowVAEOutput
from speech.modules.discriminators import (
    CombinedDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
)
from speech.tensors import lengths_to_mask

# the stage's optimizer without a config (stage.optim sets it)
DEFAULT_OPTIM = AdamWSchedule(lr=2e-4, weight_decay=0.0, betas=(0.8, 0.99), warmup_steps=100)


def frame_mean(diff: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """Mean of ``(b, f, k)`` values over the valid frames ``f < lens`` of each row."""
    valid = lengths_to_mask(lens, diff.shape[1])[..., None]
    return (diff * valid).sum() / (valid.sum() * diff.shape[-1]).clamp(min=1)


class MultiResolutionMelLoss(torch.nn.Module):
    """L1 between log-mels at several window sizes (hop = window / 4), averaged over resolutions."""

    def __init__(self, sample_rate: int, windows: Sequence[int], n_mels: Sequence[int]) -> None:
        super().__init__()
        if len(windows) != len(n_mels):
            raise ValueError(f"mel_windows {list(windows)} and mel_bins {list(n_mels)} differ in length")
        self.mels = torch.nn.ModuleList(
            LogMelSpectrogram(sample_rate, n_fft=w, win_length=w, hop_length=w // 4, n_mels=m)
            for w, m in zip(windows, n_mels, strict=True)
        )

    def forward(self, est: torch.Tensor, ref: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """``(b, t), (b, t), (b,) -> ()``."""
        terms = []
        for mel in self.mels:
            (m_est, m_lens), (m_ref, _) = mel(est, lens), mel(ref, lens)
            terms.append(frame_mean((m_est - m_ref).abs(), m_lens))
        return torch.stack(terms).mean()


class MultiResolutionSTFTLoss(torch.nn.Module):
    """L1 between log-magnitude STFTs at several sizes (hop = n_fft / 4), averaged over resolutions."""

    def __init__(self, fft_sizes: Sequence[int], eps: float = 1e-5) -> None:
        super().__init__()
        self.fft_sizes, self.eps = [int(n) for n in fft_sizes], eps
        for n in self.fft_sizes:
            self.register_buffer(f"window_{n}", torch.hann_window(n), persistent=False)

    def forward(self, est: torch.Tensor, ref: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """``(b, t), (b, t), (b,) -> ()``; both waveforms must be zero past ``lens``."""
        terms = []
        for n in self.fft_sizes:
            hop, window = n // 4, getattr(self, f"window_{n}")
            specs = [
                torch.stft(x.float(), n, hop, window=window, return_complex=True).abs() for x in (est, ref)
            ]
            log_diff = (torch.log(specs[0] + self.eps) - torch.log(specs[1] + self.eps)).abs()
            terms.append(
                frame_mean(log_diff.transpose(1, 2), torch.div(lens, hop, rounding_mode="floor") + 1)
            )
        return torch.stack(terms).mean()


class FlowVAEModule(L.LightningModule):
    """Trains a ``FlowVAE`` against a ``CombinedDiscriminator`` on batches from ``SpeechDataModule``.

    Args:
        model: The Flow-VAE (or plain VAE when its flow is ``None``).
        mel: The data's log-mel, used for the ``val/mel_distance`` metric.
        discriminator: Multi-period + multi-resolution STFT discriminators.
        segment_seconds: Training crops of at most this length (random, hop-aligned); ``None`` = whole.
        optim: AdamW + warm-up/cosine (``stage.optim``), the same for both optimizers.
        grad_clip: Max gradient norm of each update (``None``: no clipping).
        mel_windows, mel_bins: Multi-resolution mel loss resolutions.
        stft_sizes: Multi-resolution log-STFT loss FFT sizes.
        mel_weight, stft_weight, kl_weight, adv_weight, fm_weight: Loss weights.
        kl_warmup_steps: The KL weight ramps linearly from 0 over this many steps.
        flow_start_step: Before this step the KL is the closed form against N(0, I) (the plain VAE's) and
            the flow gets no gradient; from it on, the flow estimate. The flow is the identity at
            initialization, so the switch is smooth; it lets the encoder learn to carry information before
            the learned prior can fit a collapsed posterior (docs/flow_vae.md). No effect without a flow.
        disc_start_step: Generator steps before the discriminator (and adversarial losses) start.
        adv_loss: ``"lsgan"`` or ``"hinge"``.
    """

    def __init__(
        self,
        model: FlowVAE,
        mel: LogMelSpectrogram,
        discriminator: CombinedDiscriminator,
        *,
        segment_seconds: float | None = 1.0,
        optim: AdamWSchedule = DEFAULT_OPTIM,
        grad_clip: float | None = 1.0,
        mel_windows: Sequence[int] = (256, 512, 1024, 2048),
        mel_bins: Sequence[int] = (20, 40, 80, 160),
        stft_sizes: Sequence[int] = (512, 1024, 2048),
        mel_weight: float = 15.0,
        stft_weight: float = 1.0,
        kl_weight: float = 0.1,
        kl_warmup_steps: int = 0,
        flow_start_step: int = 0,
        adv_weight: float = 1.0,
        fm_weight: float = 2.0,
        disc_start_step: int = 0,
        adv_loss: str = "lsgan",
    ) -> None:
        super().__init__()
        if adv_loss not in ("lsgan", "hinge"):
            raise ValueError(f"unknown adversarial loss {adv_loss!r}: use 'lsgan' or 'hinge'")
        self.automatic_optimization = False
        self.model, self.mel, self.discriminator = model, mel, discriminator
        self.mel_loss = MultiResolutionMelLoss(mel.sample_rate, mel_windows, mel_bins)
        self.stft_loss = MultiResolutionSTFTLoss(stft_sizes)
        self.segment_seconds, self.grad_clip, self.adv_loss = segment_seconds, grad_clip, adv_loss
        self.optim = optim
        self.weights = {"mel": mel_weight, "stft": stft_weight, "kl": kl_weight, "adv": adv_weight,
                        "fm": fm_weight}  # fmt: skip
        self.kl_warmup_steps, self.disc_start_step = kl_warmup_steps, disc_start_step
        self.flow_start_step = flow_start_step

    # ---- data -------------------------------------------------------------------------------------------
    def crop(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Random hop-aligned crops of at most ``segment_seconds``; shorter rows are kept whole."""
        if self.segment_seconds is None:
            return audio, audio_lens
        hop = self.model.hop_length
        seg = max(1, int(self.segment_seconds * self.mel.sample_rate) // hop) * hop
        if audio.shape[1] <= seg:
            return audio, audio_lens
        slack = (audio_lens - seg).clamp(min=0) // hop
        starts = (torch.rand(len(audio), device=audio.device) * (slack + 1)).long().clamp(max=slack) * hop
        idx = (starts[:, None] + torch.arange(seg, device=audio.device)[None]).clamp(max=audio.shape[1] - 1)
        return torch.gather(audio, 1, idx), audio_lens.clamp(max=seg)

    def _reference(self, audio: torch.Tensor, out: FlowVAEOutput) -> torch.Tensor:
        """The input cut to whole latent frames and zeroed past each row's end, aligned with ``out.audio``."""
        ref = audio[:, : out.audio.shape[1]]
        valid = lengths_to_mask(out.audio_lens, ref.shape[1])
        return ref * valid

    # ---- losses -----------------------------------------------------------------------------------------
    def kl_scale(self) -> float:
        """Linear KL warm-up factor in [0, 1] at the current step."""
        if self.kl_warmup_steps <= 0:
            return 1.0
        return min(1.0, self.global_step / self.kl_warmup_steps)

    def reconstruction_losses(self, ref: torch.Tensor, out: FlowVAEOutput) -> dict[str, torch.Tensor]:
        return {
            "mel": self.mel_loss(out.audio, ref, out.audio_lens),
            "stft": self.stft_loss(out.audio, ref, out.audio_lens),
            "kl": out.kl if self.global_step >= self.flow_start_step else out.kl_standard,
        }

    def generator_step_loss(self, ref: torch.Tensor, out: FlowVAEOutput, adversarial: bool):
        losses = self.reconstruction_losses(ref, out)
        w = self.weights
        total = (
            w["mel"] * losses["mel"] + w["stft"] * losses["stft"] + w["kl"] * self.kl_scale() * losses["kl"]
        )
        if adversarial:
            real, fake = self.discriminator(ref), self.discriminator(out.audio)
            losses["adv"] = generator_loss(fake.logits, self.adv_loss)
            losses["fm"] = feature_matching_loss(real.features, fake.features)
            total = total + w["adv"] * losses["adv"] + w["fm"] * losses["fm"]
        return total, losses

    # ---- steps ------------------------------------------------------------------------------------------
    def _update(self, optimizer, loss: torch.Tensor, *, count_step: bool) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.grad_clip is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
        # the discriminator's raw step keeps global_step = generator steps (module docstring)
        optimizer.step() if count_step else optimizer.optimizer.step()

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        sched_g, sched_d = self.lr_schedulers()
        audio, audio_lens = self.crop(batch["audio"], batch["audio_lens"])
        out = self.model(audio, audio_lens)
        ref = self._reference(audio, out)
        adversarial = self.global_step >= self.disc_start_step
        n = len(audio)
        if adversarial:
            real, fake = self.discriminator(ref), self.discriminator(out.audio.detach())
            d_loss = discriminator_loss(real.logits, fake.logits, self.adv_loss)
            self._update(opt_d, d_loss, count_step=False)
            sched_d.step()
            self.log("train/disc", d_loss, batch_size=n)
        total, losses = self.generator_step_loss(ref, out, adversarial)
        self._update(opt_g, total, count_step=True)
        sched_g.step()
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, batch_size=n)
        self.log("train/kl_standard", out.kl_standard.detach(), batch_size=n)
        self.log("train/loss", total.detach(), prog_bar=True, batch_size=n)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        audio, audio_lens = batch["audio"], batch["audio_lens"]
        out = self.model(audio, audio_lens)
        ref = self._reference(audio, out)
        est_mel, mel_lens = self.mel(out.audio, out.audio_lens)
        ref_mel, _ = self.mel(ref, out.audio_lens)
        n = len(audio)
        metrics = {
            "val/mel_distance": frame_mean((est_mel - ref_mel).abs(), mel_lens),
            "val/stft_distance": self.stft_loss(out.audio, ref, out.audio_lens),
            "val/kl": out.kl,
            "val/kl_standard": out.kl_standard,
        }
        self.log_dict(metrics, batch_size=n, sync_dist=True)
        self.log("val/loss", metrics["val/mel_distance"], prog_bar=True, batch_size=n, sync_dist=True)

    def configure_optimizers(self):
        # generator, then discriminator: the order training_step unpacks them in
        optimizers = [self.optim.optimizer(m.parameters()) for m in (self.model, self.discriminator)]
        return optimizers, [self.optim.scheduler(opt) for opt in optimizers]
