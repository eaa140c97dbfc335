"""LightningModule of the AR Transformer (stage ``ar``): text -> 25 Hz audio tokens, speaker encoder jointly.

Each training row is zero-shot (speaker vector only) or, with probability ``prompt_prob``, one-shot: the
reference utterance's transcript and cached audio tokens are put before the target as a prompt (paper
section 2.1; the batch's ``ref_text_tokens`` / ``ref_tokens`` from ``ref_features=True``). The speaker vector
is always read from the (cropped) reference audio, whose mel is computed here with the injected ``mel``.

Validation logs zero-shot loss/accuracy (``val/loss``, ``val/acc``) and, when the batch has prompts, the
one-shot ones (``val/loss_prompt``, ``val/acc_prompt``). ``val/text_gain`` is how much the text helps: the
zero-shot loss with every row given another row's text (the batch's texts rolled by one) minus the loss with
its own, in nats per token. Near 0 the model ignores the text: it cannot say the words whatever its loss.
With text-aligned hints (``text_starts`` in the batch) the rolled text brings its own timing, so
``val/content_gain`` also gives each row another row's tokens at its own timing: what the text says alone.

A model with the text CTC head (``model.text_ctc_weight > 0``) trains on the token loss plus that weight
times the CTC loss and logs the latter as ``train/text_ctc`` and ``val/text_ctc``; so does guided alignment
(``model.align_weight > 0``, ``*/align``); ``*/loss`` stays the token loss alone. Every checkpoint stores the
text BPE (``checkpoint[TEXT_BPE_KEY]``, ``TextBPE.to_str()``), so inference needs no prepared folder.
"""

from __future__ import annotations

import lightning as L
import torch

from speech.audio.mel import LogMelSpectrogram
from speech.checkpoints import TEXT_BPE_KEY
from speech.data.dataset import TEXT_STARTS, TOKENS
from speech.lit.schedules import AdamWSchedule
from speech.models.ar_transformer import AROutput, ARTransformer
from speech.text.bpe import PAD_ID

DEFAULT_OPTIM = AdamWSchedule()  # the stage's optimizer without a config (stage.optim sets it)


def other_text(batch: dict) -> torch.Tensor:
    """``(b, n)``: each row's text tokens replaced by the row before's (rolled by one), cut or repeated to the
    row's own length and padded after it, so ``text_lens`` and ``text_starts`` still fit."""
    text, lens = batch["text_tokens"], batch["text_lens"]
    other, other_lens = text.roll(1, 0), lens.roll(1, 0)
    j = torch.arange(text.shape[1], device=text.device)[None]
    swapped = other.gather(1, j % other_lens[:, None].clamp(min=1))
    return swapped.masked_fill(j >= lens[:, None], PAD_ID)


