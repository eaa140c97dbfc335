"""Autoregressive Transformer (paper section 2): text BPE tokens + a speaker vector -> 25 Hz audio tokens.

Legend: b batch, n text tokens, k audio tokens, t sequence positions, d model dim, c speaker dim,
v output vocabulary (audio codes + EOS), e head dim.

One decoder-only sequence per utterance (segments packed back to back, each row padded at one end)::

    [speaker | prompt_text ⊕ text | BOS | prompt_tokens ⊕ audio_tokens | EOS]

The speaker vector comes from a learnable ``SpeakerEncoder`` trained jointly (zero-shot); the optional
prompt (one-shot) is the transcript and audio tokens of another utterance of the same speaker. The loss is
cross-entropy on the target audio tokens and EOS only. Audio ids ``0..V-1`` are the codebook, ``eos_id = V``
and ``bos_id = V + 1`` (the head predicts ``V + 1`` classes; BOS is input only).

Training batches are right-padded, so the causal mask alone keeps padding out of every valid position.
Generation left-pads the prefixes (RoPE positions from 0 per row via ``positions_from_mask``), prefills a
static KV cache and then decodes one token per step for the whole batch; every row stops at its own EOS.
"""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from speech.models.speaker_encoder import SpeakerEncoder
from speech.modules.kv_cache import KVCache
from speech.modules.rope import RotaryEmbedding
from speech.modules.sampling import ras_next
from speech.modules.transformer import RMSNorm, TransformerBlock, attention_mask, positions_from_mask

IGNORE = -100  # cross-entropy target of padded positions
# Generated audio tokens per target BPE token: synthetic_tiny spans 1.6-5.9 at 25 Hz (docs/ar.md).
MIN_TOKENS_PER_TEXT, MAX_TOKENS_PER_TEXT = 1.0, 10.0


class AROutput(NamedTuple):
    """Training outputs: mean cross-entropy, next-token accuracy (both over target tokens + EOS) and the
    logits ``(b, k + 1, v)`` at the positions that predict them."""

    loss: torch.Tensor
    accuracy: torch.Tensor
    logits: torch.Tensor


class BlockWeights(NamedTuple):
    """One block's weights for ``ARTransformer._step``, transposed to ``(in, out)``; ``qkv`` and ``w13`` carry
    the preceding RMSNorm's gain times ``sqrt(d)`` (see ``_unit_rms``)."""

    qkv: torch.Tensor  # (d, 3d)
    out: torch.Tensor  # (d, d)
    w13: torch.Tensor  # (d, 2f)
    w2: torch.Tensor  # (f, d)
    floor: torch.Tensor  # sqrt(d * eps) of the block's RMSNorms, 0-dim


class DecodeWeights(NamedTuple):
    """Everything ``ARTransformer._step`` reads besides the caches: per-block weights, then the final
    RMSNorm's gain times ``sqrt(d)`` ``(d,)`` and floor."""

    blocks: list[BlockWeights]
    head_gain: torch.Tensor
    head_floor: torch.Tensor


