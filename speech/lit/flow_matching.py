"""LightningModule of the flow-matching stage (``flow_matching``): velocity regression over cached Flow-VAE
latents, conditioned on cached audio tokens and on a speaker vector of a reference utterance.

The speaker vector comes from the model's own ``SpeakerEncoder`` (trained jointly) applied to the log-mel
of ``ref_audio``, another utterance of the same speaker. Validation draws its time, noise and prompts
from a generator seeded by the batch index, so ``val/loss`` is comparable between evaluations; with
``val_sample_steps > 0`` it also samples the first validation batch (the first 30 % of each row's tokens
given as prompt) and logs the mean squared error of the generated latents, normalized by the latents'
variance (``val/sample_nmse``: 1.0 = no better than predicting the mean).
"""

from __future__ import annotations

import lightning as L
import torch

from speech.audio.mel import LogMelSpectrogram
from speech.lit.schedules import AdamWSchedule
from speech.models.flow_matching import FlowMatching, FMOutput
from speech.tensors import lengths_to_mask

DEFAULT_OPTIM = AdamWSchedule(lr=1e-4)  # the stage's optimizer without a config (stage.optim sets it)

VAL_PROMPT_RATIO = 0.3


class FlowMatchingModule(L.LightningModule):
    """Trains a ``FlowMatching`` model on batches with ``latents``, ``tokens`` and ``ref_audio``.

    Args:
        model: The flow-matching model.
        mel: Feature extractor for the reference audio, applied on the batch's device.
        optim: AdamW with warm-up + cosine decay (``stage.optim``).
        val_sample_steps: Euler steps of the validation sample (0 = no sampling during validation).
        val_cfg_scale: Guidance of the validation sample.
    """

    def __init__(
        self,
        model: FlowMatching,
        mel: LogMelSpectrogram,
        *,
        optim: AdamWSchedule = DEFAULT_OPTIM,
        val_sample_steps: int = 0,
        val_cfg_scale: float = 0.7,
    ) -> None:
        super().__init__()
        self.model, self.mel = model, mel
        self.optim = optim
        self.val_sample_steps, self.val_cfg_scale = val_sample_steps, val_cfg_scale

    def _speaker(self, batch: dict) -> torch.Tensor:
        ref_mel, ref_lens = self.mel(batch["ref_audio"], batch["ref_audio_lens"])
        return self.model.speaker_vector(ref_mel, ref_lens)

    def _loss(self, batch: dict, generator: torch.Generator | None = None) -> FMOutput:
        return self.model(
            latents=batch["latents"],
            latent_lens=batch["latents_lens"],
            tokens=batch["tokens"].long(),
            token_lens=batch["tokens_lens"],
            speaker=self._speaker(batch),
            generator=generator,
        )

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self._loss(batch)
        n = len(batch["tokens"])
        self.log("train/loss", out.loss, prog_bar=True, batch_size=n)
        self.log("train/prompt_frac", (out.prompt_lens > 0).float().mean(), batch_size=n)
        return out.loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        generator = torch.Generator(device=self.device).manual_seed(batch_idx)
        out = self._loss(batch, generator)
        n = len(batch["tokens"])
        self.log("val/loss", out.loss, prog_bar=True, batch_size=n, sync_dist=True)
        if self.val_sample_steps > 0 and batch_idx == 0:
            self.log("val/sample_nmse", self._sample_nmse(batch, generator), batch_size=n, sync_dist=True)

    def _sample_nmse(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        """Samples the frames after a 30 % token prompt and compares them with the true latents."""
        model, fpt = self.model, self.model.frames_per_token
        tokens, token_lens = batch["tokens"].long(), batch["tokens_lens"]
        prompt_lens = fpt * (VAL_PROMPT_RATIO * token_lens).long()
        latents = batch["latents"]
        z, lens = model.sample(tokens=tokens, token_lens=token_lens, speaker=self._speaker(batch),
                               prompt_latents=latents, prompt_lens=prompt_lens, steps=self.val_sample_steps,
                               cfg_scale=self.val_cfg_scale, generator=generator)  # fmt: skip
        lens = torch.minimum(lens, batch["latents_lens"] - prompt_lens).clamp(min=0)
        idx = prompt_lens[:, None] + torch.arange(z.shape[1], device=z.device)
        idx = idx.clamp(max=latents.shape[1] - 1)
        truth = torch.gather(latents, 1, idx[..., None].expand(-1, -1, latents.shape[-1]))
        mask = lengths_to_mask(lens, z.shape[1])[..., None]
        n = (mask.sum() * z.shape[-1]).clamp(min=1)
        mse = ((z - truth) * mask).pow(2).sum() / n
        mean = (truth * mask).sum((0, 1)) / mask.sum().clamp(min=1)
        var = ((truth - mean) * mask).pow(2).sum() / n
        return mse / var.clamp(min=1e-8)

    def configure_optimizers(self):
        return self.optim.build(self.model.parameters())
