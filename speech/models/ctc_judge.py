"""A small Conformer-CTC recognizer over log-mels: the project's own "judge" ASR for WER.

It is trained on the synthetic corpus's training speakers (``experiment=ctc_judge_tiny``), so it reads the
languages and voices that pocketsphinx's English model cannot. Targets are UTF-8 bytes
(``speech.text.byte_ctc``), so one model covers every language without a data-dependent vocabulary.

Legend: b batch, f mel frames, t encoder frames, m mel bins, d model dim, v vocabulary.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from speech.modules.conformer import ConformerBlock, sinusoidal_positions
from speech.tensors import lengths_to_mask
from speech.text.byte_ctc import VOCAB_SIZE, greedy_decode


def normalize_utterance(mel: torch.Tensor, mel_lens: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Zero mean, unit variance per utterance and mel bin over the valid frames; padding is set to 0.

    Removes channel and loudness offsets (and the large negative mean of log-mels) before the network.
    """
    valid = lengths_to_mask(mel_lens, mel.shape[1])[..., None]  # (b, f, 1)
    n = valid.sum(1, keepdim=True).clamp(min=1)
    mean = (mel * valid).sum(1, keepdim=True) / n
    var = (((mel - mean) * valid) ** 2).sum(1, keepdim=True) / n
    return ((mel - mean) / torch.sqrt(var + eps)).masked_fill(~valid, 0.0)


class CTCOutput(NamedTuple):
    log_probs: torch.Tensor  # (b, t, v) log-softmax
    lens: torch.Tensor  # (b,) valid encoder frames


class CTCJudge(nn.Module):
    """Conv2d subsampling (2x in time per stride-2 layer) -> Conformer blocks -> linear CTC head.

    Args:
        n_mels: Input mel bins.
        dim: Model width.
        layers: Conformer blocks.
        heads: Attention heads.
        kernel_size: Depthwise convolution kernel.
        subsampling: Time reduction, a power of two (2 keeps 50 frames/s from 100 Hz mels).
        conv_channels: Channels of the strided subsampling convolutions.
        dropout: Dropout inside the blocks.
        vocab_size: Output symbols including the blank (257 for byte targets).
    """

    def __init__(
        self,
        n_mels: int = 80,
        dim: int = 144,
        layers: int = 4,
        heads: int = 4,
        kernel_size: int = 15,
        subsampling: int = 2,
        conv_channels: int = 32,
        dropout: float = 0.1,
        vocab_size: int = VOCAB_SIZE,
    ) -> None:
        super().__init__()
        n_stride = subsampling.bit_length() - 1
        if subsampling < 1 or 2**n_stride != subsampling:
            raise ValueError(f"subsampling must be a power of two, got {subsampling}")
        self.subsample, freq = nn.ModuleList(), n_mels
        for i in range(n_stride):
            self.subsample.append(
                nn.Conv2d(1 if i == 0 else conv_channels, conv_channels, 3, stride=2, padding=1)
            )
            freq = (freq + 1) // 2
        self.subsampling, self.n_stride = subsampling, n_stride
        in_dim = conv_channels * freq if n_stride else n_mels
        self.proj = nn.Linear(in_dim, dim)
        self.blocks = nn.ModuleList(ConformerBlock(dim, heads, kernel_size=kernel_size, dropout=dropout)
                                    for _ in range(layers))  # fmt: skip
        self.head = nn.Linear(dim, vocab_size)

    def output_lens(self, mel_lens: torch.Tensor) -> torch.Tensor:
        lens = mel_lens
        for _ in range(self.n_stride):
            lens = torch.div(lens + 1, 2, rounding_mode="floor")
        return lens

    def _subsample(self, mel: torch.Tensor, mel_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Strided convolutions; frames past each row's length are zeroed before every layer, so the
        result on valid frames does not depend on how much padding the batch has."""
        x, lens = rearrange(normalize_utterance(mel, mel_lens), "b f m -> b 1 f m"), mel_lens
        for conv in self.subsample:
            valid = lengths_to_mask(lens, x.shape[2])
            x = F.silu(conv(x.masked_fill(~valid[:, None, :, None], 0.0)))
            lens = torch.div(lens + 1, 2, rounding_mode="floor")
        return rearrange(x, "b c t m -> b t (c m)"), lens

    def forward(self, mel: torch.Tensor, mel_lens: torch.Tensor) -> CTCOutput:
        """``mel (b, f, m)``, ``mel_lens (b,)`` -> per-frame log-probabilities ``(b, t, v)`` and ``lens``."""
        x, lens = self._subsample(mel, mel_lens)
        mask = lengths_to_mask(lens, x.shape[1])
        x = self.proj(x) + sinusoidal_positions(x.shape[1], self.proj.out_features, x.device)
        for block in self.blocks:
            x = block(x, mask)
        return CTCOutput(self.head(x).log_softmax(-1), lens)

    @torch.no_grad()
    def transcribe(self, mel: torch.Tensor, mel_lens: torch.Tensor) -> list[str]:
        """Greedy CTC decoding to text, one string per batch row."""
        out = self.forward(mel, mel_lens)
        best = out.log_probs.argmax(-1)
        return [greedy_decode(row[:n].tolist()) for row, n in zip(best, out.lens, strict=True)]
