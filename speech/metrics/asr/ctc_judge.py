"""The project's own CTC judge ASR (``python train.py experiment=ctc_judge_tiny``) as an ASR backend."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from speech.checkpoints import build_component, build_model
from speech.metrics.asr.base import ASR_SAMPLE_RATE, ASRBackend
from speech.tensors import pad_sequences


class CTCJudgeASR(ASRBackend):
    """Greedy CTC transcription with a checkpoint written by ``train.py`` (stage ``ctc_judge``).

    Args:
        checkpoint: A ``.ckpt`` from the judge's run folder (it carries its config).
        device: Torch device.
        batch_size: Utterances per forward pass.
    """

    name = "ctc_judge"

    def __init__(self, checkpoint: str, device: str = "cpu", batch_size: int = 16) -> None:
        self.model, cfg = build_model(checkpoint)
        self.mel = build_component(cfg, "data.mel")
        if self.mel.sample_rate != ASR_SAMPLE_RATE:
            raise ValueError(
                f"{checkpoint}: judge trained at {self.mel.sample_rate} Hz, scoring runs at 16 kHz"
            )
        self.device, self.batch_size = torch.device(device), batch_size
        self.model.to(self.device)
        self.mel.to(self.device)

    @torch.no_grad()
    def transcribe(
        self, wavs: Sequence[np.ndarray], *, language: str, utts: Sequence[str] | None = None
    ) -> list[str]:
        out: list[str] = []
        for i in range(0, len(wavs), self.batch_size):
            audio, lens, _ = pad_sequences(
                [np.asarray(w, dtype=np.float32) for w in wavs[i : i + self.batch_size]]
            )
            mel, mel_lens = self.mel(audio.to(self.device), lens.to(self.device))
            out += self.model.transcribe(mel, mel_lens)
        return out