def _unit_rms(x: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
    """``x (b, d) / sqrt(||x||^2 + floor^2)``: with ``floor = sqrt(d * eps)`` this is RMSNorm (eps included)
    up to the factor ``sqrt(d) * gain`` that the next weights carry, in three ops instead of six."""
    return x / torch.hypot(torch.linalg.vector_norm(x, dim=-1, keepdim=True), floor)


def pack(
    segments: list[tuple[torch.Tensor, torch.Tensor]], *, left_pad: bool = False
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Packs padded segments back to back per row.

    Args:
        segments: ``(x (b, l_i, d), lens (b,))`` in sequence order; ``x`` is right-padded.
        left_pad: Align every row's end at the last position (generation) instead of its start (training).

    Returns:
        ``(packed (b, t, d), total_lens (b,), starts)`` with ``starts[i] (b,)`` the index of segment ``i``'s
        first position in each row.
    """
    x0 = segments[0][0]
    b, device = x0.shape[0], x0.device
    total = torch.stack([lens for _, lens in segments]).sum(0)
    t = int(total.max())
    out = x0.new_zeros(b, t, x0.shape[-1])
    start = t - total if left_pad else torch.zeros_like(total)
    starts = []
    for x, lens in segments:
        starts.append(start)
        if x.shape[1]:
            offsets = torch.arange(x.shape[1], device=device)
            valid = offsets[None] < lens[:, None]
            rows = torch.arange(b, device=device)[:, None].expand_as(valid)
            out[rows[valid], (start[:, None] + offsets)[valid]] = x[valid]
        start = start + lens
    return out, total, starts


class ARTransformer(nn.Module):
    """Decoder-only Transformer (RoPE, RMSNorm, SwiGLU, SDPA) over text and audio tokens.

    Args:
        speaker_encoder: Reference mel -> speaker vector, trained with this model.
        text_vocab_size: Text BPE vocabulary (pad id 0).
        audio_vocab_size: Audio codebook size ``V``.
        dim, layers, heads: Transformer width, depth and heads.
        ffn_hidden: SwiGLU hidden width (default ``swiglu_hidden(dim)``).
        dropout: Dropout in the blocks.
        rope_base: RoPE frequency base.
        max_len: Longest sequence generation may build (prefix + new tokens); sizes the default cache.
    """

    def __init__(
        self,
        speaker_encoder: SpeakerEncoder,
        *,
        text_vocab_size: int,
        audio_vocab_size: int,
        dim: int,
        layers: int,
        heads: int,
        ffn_hidden: int | None = None,
        dropout: float = 0.0,
        rope_base: float = 10000.0,
        max_len: int = 2048,
    ) -> None:
        super().__init__()
        self.speaker_encoder = speaker_encoder
        self.audio_vocab_size, self.max_len = audio_vocab_size, max_len
        self.eos_id, self.bos_id = audio_vocab_size, audio_vocab_size + 1
        self.speaker_proj = nn.Linear(speaker_encoder.out_dim, dim)
        self.text_emb = nn.Embedding(text_vocab_size, dim)
        self.audio_emb = nn.Embedding(audio_vocab_size + 2, dim)
        self.rope = RotaryEmbedding(dim // heads, rope_base)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, ffn_hidden=ffn_hidden, dropout=dropout) for _ in range(layers)
        )
        self.norm = RMSNorm(dim)
        self._decode_cache: tuple[tuple, DecodeWeights] | None = None  # see ``_decode_weights``
        self.head = nn.Linear(dim, audio_vocab_size + 1, bias=False)
        # small embeddings and head: training starts from a near-uniform prediction (loss ~ ln(V + 1))
        for weight in (self.text_emb.weight, self.audio_emb.weight, self.head.weight):
            nn.init.normal_(weight, std=0.02)

    def speaker_vector(self, ref_mel: torch.Tensor, ref_mel_lens: torch.Tensor) -> torch.Tensor:
        """Reference log-mel ``(b, f, m)`` and ``ref_mel_lens (b,)`` -> speaker vectors ``(b, c)``."""
        return self.speaker_encoder(ref_mel, ref_mel_lens)

    def _prefix(self, speaker, text, text_lens, prompt_text, prompt_text_lens, prompt_tokens, prompt_lens):
        """The segments before the target audio: speaker, (prompt text), text, BOS, (prompt tokens)."""
        b = speaker.shape[0]
        one = torch.ones(b, dtype=torch.long, device=speaker.device)
        segments = [(self.speaker_proj(speaker)[:, None], one)]
        if prompt_text is not None:
            segments.append((self.text_emb(prompt_text), prompt_text_lens))
        segments.append((self.text_emb(text), text_lens))
        segments.append((self.audio_emb(one[:, None] * self.bos_id), one))
        if prompt_tokens is not None:
            segments.append((self.audio_emb(prompt_tokens.long()), prompt_lens))
        return segments

    def _blocks(self, x, *, rope, mask=None, is_causal=False) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, rope=rope, mask=mask, is_causal=is_causal)
        return self.norm(x)

    def _decode_weights(self) -> DecodeWeights:
        """The weights laid out for ``_step`` (a copy: the decoder's size in memory while kept).

        Made once and reused by later ``generate`` calls until a parameter changes: the key is every
        block / final-norm parameter's storage and version counter, which in-place updates (optimizer
        steps, ``load_state_dict``) and moves (``.to``) change. ``clear_cache`` drops it.
        """
        params = [*self.blocks.parameters(), self.norm.weight]
        key = tuple((p.data_ptr(), p._version) for p in params)
        if self._decode_cache is None or self._decode_cache[0] != key:
            self._decode_cache = (key, self._layout_decode_weights())
        return self._decode_cache[1]

    def _layout_decode_weights(self) -> DecodeWeights:
        d = self.head.in_features
        scale = d**0.5

        def floor(norm: RMSNorm) -> torch.Tensor:
            return torch.tensor((d * norm.eps) ** 0.5, device=norm.weight.device)

        def t(weight, norm=None):  # (out, in) -> (in, out), the RMSNorm's gain * sqrt(d) folded into the rows
            w = weight.float().t()
            if norm is not None:
                w = w * (norm.weight.float() * scale)[:, None]
            return w.to(weight.dtype).contiguous()

        blocks = [
            BlockWeights(t(b.attn.qkv.weight, b.attn_norm), t(b.attn.out.weight),
                         t(b.ffn.w13.weight, b.ffn_norm), t(b.ffn.w2.weight), floor(b.attn_norm))
            for b in self.blocks
        ]  # fmt: skip
        return DecodeWeights(blocks, self.norm.weight * scale, floor(self.norm))

    def _step(self, token, weights: DecodeWeights, cos, sin, mask) -> torch.Tensor:
        """One decoding step: ``token (b,)`` -> next-token logits ``(b, v)`` in float32, keys and values
        appended to the caches.

        The math of ``TransformerBlock`` (dropout off) in as few ops as it takes: at batch 1 on CPU a step
        is a few dozen tiny kernels, so per-op overhead, not arithmetic, is what a leaner step saves.
        RMSNorm is ``x / ||x||`` with its gain and ``sqrt(d)`` folded into the next matmul's weights
        (``_decode_weights``, stored ``(in, out)``: faster matrix-vector products on CPU), queries, keys and
        values are rotated in one op and stored with one copy, and residual adds ride on ``addmm``.
        ``tests/models/test_ar_transformer.py`` pins it to the module path (cached decoding equals a full
        forward).

        Args:
            weights: ``_decode_weights()``.
            cos, sin: ``RotaryEmbedding.packed_angles`` of the new position, ``(b, 3, 1, 1, e)`` (one per
                row) or ``(3, 1, 1, e)`` (the same for all).
            mask: ``(b, 1, 1, s)`` boolean over the cached keys, or None (no padding).
        """
        x = self.audio_emb(token)  # (b, d)
        b, d = x.shape
        for block, w in zip(self.blocks, weights.blocks, strict=True):
            attn = block.attn
            qkv = (_unit_rms(x, w.floor) @ w.qkv).view(b, 3, attn.heads, 1, attn.head_dim)
            qkv = RotaryEmbedding.rotate_packed(qkv, cos, sin)
            k, v = attn.kv_cache.append(qkv[:, 1:])
            y = F.scaled_dot_product_attention(qkv[:, 0], k, v, attn_mask=mask)  # (b, h, 1, e)
            x = torch.addmm(x, y.view(b, d), w.out)
            gate, up = (_unit_rms(x, w.floor) @ w.w13).chunk(2, dim=-1)
            x = torch.addmm(x, F.silu(gate) * up, w.w2)
        return self.head(_unit_rms(x, weights.head_floor) * weights.head_gain).float()

    @contextmanager
    def _no_cache(self):
        """Training forwards never touch a cache left set up for generation."""
        caches = [block.attn.kv_cache for block in self.blocks]
        for block in self.blocks:
            block.attn.kv_cache = None
        try:
            yield
        finally:
            for block, cache in zip(self.blocks, caches, strict=True):
                block.attn.kv_cache = cache

    def forward(
        self,
        *,
        speaker: torch.Tensor,
        text: torch.Tensor,
        text_lens: torch.Tensor,
        audio_tokens: torch.Tensor,
        audio_lens: torch.Tensor,
        prompt_text: torch.Tensor | None = None,
        prompt_text_lens: torch.Tensor | None = None,
        prompt_tokens: torch.Tensor | None = None,
        prompt_lens: torch.Tensor | None = None,
    ) -> AROutput:
        """Teacher-forced loss on the target audio tokens and EOS.

        Args:
            speaker: ``(b, c)`` speaker vectors.
            text, text_lens: ``(b, n)`` target-text BPE ids (right-padded), ``(b,)``.
            audio_tokens, audio_lens: ``(b, k)`` target audio tokens, ``(b,)``.
            prompt_text, prompt_text_lens: ``(b, n_p)`` prompt transcript and lengths (0 = no prompt).
            prompt_tokens, prompt_lens: ``(b, k_p)`` prompt audio tokens and lengths.

        Returns:
            ``AROutput`` with logits ``(b, k + 1, v)``.
        """
        prefix = self._prefix(speaker, text, text_lens, prompt_text, prompt_text_lens, prompt_tokens,
                              prompt_lens)  # fmt: skip
        x, _, starts = pack([*prefix, (self.audio_emb(audio_tokens.long()), audio_lens)])
        positions = torch.arange(x.shape[1], device=x.device)[None]
        with self._no_cache():
            h = self._blocks(x, rope=self.rope.angles(positions), is_causal=True)
        k = audio_tokens.shape[1]
        # position p predicts the token at p + 1: audio token j (and EOS at j = k) from start - 1 + j
        gather = (starts[-1][:, None] - 1 + torch.arange(k + 1, device=x.device)).clamp(max=x.shape[1] - 1)
        logits = self.head(torch.gather(h, 1, gather[..., None].expand(-1, -1, h.shape[-1])))
        offsets = torch.arange(k + 1, device=x.device)[None]
        targets = F.pad(audio_tokens.long(), (0, 1))
        targets = torch.where(offsets == audio_lens[:, None], self.eos_id, targets)
        targets = targets.masked_fill(offsets > audio_lens[:, None], IGNORE)
        loss = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE)
        valid = targets != IGNORE
        accuracy = (logits.argmax(-1) == targets)[valid].float().mean()
        return AROutput(loss, accuracy, logits)

    def setup_cache(
        self, batch_size: int, max_len: int, *, dtype: torch.dtype | None = None, device=None
    ) -> None:
        """Allocates a static KV cache in every block (on the model's dtype/device unless given)."""
        param = next(self.parameters())
        for block in self.blocks:
            attn = block.attn
            attn.kv_cache = KVCache(batch_size, attn.heads, max_len, attn.head_dim,
                                    dtype=dtype or param.dtype, device=device or param.device)  # fmt: skip

    def clear_cache(self) -> None:
        """Frees the KV caches and the decoding copy of the weights."""
        for block in self.blocks:
            block.attn.kv_cache = None
        self._decode_cache = None

    def _ready_cache(self, batch_size: int, length: int, dtype: torch.dtype) -> None:
        """Reuses the caches when they fit this call, else sets up new ones; empties them."""
        cache = self.blocks[0].attn.kv_cache
        if (
            cache is None
            or cache.batch_size != batch_size
            or cache.max_len < length
            or cache.kv.dtype != dtype
        ):
            self.setup_cache(batch_size, length, dtype=dtype)
        for block in self.blocks:
            block.attn.kv_cache.reset()

    def _length_limits(self, text_lens, min_per_text, max_per_text, max_tokens):
        """``(min_new (b,), max_new (b,))`` generated tokens, from the target text lengths."""
        max_new = torch.ceil(text_lens.float() * max_per_text).long().clamp(min=1)
        if max_tokens is not None:
            max_new = max_new.clamp(max=max_tokens)
        min_new = torch.ceil(text_lens.float() * min_per_text).long().clamp(max=max_new)
        return min_new.clamp(min=0), max_new

    def generate(self, **options) -> tuple[torch.Tensor, torch.Tensor]:
        """Decodes audio tokens for a batch (call in eval mode): :meth:`generate_stream` run to its end.

        Takes :meth:`generate_stream`'s keyword arguments and returns
        ``(tokens (b, k) int64, token_lens (b,))``: only the new tokens (no prompt, no EOS), 0-padded.
        """
        stream = self.generate_stream(**options)
        while True:
            try:
                next(stream)
            except StopIteration as end:
                return end.value

    @torch.inference_mode()
    def generate_stream(
        self,
        *,
        speaker: torch.Tensor,
        text: torch.Tensor,
        text_lens: torch.Tensor,
        prompt_text: torch.Tensor | None = None,
        prompt_text_lens: torch.Tensor | None = None,
        prompt_tokens: torch.Tensor | None = None,
        prompt_lens: torch.Tensor | None = None,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        ras_window: int = 10,
        ras_threshold: float = 0.1,
        min_tokens_per_text: float = MIN_TOKENS_PER_TEXT,
        max_tokens_per_text: float = MAX_TOKENS_PER_TEXT,
        max_tokens: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Generator[torch.Tensor, None, tuple[torch.Tensor, torch.Tensor]]:
        """Decodes audio tokens for a batch one step at a time (call in eval mode), yielding each step's
        tokens ``(b,)`` (for streaming; a row's tokens after its first EOS mean nothing). Each row stops at
        its own EOS; the batch ends when every row has.

        Each row makes at least ``ceil(min_tokens_per_text * text_lens)`` tokens (EOS is masked before) and
        at most ``ceil(max_tokens_per_text * text_lens)`` (capped by ``max_tokens``), so decoding always ends.

        Args:
            speaker, text, text_lens, prompt_*: As in ``forward`` (no target audio).
            temperature: Softmax temperature; ``0`` = greedy (ignores ``generator``).
            top_k, top_p: Filters of the nucleus draw (``0`` / ``1.0`` = off).
            ras_window, ras_threshold: Repetition-aware sampling (``speech.modules.sampling.ras_next``).
            min_tokens_per_text, max_tokens_per_text, max_tokens: Length limits, see above.
            generator: Source of randomness.

        Returns:
            As the generator's ``StopIteration.value``: ``(tokens (b, k) int64, token_lens (b,))``, only the
            new tokens (no prompt, no EOS), 0-padded.
        """
        prefix = self._prefix(speaker, text, text_lens, prompt_text, prompt_text_lens, prompt_tokens,
                              prompt_lens)  # fmt: skip
        x, lens, _ = pack(prefix, left_pad=True)
        b, t, device = x.shape[0], x.shape[1], x.device
        min_new, max_new = self._length_limits(
            text_lens, min_tokens_per_text, max_tokens_per_text, max_tokens
        )
        steps = int(max_new.max())
        if t + steps > self.max_len:
            steps = self.max_len - t
            if steps <= 0:
                raise ValueError(f"prefix of {t} positions leaves no room within max_len {self.max_len}")
            max_new = max_new.clamp(max=steps)
        self._ready_cache(b, t + steps, x.dtype)
        padded = bool((lens != t).any())
        valid = torch.arange(t, device=device)[None] >= (t - lens)[:, None]
        if padded:
            rope = self.rope.angles(positions_from_mask(valid))
            h = self._blocks(x, rope=rope, mask=attention_mask(valid, causal=True))
            keys = torch.cat([valid, valid.new_ones(b, steps)], 1)[:, None, None]  # (b, 1, 1, t + steps)
        else:
            h = self._blocks(x, rope=self.rope.angles(torch.arange(t, device=device)[None]), is_causal=True)
        cos, sin = self.rope.packed_angles(torch.arange(t + steps, device=device))  # (t + steps, 3, 1, 1, e)
        weights = self._decode_weights()
        logits = self.head(h[:, -1]).float()
        out = torch.zeros(b, steps, dtype=torch.long, device=device)
        done = torch.zeros(b, dtype=torch.bool, device=device)
        min_steps, first_cap = int(min_new.max()), int(max_new.min())
        for i in range(steps):
            if i < min_steps:
                logits[:, self.eos_id].masked_fill_(i < min_new, float("-inf"))
            token = ras_next(logits, out[:, :i], temperature=temperature, top_k=top_k, top_p=top_p,
                             window=ras_window, threshold=ras_threshold, generator=generator)  # fmt: skip
            if i >= first_cap:
                token = token.masked_fill(max_new <= i, self.eos_id)
            out[:, i] = token
            yield token
            done |= token == self.eos_id
            if i == steps - 1 or bool(done.all()):
                break
            if padded:
                pos = lens + i
                logits = self._step(token, weights, cos[pos], sin[pos], keys[..., : t + i + 1])
            else:
                logits = self._step(token, weights, cos[t + i], sin[t + i], None)
        # each row ends at its first EOS; a row that made none reached max_new (every shorter one is forced)
        eos = out == self.eos_id
        out_lens = torch.where(eos.any(1), eos.int().argmax(1), max_new)
        k = int(out_lens.max()) if b else 0
        out = out[:, :k].masked_fill(torch.arange(k, device=device)[None] >= out_lens[:, None], 0)
        return out, out_lens
