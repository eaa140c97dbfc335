"""The audio tokenizer: log-mel -> encoder -> quantizer (25 tokens/s) -> decoder -> log-mel, plus CTC.

MiniMax-Speech section 2: an "Encoder-VQ-Decoder architecture ... on mel-spectrograms with a rate of 25
tokens per second and CTC supervision". The CTC head reads the *quantized* sequence and predicts the
transcript as UTF-8 bytes (``speech.text.byte_ctc``), so the tokens must carry content; the mel decoder makes
them carry acoustics too. Where the paper is silent (sizes, CTC targets, quantizer) the choices are ours and
are measured in ``docs/tokenizer.md``.

Time layout: 100 Hz mel frames are stacked in groups of ``downsample`` (4) into 25 Hz tokens, so
``token_lens = mel_lens // downsample`` exactly, and every valid token sees only valid frames (the last
``mel_lens % downsample`` frames of a row are not tokenized).

Legend: b batch, f mel frames (100 Hz), n tokens (25 Hz), m mel bins, d model dim, c conv channels,
r frames per token, u CTC outputs per token, v CTC vocabulary.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from einops import rearrange
from torch import nn

from speech.modules.conformer import ConformerBlock, sinusoidal_positions
from speech.modules.quantizers import Quantizer
from speech.tensors import lengths_to_mask
from speech.text.byte_ctc import VOCAB_SIZE, greedy_decode


class TokenizerOutput(NamedTuple):
    mel_hat: torch.Tensor  # (b, n * r, m) reconstructed log-mel, normalized scale (see ``normalize``)
    mel_lens: torch.Tensor  # (b,) reconstructed frames = token_lens * r
    tokens: torch.Tensor  # (b, n) code ids
    token_lens: torch.Tensor  # (b,)
    ctc_log_probs: torch.Tensor  # (b, n * u, v) log-softmax
    ctc_lens: torch.Tensor  # (b,) = token_lens * u
    commit_loss: torch.Tensor  # scalar, from the quantizer
    usage: torch.Tensor  # scalar fraction of the codebook used in this batch
    perplexity: torch.Tensor  # scalar


class MaskedConvStack(nn.Module):
    """1-D convolutions (same length) with SiLU between them; padded frames are zeroed before each one."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, layers: int, kernel_size: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
        self.convs = nn.ModuleList(
            nn.Conv1d(a, b, kernel_size, padding=kernel_size // 2)
            for a, b in zip(dims[:-1], dims[1:], strict=True)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x (b, f, c_in)``, ``mask (b, f)`` -> ``(b, f, c_out)``."""
        x = rearrange(x, "b f c -> b c f")
        for i, conv in enumerate(self.convs):
            x = conv(x.masked_fill(~mask[:, None], 0.0))
            if i < len(self.convs) - 1:
                x = nn.functional.silu(x)
        return rearrange(x, "b c f -> b f c").masked_fill(~mask[..., None], 0.0)


class ConformerStack(nn.Module):
    """Sinusoidal positions + Conformer blocks with a padding mask."""

    def __init__(self, dim: int, layers: int, heads: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.dim = dim
        self.blocks = nn.ModuleList(
            ConformerBlock(dim, heads, kernel_size=kernel_size, dropout=dropout) for _ in range(layers)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x (b, n, d)``, ``mask (b, n)`` -> ``(b, n, d)``."""
        if self.blocks:
            x = x + sinusoidal_positions(x.shape[1], self.dim, x.device)
        for block in self.blocks:
            x = block(x, mask)
        return x.masked_fill(~mask[..., None], 0.0)


class AudioTokenizer(nn.Module):
    """Encoder-quantizer-decoder over log-mels with a CTC head on the quantized tokens.

    Args:
        quantizer: The quantizer over ``dim``-wide vectors (``FSQ`` or ``EMAVectorQuantizer``).
        n_mels: Mel bins.
        dim: Width of the 25 Hz Conformer stacks.
        encoder_layers, decoder_layers, ctc_layers: Conformer blocks before the quantizer, after it (mel
            decoder) and in the CTC head (0 = a linear head).
        heads: Attention heads.
        kernel_size: Depthwise convolution kernel of the Conformer blocks.
        conv_channels: Channels of the 100 Hz convolution stacks before stacking / after unstacking.
        conv_layers: Convolutions in each of those stacks.
        conv_kernel: Their kernel size.
        downsample: Mel frames per token (4: 100 Hz mels -> 25 tokens/s).
        ctc_upsample: CTC outputs per token, so byte targets faster than 25/s stay alignable.
        dropout: Dropout inside the Conformer blocks.
        mel_mean, mel_std: Global log-mel statistics of the corpus; the model works on
            ``(mel - mel_mean) / mel_std`` and ``decode`` returns log-mels on the original scale.
        vocab_size: CTC symbols including the blank (257 for byte targets).
        global_condition: Add an utterance vector (the masked mean of the encoder's output, through a
            linear layer) to the mel decoder's input. The voice and the channel then reach the decoder
            without the codes, so the codes are left for content; the flow-matching model and the AR
            model get the voice from their own speaker encoder. ``decode`` then needs the reference mel.
    """

    def __init__(
        self,
        quantizer: Quantizer,
        n_mels: int = 80,
        dim: int = 192,
        encoder_layers: int = 4,
        decoder_layers: int = 4,
        ctc_layers: int = 1,
        heads: int = 4,
        kernel_size: int = 15,
        conv_channels: int = 128,
        conv_layers: int = 2,
        conv_kernel: int = 5,
        downsample: int = 4,
        ctc_upsample: int = 2,
        dropout: float = 0.1,
        mel_mean: float = 0.0,
        mel_std: float = 1.0,
        vocab_size: int = VOCAB_SIZE,
        global_condition: bool = False,
    ) -> None:
        super().__init__()
        self.quantizer, self.downsample, self.ctc_upsample = quantizer, downsample, ctc_upsample
        self.mel_mean, self.mel_std = mel_mean, mel_std
        self.pre = MaskedConvStack(n_mels, conv_channels, conv_channels, conv_layers, conv_kernel)
        self.stack = nn.Linear(conv_channels * downsample, dim)
        self.encoder = ConformerStack(dim, encoder_layers, heads, kernel_size, dropout)
        self.decoder = ConformerStack(dim, decoder_layers, heads, kernel_size, dropout)
        self.unstack = nn.Linear(dim, conv_channels * downsample)
        self.post = MaskedConvStack(conv_channels, conv_channels, n_mels, conv_layers, conv_kernel)
        self.ctc_blocks = ConformerStack(dim, ctc_layers, heads, kernel_size, dropout)
        self.ctc_head = nn.Linear(dim, vocab_size * ctc_upsample)
        self.global_proj = nn.Linear(dim, dim) if global_condition else None

    @property
    def global_condition(self) -> bool:
        """Whether the mel decoder takes an utterance vector (``decode`` then needs a reference mel)."""
        return self.global_proj is not None

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def codebooks(self) -> int:
        """Residual codes per token (``codebook_size`` = codes per codebook ** codebooks)."""
        return self.quantizer.codebooks

    def token_lens(self, mel_lens: torch.Tensor) -> torch.Tensor:
        return torch.div(mel_lens, self.downsample, rounding_mode="floor")

    def normalize(self, mel: torch.Tensor) -> torch.Tensor:
        return (mel - self.mel_mean) / self.mel_std

    def denormalize(self, mel: torch.Tensor) -> torch.Tensor:
        return mel * self.mel_std + self.mel_mean

    def _encode(self, mel: torch.Tensor, mel_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel ``(b, f, m)`` -> continuous 25 Hz vectors ``(b, n, d)`` and ``token_lens``."""
        token_lens = self.token_lens(mel_lens)
        n = mel.shape[1] // self.downsample
        frames = mel[:, : n * self.downsample]
        frame_mask = lengths_to_mask(token_lens * self.downsample, frames.shape[1])
        x = self.pre(self.normalize(frames), frame_mask)
        x = self.stack(rearrange(x, "b (n r) c -> b n (r c)", r=self.downsample))
        return self.encoder(x, lengths_to_mask(token_lens, n)), token_lens

    def _utterance_vector(self, x: torch.Tensor, token_lens: torch.Tensor) -> torch.Tensor | None:
        """Encoder output ``(b, n, d)`` -> the decoder's utterance vector ``(b, 1, d)`` (None without)."""
        if self.global_proj is None:
            return None
        mask = lengths_to_mask(token_lens, x.shape[1])[..., None]
        mean = x.masked_fill(~mask, 0.0).sum(1, keepdim=True) / token_lens.clamp(min=1)[:, None, None]
        return self.global_proj(mean)

    def _decode(
        self, q: torch.Tensor, token_lens: torch.Tensor, g: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Quantized ``(b, n, d)`` (+ an utterance vector ``(b, 1, d)``) -> normalized log-mel
        ``(b, n * r, m)``."""
        if g is not None:
            q = q + g
        x = self.decoder(q, lengths_to_mask(token_lens, q.shape[1]))
        x = rearrange(self.unstack(x), "b n (r c) -> b (n r) c", r=self.downsample)
        return self.post(x, lengths_to_mask(token_lens * self.downsample, x.shape[1]))

    def _ctc(self, q: torch.Tensor, token_lens: torch.Tensor) -> torch.Tensor:
        """Quantized ``(b, n, d)`` -> CTC log-probabilities ``(b, n * u, v)``."""
        x = self.ctc_blocks(q, lengths_to_mask(token_lens, q.shape[1]))
        logits = rearrange(self.ctc_head(x), "b n (u v) -> b (n u) v", u=self.ctc_upsample)
        return logits.float().log_softmax(-1)

    def forward(self, mel: torch.Tensor, mel_lens: torch.Tensor) -> TokenizerOutput:
        """Training pass.

        Args:
            mel: ``(b, f, m)`` log-mel.
            mel_lens: ``(b,)`` valid frames.

        Returns:
            ``TokenizerOutput`` with the normalized reconstruction ``(b, n * r, m)``, tokens ``(b, n)``,
            CTC log-probabilities ``(b, n * u, v)``, their lengths and the quantizer's loss and statistics.
        """
        x, token_lens = self._encode(mel, mel_lens)
        q = self.quantizer(x, lengths_to_mask(token_lens, x.shape[1]))
        return TokenizerOutput(
            mel_hat=self._decode(q.quantized, token_lens, self._utterance_vector(x, token_lens)),
            mel_lens=token_lens * self.downsample,
            tokens=q.indices,
            token_lens=token_lens,
            ctc_log_probs=self._ctc(q.quantized, token_lens),
            ctc_lens=token_lens * self.ctc_upsample,
            commit_loss=q.loss,
            usage=q.usage,
            perplexity=q.perplexity,
        )

    @torch.no_grad()
    def encode(self, mel: torch.Tensor, mel_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel ``(b, f, m)``, ``mel_lens (b,)`` -> tokens ``(b, n)`` (0 on padding), ``token_lens``.

        Raises:
            RuntimeError: the model is in training mode, where the EMA VQ would update its codebook.
        """
        if self.training:
            raise RuntimeError(
                "AudioTokenizer.encode needs model.eval(): in training mode a VQ codebook updates"
            )
        x, token_lens = self._encode(mel, mel_lens)
        return self.quantizer(x, lengths_to_mask(token_lens, x.shape[1])).indices, token_lens

    @torch.no_grad()
    def decode(
        self,
        tokens: torch.Tensor,
        token_lens: torch.Tensor,
        ref_mel: torch.Tensor | None = None,
        ref_mel_lens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Tokens ``(b, n)``, ``token_lens (b,)`` -> log-mel ``(b, n * r, m)`` on the original scale.

        With ``global_condition`` the voice comes from a reference log-mel ``(b, f', m)`` and ``(b,)``
        (the utterance itself, to measure reconstruction).

        Raises:
            ValueError: ``global_condition`` without a reference, or a reference without it.
        """
        if (ref_mel is not None) != self.global_condition:
            raise ValueError(
                "AudioTokenizer.decode: a reference mel (ref_mel, ref_mel_lens) is needed exactly when the "
                f"tokenizer has global_condition (it has {self.global_condition})"
            )
        g = None
        if ref_mel is not None:
            x, lens = self._encode(ref_mel, ref_mel_lens)
            g = self._utterance_vector(x, lens)
        mask = lengths_to_mask(token_lens, tokens.shape[1])
        q = self.quantizer.embed(tokens).masked_fill(~mask[..., None], 0.0)
        return self.denormalize(self._decode(q, token_lens, g))

    @torch.no_grad()
    def transcribe(self, tokens: torch.Tensor, token_lens: torch.Tensor) -> list[str]:
        """Greedy CTC transcript of tokens ``(b, n)``: what content the tokens carry."""
        mask = lengths_to_mask(token_lens, tokens.shape[1])
        q = self.quantizer.embed(tokens).masked_fill(~mask[..., None], 0.0)
        best = self._ctc(q, token_lens).argmax(-1)
        lens = token_lens * self.ctc_upsample
        return [greedy_decode(row[:n].tolist()) for row, n in zip(best, lens, strict=True)]
