"""LightningModule of the CTC judge ASR (stage ``ctc_judge``): log-mel -> CTC over UTF-8 bytes.

Targets are the transcripts as the WER scorer normalizes them (``speech.text.byte_ctc.judge_target``), so
the judge's output is scored as-is.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from jiwer import cer

from speech.audio.mel import LogMelSpectrogram
from speech.lit.schedules import AdamWSchedule
from speech.models.ctc_judge import CTCJudge
from speech.text.byte_ctc import BLANK, greedy_decode, judge_target, text_to_ids

DEFAULT_OPTIM = AdamWSchedule()  # the stage's optimizer without a config (stage.optim sets it)


def spec_augment(
    mel: torch.Tensor,
    mel_lens: torch.Tensor,
    *,
    freq_masks: int,
    time_masks: int,
    max_freq: int,
    max_time_ratio: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Masks random mel bands and time spans with the utterance mean (light SpecAugment)."""
    b, f, m = mel.shape
    out = mel.clone()
    fill = mel.mean(dim=(1, 2), keepdim=True).expand_as(mel)
    for _ in range(freq_masks):
        width = torch.randint(0, max_freq + 1, (b,), generator=generator)
        start = (torch.rand(b, generator=generator) * (m - width)).long()
        band = (torch.arange(m)[None] >= start[:, None]) & (torch.arange(m)[None] < (start + width)[:, None])
        out = torch.where(band[:, None, :].to(mel.device), fill, out)
    for _ in range(time_masks):
        width = (torch.rand(b, generator=generator) * max_time_ratio * mel_lens.cpu()).long()
        start = (torch.rand(b, generator=generator) * (mel_lens.cpu() - width).clamp(min=1)).long()
        span = (torch.arange(f)[None] >= start[:, None]) & (torch.arange(f)[None] < (start + width)[:, None])
        out = torch.where(span[:, :, None].to(mel.device), fill, out)
    return out


class CTCJudgeModule(L.LightningModule):
    """Trains a ``CTCJudge`` on batches from ``SpeechDataModule``.

    Args:
        model: The recognizer.
        mel: Feature extractor, applied on the batch's device.
        optim: AdamW with warm-up + cosine decay (``stage.optim``).
        spec_augment: Keyword arguments of ``spec_augment`` for training batches, or ``None``.
    """

    def __init__(
        self,
        model: CTCJudge,
        mel: LogMelSpectrogram,
        *,
        optim: AdamWSchedule = DEFAULT_OPTIM,
        spec_augment: dict | None = None,
    ) -> None:
        super().__init__()
        self.model, self.mel = model, mel
        self.optim = optim
        self.spec_augment = dict(spec_augment) if spec_augment else None

    def _loss(self, batch: dict, augment: bool):
        mel, mel_lens = self.mel(batch["audio"], batch["audio_lens"])
        if augment and self.spec_augment:
            mel = spec_augment(mel, mel_lens, **self.spec_augment)
        out = self.model(mel, mel_lens)
        targets = [
            text_to_ids(judge_target(t, lang))
            for t, lang in zip(batch["texts"], batch["languages"], strict=True)
        ]
        target_lens = torch.tensor([len(t) for t in targets], device=mel.device)
        flat = torch.tensor([i for t in targets for i in t], device=mel.device, dtype=torch.long)
        loss = F.ctc_loss(out.log_probs.transpose(0, 1).float(), flat, out.lens, target_lens,
                          blank=BLANK, reduction="mean", zero_infinity=True)  # fmt: skip
        return loss, out, targets

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, _, _ = self._loss(batch, augment=True)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["ids"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, out, _ = self._loss(batch, augment=False)
        refs = [judge_target(t, lang) for t, lang in zip(batch["texts"], batch["languages"], strict=True)]
        best = out.log_probs.argmax(-1)
        hyps = [greedy_decode(row[:n].tolist()) for row, n in zip(best, out.lens, strict=True)]
        n = len(batch["ids"])
        self.log("val/loss", loss, prog_bar=True, batch_size=n, sync_dist=True)
        self.log("val/cer", cer(refs, hyps), prog_bar=True, batch_size=n, sync_dist=True)

    def configure_optimizers(self):
        return self.optim.build(self.model.parameters())
