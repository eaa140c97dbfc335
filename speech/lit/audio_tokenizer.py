"""LightningModule of the audio tokenizer (stage ``tokenizer``): mel reconstruction + VQ + CTC on tokens.

Loss = ``recon_weight * (L1 + L2)`` of the normalized log-mel over valid frames
+ ``commit_weight * quantizer loss`` (EMA VQ commitment; FSQ has none)
+ ``ctc_weight * CTC`` of the transcript (``judge_target`` bytes) read from the quantized tokens.

Validation logs the losses, the mel L1 on the log-mel scale, codebook usage (%) and perplexity over the
whole validation set (a histogram accumulated over its batches), and the greedy CTC character error rate.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from jiwer import cer

from speech.audio.mel import LogMelSpectrogram
from speech.lit.schedules import AdamWSchedule
from speech.models.audio_tokenizer import AudioTokenizer, TokenizerOutput
from speech.modules.codes import code_size, split_codes
from speech.modules.quantizers import code_histogram, usage_and_perplexity
from speech.tensors import lengths_to_mask
from speech.text.byte_ctc import BLANK, greedy_decode, judge_target, text_to_ids

DEFAULT_OPTIM = AdamWSchedule()  # the stage's optimizer without a config (stage.optim sets it)


def masked_mel_losses(mel_hat: torch.Tensor, target: torch.Tensor, lens: torch.Tensor):
    """Mean L1 and L2 over valid frames of ``(b, f, m)`` tensors (``lens (b,)`` frames)."""
    mask = lengths_to_mask(lens, mel_hat.shape[1])[..., None]
    n = (mask.sum() * mel_hat.shape[-1]).clamp(min=1)
    diff = (mel_hat.float() - target.float()) * mask
    return diff.abs().sum() / n, diff.pow(2).sum() / n


def ctc_targets(texts: list[str], languages: list[str], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat byte targets and their lengths, as the CTC judge learns them (``judge_target``)."""
    ids = [text_to_ids(judge_target(t, lang)) for t, lang in zip(texts, languages, strict=True)]
    lens = torch.tensor([len(i) for i in ids], device=device)
    return torch.tensor([i for row in ids for i in row], device=device, dtype=torch.long), lens


def greedy_transcripts(out: TokenizerOutput) -> list[str]:
    best = out.ctc_log_probs.argmax(-1)
    return [greedy_decode(row[:n].tolist()) for row, n in zip(best, out.ctc_lens, strict=True)]


class AudioTokenizerModule(L.LightningModule):
    """Trains an ``AudioTokenizer`` on batches from ``SpeechDataModule``.

    Args:
        model: The tokenizer.
        mel: Feature extractor, applied on the batch's device.
        recon_weight, commit_weight, ctc_weight: Loss weights.
        optim: AdamW with warm-up + cosine decay (``stage.optim``).
    """

    def __init__(
        self,
        model: AudioTokenizer,
        mel: LogMelSpectrogram,
        *,
        recon_weight: float = 1.0,
        commit_weight: float = 1.0,
        ctc_weight: float = 0.5,
        optim: AdamWSchedule = DEFAULT_OPTIM,
    ) -> None:
        super().__init__()
        self.model, self.mel = model, mel
        self.weights = {"recon": recon_weight, "commit": commit_weight, "ctc": ctc_weight}
        self.optim = optim
        self._val_counts: torch.Tensor | None = None
        self._val_text: tuple[list[str], list[str]] = ([], [])

    def _losses(self, batch: dict) -> tuple[dict[str, torch.Tensor], TokenizerOutput, torch.Tensor]:
        mel, mel_lens = self.mel(batch["audio"], batch["audio_lens"])
        out = self.model(mel, mel_lens)
        target = self.model.normalize(mel[:, : out.mel_hat.shape[1]])
        l1, l2 = masked_mel_losses(out.mel_hat, target, out.mel_lens)
        flat, target_lens = ctc_targets(batch["texts"], batch["languages"], mel.device)
        ctc = F.ctc_loss(out.ctc_log_probs.transpose(0, 1), flat, out.ctc_lens, target_lens,
                         blank=BLANK, reduction="mean", zero_infinity=True)  # fmt: skip
        w = self.weights
        loss = w["recon"] * (l1 + l2) + w["commit"] * out.commit_loss + w["ctc"] * ctc
        losses = {"loss": loss, "mel_l1": l1, "mel_l2": l2, "commit": out.commit_loss, "ctc": ctc}
        return losses, out, mel

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses, out, _ = self._losses(batch)
        loss, n = losses["loss"], len(batch["ids"])
        self.log("train/loss", losses.pop("loss"), prog_bar=True, batch_size=n)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, batch_size=n)
        self.log_dict({"train/usage": 100 * out.usage, "train/perplexity": out.perplexity}, batch_size=n)
        return loss

    def _code_size(self) -> int:
        return code_size(self.model.codebook_size, self.model.codebooks)

    def on_validation_epoch_start(self) -> None:
        # one histogram per codebook (a residual VQ's ids are pairs of codes): usage as in train/usage
        self._val_counts = torch.zeros(self.model.codebooks, self._code_size(), device=self.device)
        self._val_text = ([], [])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        losses, out, _ = self._losses(batch)
        n = len(batch["ids"])
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, batch_size=n, sync_dist=True)
        # mel L1 in log-mel units (nats), comparable across normalizations
        self.log("val/mel_l1_log", losses["mel_l1"] * self.model.mel_std, batch_size=n, sync_dist=True)
        mask, size = lengths_to_mask(out.token_lens, out.tokens.shape[1]), self._code_size()
        codes = split_codes(out.tokens, size, self.model.codebooks)
        for j, counts in enumerate(self._val_counts):
            counts += code_histogram(codes[..., j], mask, size)
        refs = [judge_target(t, lang) for t, lang in zip(batch["texts"], batch["languages"], strict=True)]
        self._val_text[0].extend(refs)
        self._val_text[1].extend(greedy_transcripts(out))

    def on_validation_epoch_end(self) -> None:
        counts = self.all_gather(self._val_counts)
        counts = counts.sum(0) if counts.dim() > 2 else counts
        usage, ppl = torch.stack([torch.stack(usage_and_perplexity(c)) for c in counts]).mean(0)
        self.log("val/usage", 100 * usage, prog_bar=True)
        self.log("val/perplexity", ppl)
        refs, hyps = self._val_text
        if refs:
            self.log("val/cer", float(cer(refs, hyps)), prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        return self.optim.build(self.model.parameters())
