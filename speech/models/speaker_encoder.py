"""Learnable speaker encoder (paper section 2.1; Tortoise's conditioning encoder is the cited design):
the log-mel of a reference utterance, any length, no transcript -> one fixed-size speaker vector.

Legend: b batch, f mel frames, m mel bins, s stacked frames (f / stride), d model dim, c output dim.

It is trained jointly with the model it conditions (AR Transformer, flow matching). The reference must be
a *different* utterance of the same speaker than the target (section 3.6: the same utterance leaks
content); the data pipeline's ``ReferenceSampler`` guarantees that.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from speech.modules.rope import RotaryEmbedding
from speech.modules.transformer import RMSNorm, TransformerBlock, attention_mask, positions_from_mask
from speech.tensors import lengths_to_mask


class SpeakerEncoder(nn.Module):
    """Frame stacking, a non-causal Transformer with padding masks, masked mean pooling, projection.

    Padded frames are zeroed and never attended to or pooled, so a padded row gives the vector of the
    row alone (tested).

    Args:
        n_mels: Mel bins ``m`` of the input.
        dim: Transformer width ``d``.
        layers, heads: Transformer depth and heads.
        out_dim: Size ``c`` of the speaker vector.
        stride: Mel frames stacked into one Transformer step (100 Hz mels, stride 2 -> 50 Hz).
        mel_mean, mel_std: Fixed input normalization of the log-mel.
        dropout: Dropout inside the blocks.
    """

    def __init__(
        self,
        n_mels: int,
        dim: int,
        layers: int,
        heads: int,
        out_dim: int,
        *,
        stride: int = 2,
        mel_mean: float = -5.9,
        mel_std: float = 2.6,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.stride, self.out_dim = stride, out_dim
        self.mel_mean, self.mel_std = mel_mean, mel_std
        self.proj_in = nn.Linear(n_mels * stride, dim)
        self.rope = RotaryEmbedding(dim // heads)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, dropout=dropout) for _ in range(layers))
        self.norm = RMSNorm(dim)
        self.proj_out = nn.Linear(dim, out_dim)

    def forward(self, mel: torch.Tensor, mel_lens: torch.Tensor) -> torch.Tensor:
        """``mel (b, f, m)`` log-mel, ``mel_lens (b,)`` valid frames -> speaker vectors ``(b, c)``.

        Raises:
            ValueError: a row has no frames.
        """
        if (mel_lens <= 0).any():
            raise ValueError(f"speaker encoder got an empty reference (mel_lens {mel_lens.tolist()})")
        x = (mel - self.mel_mean) / self.mel_std
        x = x * lengths_to_mask(mel_lens, mel.shape[1])[..., None]
        pad = (-x.shape[1]) % self.stride
        x = nn.functional.pad(x, (0, 0, 0, pad))
        x = rearrange(x, "b (s k) m -> b s (k m)", k=self.stride)
        lens = (mel_lens + self.stride - 1) // self.stride
        valid = lengths_to_mask(lens, x.shape[1])
        rope = self.rope.angles(positions_from_mask(valid))
        mask = attention_mask(valid, causal=False)
        h = self.proj_in(x)
        for block in self.blocks:
            h = block(h, rope=rope, mask=mask)
        h = self.norm(h) * valid[..., None]
        pooled = h.sum(1) / lens[:, None].to(h.dtype)
        return self.proj_out(pooled)