class ARModule(L.LightningModule):
    """Trains an ``ARTransformer`` on batches from ``SpeechDataModule`` (with ``features.tokens``).

    Args:
        model: The AR Transformer (with its speaker encoder).
        mel: Feature extractor of the reference audio, applied on the batch's device.
        prompt_prob: Probability that a training row gets the transcribed one-shot prompt.
        optim: AdamW with warm-up + cosine decay (``stage.optim``).
    """

    def __init__(
        self,
        model: ARTransformer,
        mel: LogMelSpectrogram,
        *,
        prompt_prob: float = 0.5,
        optim: AdamWSchedule = DEFAULT_OPTIM,
    ) -> None:
        super().__init__()
        if not 0.0 <= prompt_prob <= 1.0:
            raise ValueError(f"prompt_prob must be in [0, 1], got {prompt_prob}")
        self.model, self.mel, self.prompt_prob = model, mel, prompt_prob
        self.optim = optim

    def _check(self, batch: dict) -> None:
        missing = [k for k in (TOKENS, "ref_audio") if k not in batch]
        if missing:
            raise KeyError(
                f"AR batches need {missing}: set data.datamodule.features.tokens (the token cache) and "
                "data.datamodule.references=true"
            )

    def _prompt(self, batch: dict, use: torch.Tensor) -> dict:
        """Prompt arguments of ``ARTransformer.forward`` for the rows where ``use (b,)`` is True."""
        if "ref_text_tokens" not in batch or not bool(use.any()):
            return {}
        keep = use.long()
        return {
            "prompt_text": batch["ref_text_tokens"], "prompt_text_lens": batch["ref_text_lens"] * keep,
            "prompt_tokens": batch[f"ref_{TOKENS}"].long(), "prompt_lens": batch[f"ref_{TOKENS}_lens"] * keep,
        }  # fmt: skip

    def _forward(self, batch: dict, speaker: torch.Tensor, prompt: dict) -> AROutput:
        aligned = {"text_starts": batch[TEXT_STARTS]} if TEXT_STARTS in batch else {}
        return self.model(speaker=speaker, text=batch["text_tokens"], text_lens=batch["text_lens"],
                          audio_tokens=batch[TOKENS].long(), audio_lens=batch[f"{TOKENS}_lens"],
                          **prompt, **aligned)  # fmt: skip

    def _speaker(self, batch: dict) -> torch.Tensor:
        ref_mel, ref_mel_lens = self.mel(batch["ref_audio"], batch["ref_audio_lens"])
        return self.model.speaker_vector(ref_mel, ref_mel_lens)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self._check(batch)
        n = len(batch["ids"])
        use = torch.rand(n, device=self.device) < self.prompt_prob
        out = self._forward(batch, self._speaker(batch), self._prompt(batch, use))
        self.log("train/loss", out.loss, prog_bar=True, batch_size=n)
        self.log_dict({"train/acc": out.accuracy, "train/prompt_share": use.float().mean()}, batch_size=n)
        return self._total_loss(out, "train", n)

    def _total_loss(self, out: AROutput, split: str, n: int) -> torch.Tensor:
        """The token loss plus the weighted auxiliary losses the model has, each logged under ``split``."""
        total = out.loss
        for name, value, weight in (("text_ctc", out.text_ctc, self.model.text_ctc_weight),
                                    ("align", out.align, self.model.align_weight),
                                    ("advance", out.advance, 1.0)):  # fmt: skip
            if value is not None:
                self.log(f"{split}/{name}", value, batch_size=n, sync_dist=split == "val")
                total = total + weight * value
        return total

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._check(batch)
        n = len(batch["ids"])
        speaker, out = self.zero_shot(batch)
        self.log_dict({"val/loss": out.loss, "val/acc": out.accuracy}, batch_size=n, sync_dist=True)
        if n > 1:
            self.log("val/text_gain", self.text_gain(batch, speaker, out), batch_size=n, sync_dist=True)
            if TEXT_STARTS in batch:
                gain = self.content_gain(batch, speaker, out)
                self.log("val/content_gain", gain, batch_size=n, sync_dist=True)
        self._total_loss(out, "val", n)
        prompt = self._prompt(batch, torch.ones(n, dtype=torch.bool, device=self.device))
        if prompt:
            out = self._forward(batch, speaker, prompt)
            self.log_dict({"val/loss_prompt": out.loss, "val/acc_prompt": out.accuracy}, batch_size=n,
                          sync_dist=True)  # fmt: skip

    def zero_shot(self, batch: dict) -> tuple[torch.Tensor, AROutput]:
        """The speaker vectors ``(b, c)`` of the batch's references and the zero-shot outputs (no prompt)."""
        speaker = self._speaker(batch)
        return speaker, self._forward(batch, speaker, {})

    def text_gain(self, batch: dict, speaker: torch.Tensor, out: AROutput) -> torch.Tensor:
        """The zero-shot loss with every row given another row's text (rolled by one; with its own timing,
        where the batch has ``text_starts``) minus ``out.loss`` (the zero-shot loss with its own; a batch of
        at least two rows)."""
        other = {
            key: batch[key].roll(1, 0) for key in ("text_tokens", "text_lens", TEXT_STARTS) if key in batch
        }
        return self._forward({**batch, **other}, speaker, {}).loss - out.loss

    def content_gain(self, batch: dict, speaker: torch.Tensor, out: AROutput) -> torch.Tensor:
        """With ``text_starts``: the zero-shot loss with every row given another row's text tokens at its own
        timing (``other_text``) minus ``out.loss``; unlike ``text_gain`` the hints still move where the
        row's own text does, so only what the text says differs."""
        return self._forward({**batch, "text_tokens": other_text(batch)}, speaker, {}).loss - out.loss

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        bpe = getattr(datamodule, "bpe", None)
        if bpe is None:
            raise RuntimeError("the AR checkpoint must carry the text BPE: train with SpeechDataModule")
        checkpoint[TEXT_BPE_KEY] = bpe.to_str()

    def configure_optimizers(self):
        trainable = [p for p in self.model.parameters() if p.requires_grad]  # all but frozen parts
        return self.optim.build(trainable)
