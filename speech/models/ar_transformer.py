"""Autoregressive Transformer (paper section 2): text BPE tokens + a speaker vector -> 25 Hz audio tokens.

Legend: b batch, n text tokens, k audio tokens, t sequence positions, d model dim, c speaker dim,
v output vocabulary (audio codes + EOS), e head dim.

One decoder-only sequence per utterance (segments packed back to back, each row padded at one end)::

    [speaker | prompt_text ⊕ text | BOS | prompt_tokens ⊕ audio_tokens | EOS]

The speaker vector comes from a learnable ``SpeakerEncoder`` trained jointly (zero-shot); the optional
prompt (one-shot) is the transcript and audio tokens of another utterance of the same speaker. The loss is
cross-entropy on the target audio tokens and EOS only. Audio ids ``0..V-1`` are the codebook, ``eos_id = V``
and ``bos_id = V + 1`` (the head predicts ``V + 1`` classes; BOS is input only).

Tokens of ``q > 1`` residual codebooks of ``C`` codes (``V = C ** q``, ``speech.modules.codes``) are embedded
as the sum of their codes' embeddings; the head predicts the first code or EOS (``C + 1`` classes) and one
``NextCodeHead`` per further code reads the same hidden state and the codes before it, so a step still
makes one whole token. The loss is the sum of the codes' cross-entropies.

Optional alignment aid (``text_ctc_weight > 0``, *ours*): a linear CTC head reads the hidden states at the
target audio positions and must spell the target text's BPE ids from them (blank = the pad id 0), so each
audio position has to know where in the text it is; the stage adds ``text_ctc_weight`` times this loss to
the token loss. Generation never uses the head.

Optional guided alignment (``align_weight > 0``, *ours* after DC-TTS's guided attention,
``speech.modules.alignment``): the first ``align_heads`` heads of the ``align_layers`` are pulled onto the
diagonal between the audio steps (prompt tokens then target tokens) and the text (prompt text then target
text), so that they learn to read the text where the speech is. Optional ``audio_input_dropout``: each
target audio token's input embedding is zeroed with this probability during training (the rest scaled up),
so the next token cannot always be guessed from the last one and the text has to be read (the role of
Tacotron's pre-net dropout). Neither changes generation or the parameters.

Optional text hints (``text_hint``, *ours*): the input that predicts target audio token ``j`` of ``K`` also
gets a learned embedding of the text token at the same share of the text, ``text[floor((j + 1/2) N / K)]``,
and of an end id at ``j = K`` (where EOS is due), so every step is told roughly what it is saying instead of
having to find it by attention (the uniform spread is E2-TTS's filler idea, here added to an AR model's
inputs). Generation does not know ``K``: it spreads the text over ``hint_rate`` audio tokens per text token,
a moving average of the training batches' ratio kept in the model's state.

Optional text-aligned hints (``hint_pointer``, *ours* after VALL-E R's phoneme pointer): the hint of audio
token ``j`` is the text token being said there, by a forced alignment (``text_starts``, the audio token where
each text token starts: ``speech.text.ctc_align``), so the hints follow the speech's own timing instead of
an even spread. A small head on the same hidden state predicts how many text tokens the pointer moves on
before the next audio token (0 to ``MAX_ADVANCE``; the end id counts as token ``n``), trained with
cross-entropy (``AROutput.advance``). Generation moves the pointer by the head's expected advance (kept as
a fraction, so a rate of one token per three steps moves it every third step) and feeds the token under it.

Optional hint context (``hint_context``, *ours*, either hint mode): each hint also carries the next text token
and its dwell, how many audio tokens the pointer has stayed on the current one (0 where it moved, to
``MAX_DWELL``). A text token spans several audio tokens (3.6 on the tiny corpus's BPE) whose sounds differ:
the dwell says which part of it is due, the next token what it runs into.

Training batches are right-padded, so the causal mask alone keeps padding out of every valid position.
Generation left-pads the prefixes (RoPE positions from 0 per row via ``positions_from_mask``), prefills a
static KV cache through the blocks' ``forward`` and then decodes one token per step for the whole batch
(on CPU through the blocks' lean ``step``, elsewhere their ``forward``); every row stops at its own EOS.
The block math lives in ``speech.modules.transformer.TransformerBlock``, not here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Generator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from speech.models.speaker_encoder import SpeakerEncoder
from speech.modules.alignment import guided_attention_loss
from speech.modules.codes import CodeEmbedding, NextCodeHead, join_codes, next_code_loss, split_codes
from speech.modules.kv_cache import KVCache
from speech.modules.rope import RotaryEmbedding
from speech.modules.sampling import ras_next, sample_next
from speech.modules.transformer import (
    RMSNorm,
    StepWeights,
    TransformerBlock,
    positions_from_mask,
    slot_mask,
    unit_rms,
)

IGNORE = -100  # cross-entropy target of padded positions
MAX_ADVANCE = 3  # the pointer head's largest class: 3 or more text tokens on before the next audio token
MAX_DWELL = 15  # hint_context: dwells of 15 audio tokens (0.6 s) and more share one embedding
# Generated audio tokens per target BPE token: synthetic_tiny spans 1.6-5.9 at 25 Hz (docs/ar.md).
MIN_TOKENS_PER_TEXT, MAX_TOKENS_PER_TEXT = 1.0, 10.0


class _Limits(NamedTuple):
    """Bounds on each row's new tokens: EOS is masked before ``min_new (b,)`` and forced at ``max_new (b,)``;
    no row is masked from step ``min_steps`` on, none is forced before ``first_cap``."""

    min_new: torch.Tensor
    max_new: torch.Tensor
    min_steps: int
    first_cap: int


class _Lean(NamedTuple):
    """Per generation, for the blocks' lean decoding ``step``: their ``step_weights``, the packed RoPE
    tables ``(s, 3, 1, 1, e)`` of every cache slot and the final norm in ``unit_rms`` form."""

    weights: list[StepWeights]
    cos: torch.Tensor
    sin: torch.Tensor
    norm_gain: torch.Tensor  # the final RMSNorm's gain * sqrt(d), (d,)
    norm_floor: torch.Tensor  # and its floor, as in ``StepWeights``


class _Decoding(NamedTuple):
    """What every decoding step of one generation reads besides the token."""

    keys: torch.Tensor  # (b, s) slots that hold or will hold a real token (``_prefill``)
    pad: torch.Tensor  # (b,) each row's left padding (its False keys)
    lean: _Lean | None  # the blocks' lean ``step`` (CPU), or None: their ``forward``
    lean_pad: torch.Tensor | None  # ``pad``, or None when no row is padded (no mask needed)


class AROutput(NamedTuple):
    """Training outputs: mean cross-entropy (summed over a token's codes), next-token accuracy (every code
    right; both over target tokens + EOS) and the head's logits ``(b, k + 1, C + 1)`` (first code or EOS) at
    the positions that predict them."""

    loss: torch.Tensor
    accuracy: torch.Tensor
    logits: torch.Tensor
    text_ctc: torch.Tensor | None = (
        None  # CTC loss of the text from the audio positions (text_ctc_weight > 0)
    )
    align: torch.Tensor | None = None  # guided attention loss of the aligned heads (align_weight > 0)
    advance: torch.Tensor | None = None  # cross-entropy of the pointer head (hint_pointer)


def _dwell(pointer: torch.Tensor) -> torch.Tensor:
    """``(b, s)`` how many steps ``pointer (b, s)`` has stayed where it is: 0 at the first step and wherever
    it moved, then 1, 2, ..."""
    j = torch.arange(pointer.shape[1], device=pointer.device)[None]
    moved = F.pad(pointer[:, 1:] != pointer[:, :-1], (1, 0), value=True)
    return j - torch.where(moved, j, 0).cummax(1).values


class _SpreadHints:
    """Generation's text hints spread evenly: ``hints (b, steps + 1, d)`` computed up front."""

    def __init__(self, hints: torch.Tensor) -> None:
        self.hints = hints

    def first(self) -> torch.Tensor:
        """``(b, d)`` the hint of the first new token (added to the prefix's last input)."""
        return self.hints[:, 0]

    def after(self, h: torch.Tensor, i: int) -> torch.Tensor:
        """``(b, d)`` the hint added to the input of step ``i``'s token."""
        return self.hints[:, i + 1]


class _PointerHints:
    """Generation's text-aligned hints: a pointer into the text that moves by the pointer head's expected
    advance after each step, kept as a fraction; the hint is the token under it, the end id past the text."""

    def __init__(self, model: ARTransformer, text: torch.Tensor, text_lens: torch.Tensor, dtype) -> None:
        self.model, self.text, self.text_lens, self.dtype = model, text, text_lens, dtype
        self.position = torch.zeros(text.shape[0], device=text.device)  # (b,) text tokens, fractional
        self.dwell = torch.zeros(text.shape[0], dtype=torch.long, device=text.device)  # (b,) steps on it
        self.classes = torch.arange(MAX_ADVANCE + 1, device=text.device, dtype=torch.float32)

    def _embed(self) -> torch.Tensor:
        pointer = self.position.floor().long()[:, None]
        return self.model._hints(self.text, self.text_lens, pointer, self.dwell[:, None])[:, 0].to(self.dtype)

    def first(self) -> torch.Tensor:
        """``(b, d)`` the hint of the first new token: the first text token."""
        return self._embed()

    def after(self, h: torch.Tensor, i: int) -> torch.Tensor:
        """``(b, d)`` the hint of step ``i``'s token's input, after the pointer moved by the head's expected
        advance read from ``h (b, d)``, the hidden state that predicted that token."""
        probs = self.model.advance_head(h).float().softmax(-1)
        before = self.position.floor()
        self.position = (self.position + probs @ self.classes).clamp(max=self.text_lens.float())
        self.dwell = torch.where(self.position.floor() == before, self.dwell + 1, 0)
        return self._embed()


def pack(
    segments: list[tuple[torch.Tensor, torch.Tensor]], *, left_pad: bool = False
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Packs padded segments back to back per row.

    Args:
        segments: ``(x (b, l_i, d), lens (b,))`` in sequence order; ``x`` is right-padded.
        left_pad: Align every row's end at the last position (generation) instead of its start (training).

    Returns:
        ``(packed (b, t, d), total_lens (b,), starts)`` with ``starts[i] (b,)`` the index of segment ``i``'s
        first position in each row; ``packed`` has the widest dtype of the segments (they differ under
        autocast).
    """
    x0 = segments[0][0]
    b, device = x0.shape[0], x0.device
    total = torch.stack([lens for _, lens in segments]).sum(0)
    t = int(total.max())
    # under autocast a Linear's output (bf16) sits next to an Embedding's (float32)
    dtype = functools.reduce(torch.promote_types, (x.dtype for x, _ in segments))
    out = x0.new_zeros(b, t, x0.shape[-1], dtype=dtype)
    start = t - total if left_pad else torch.zeros_like(total)
    starts = []
    for x, lens in segments:
        starts.append(start)
        if x.shape[1]:
            offsets = torch.arange(x.shape[1], device=device)
            valid = offsets[None] < lens[:, None]
            rows = torch.arange(b, device=device)[:, None].expand_as(valid)
            out[rows[valid], (start[:, None] + offsets)[valid]] = x[valid].to(dtype)
        start = start + lens
    return out, total, starts


class ARTransformer(nn.Module):
    """Decoder-only Transformer (RoPE, RMSNorm, SwiGLU, SDPA) over text and audio tokens.

    Args:
        speaker_encoder: Reference mel -> speaker vector, trained with this model.
        text_vocab_size: Text BPE vocabulary (pad id 0).
        audio_vocab_size: Audio token ids ``V`` (the tokenizer's ``codebook_size``).
        audio_codebooks: Residual codes per token ``q`` (the tokenizer's ``codebooks``): ``V = C ** q``.
        dim, layers, heads: Transformer width, depth and heads.
        ffn_hidden: SwiGLU hidden width (default ``swiglu_hidden(dim)``).
        dropout: Dropout in the blocks.
        rope_base: RoPE frequency base.
        max_len: Longest sequence generation may build (prefix + new tokens); sizes the default cache.
        text_ctc_weight: Weight of the text CTC loss on the audio positions (0: no CTC head).
        align_weight: Weight of the guided attention loss (0: off).
        align_layers: Blocks whose heads are guided (default: every block but the first, which sees only
            token embeddings).
        align_heads: Heads guided in each of those blocks (the first ones).
        align_sigma: Width of the guide's diagonal band, relative to the lengths.
        audio_input_dropout: Probability that a target audio token's input embedding is zeroed in training.
        text_hint: Add the text hints (above) to the audio inputs.
        hint_pointer: Text-aligned hints with a pointer head (above; needs ``text_hint``); ``forward``
            then needs ``text_starts``.
        hint_context: The hints also carry the next text token and the dwell (above; needs ``text_hint``).
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
        audio_codebooks: int = 1,
        text_ctc_weight: float = 0.0,
        align_weight: float = 0.0,
        align_layers: list[int] | None = None,
        align_heads: int = 1,
        align_sigma: float = 0.2,
        audio_input_dropout: float = 0.0,
        text_hint: bool = False,
        hint_pointer: bool = False,
        hint_context: bool = False,
    ) -> None:
        super().__init__()
        if text_ctc_weight < 0:
            raise ValueError(f"text_ctc_weight must be >= 0, got {text_ctc_weight}")
        if align_weight < 0:
            raise ValueError(f"align_weight must be >= 0, got {align_weight}")
        self.align_layers = list(range(1, layers) if align_layers is None else align_layers)
        if align_weight > 0 and (not self.align_layers or not set(self.align_layers) <= set(range(layers))):
            raise ValueError(f"align_layers must be a non-empty list of block indices in [0, {layers}), "
                             f"got {align_layers}")  # fmt: skip
        if align_weight > 0 and not 1 <= align_heads <= heads:
            raise ValueError(f"align_heads must be in [1, {heads}], got {align_heads}")
        if align_sigma <= 0:
            raise ValueError(f"align_sigma must be > 0, got {align_sigma}")
        if hint_pointer and not text_hint:
            raise ValueError("hint_pointer=true places the text hints: it needs text_hint=true")
        if hint_context and not text_hint:
            raise ValueError("hint_context=true widens the text hints: it needs text_hint=true")
        if not 0 <= audio_input_dropout < 1:
            raise ValueError(f"audio_input_dropout must be in [0, 1), got {audio_input_dropout}")
        self.align_weight, self.align_heads, self.align_sigma = align_weight, align_heads, align_sigma
        self.audio_input_dropout = audio_input_dropout
        self.speaker_encoder = speaker_encoder
        self.audio_vocab_size, self.max_len = audio_vocab_size, max_len
        self.eos_id, self.bos_id = audio_vocab_size, audio_vocab_size + 1
        self.speaker_proj = nn.Linear(speaker_encoder.out_dim, dim)
        self.text_emb = nn.Embedding(text_vocab_size, dim)
        self.audio_emb = CodeEmbedding(audio_vocab_size, dim, audio_codebooks, specials=2)
        # the head's classes: the first code, then EOS at index C (= eos_id when q = 1)
        self.code_size, self.code_eos = self.audio_emb.size, self.audio_emb.size
        self.rope = RotaryEmbedding(dim // heads, rope_base)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, ffn_hidden=ffn_hidden, dropout=dropout) for _ in range(layers)
        )
        self.norm = RMSNorm(dim)
        self.head = nn.Linear(dim, self.code_size + 1, bias=False)
        self.next_code_heads = nn.ModuleList(
            NextCodeHead(dim, self.code_size, j) for j in range(1, audio_codebooks)
        )
        self.text_ctc_weight = text_ctc_weight
        self.text_ctc = nn.Linear(dim, text_vocab_size) if text_ctc_weight > 0 else None
        # text hints: the text vocabulary plus an end id; audio tokens per text token (moving average)
        self.hint_emb = nn.Embedding(text_vocab_size + 1, dim) if text_hint else None
        if text_hint:
            self.register_buffer("hint_rate", torch.tensor(0.0))
        self.advance_head = nn.Linear(dim, MAX_ADVANCE + 1) if hint_pointer else None
        self.hint_next_emb = nn.Embedding(text_vocab_size + 1, dim) if hint_context else None
        self.dwell_emb = nn.Embedding(MAX_DWELL + 1, dim) if hint_context else None
        # small embeddings and head: training starts from a near-uniform prediction (loss ~ ln(V + 1))
        hint_embs = (self.hint_emb, self.hint_next_emb, self.dwell_emb)
        for emb in (self.text_emb, self.audio_emb, *self.audio_emb.rest, self.head, *hint_embs):
            if emb is None:
                continue
            nn.init.normal_(emb.weight, std=0.02)

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

    def _blocks(self, x, *, rope, mask=None, is_causal=False, cached=False) -> torch.Tensor:
        """The blocks and the final norm; ``cached``: through every block's KV cache (generation)."""
        for block in self.blocks:
            x = block(
                x, rope=rope, mask=mask, is_causal=is_causal, cache=block.attn.kv_cache if cached else None
            )
        return self.norm(x)

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
        text_starts: torch.Tensor | None = None,
    ) -> AROutput:
        """Teacher-forced loss on the target audio tokens and EOS.

        Args:
            speaker: ``(b, c)`` speaker vectors.
            text, text_lens: ``(b, n)`` target-text BPE ids (right-padded), ``(b,)``.
            audio_tokens, audio_lens: ``(b, k)`` target audio tokens, ``(b,)``.
            prompt_text, prompt_text_lens: ``(b, n_p)`` prompt transcript and lengths (0 = no prompt).
            prompt_tokens, prompt_lens: ``(b, k_p)`` prompt audio tokens and lengths.
            text_starts: ``(b, n)`` the audio token where each text token starts (``hint_pointer`` only).

        Returns:
            ``AROutput`` with logits ``(b, k + 1, C + 1)``.

        Raises:
            ValueError: a ``hint_pointer`` model without ``text_starts``.
        """
        if self.advance_head is not None and text_starts is None:
            raise ValueError("a hint_pointer model trains on text_starts: give the batch an 'alignments' "
                             "feature (scripts/encode.py kind=alignments)")  # fmt: skip
        prefix = self._prefix(speaker, text, text_lens, prompt_text, prompt_text_lens, prompt_tokens,
                              prompt_lens)  # fmt: skip
        x, _, starts = pack([*prefix, (self._audio_inputs(audio_tokens), audio_lens)])
        pointer, steps = None, int(audio_lens.max()) + 1
        if self.advance_head is not None:
            pointer = self._pointer(text_starts, text_lens, audio_lens, steps)
        elif self.hint_emb is not None:
            pointer = self._spread(text_lens, audio_lens, steps)
        if self.hint_emb is not None:
            x = self._add_hints(x, starts[-1] - 1, audio_lens, text, text_lens, pointer)
            if self.training:
                self._track_hint_rate(audio_lens, text_lens)
        positions = torch.arange(x.shape[1], device=x.device)[None]
        rope = self.rope.angles(positions)
        align = None
        if self.align_weight > 0:
            h, probs = self._blocks_with_attention(x, rope)
            # the text is segment 1 (prompt text, text), the audio steps start at BOS (prompt tokens, target)
            text_lens_all = text_lens + (prompt_text_lens if prompt_text is not None else 0)
            steps = audio_lens + (prompt_lens if prompt_tokens is not None else 0)
            bos = starts[2 if prompt_text is None else 3]
            align = self._align_loss(probs, bos, steps, starts[1], text_lens_all)
        else:
            h = self._blocks(x, rope=rope, is_causal=True)
        k = audio_tokens.shape[1]
        # position p predicts the token at p + 1: audio token j (and EOS at j = k) from start - 1 + j
        gather = (starts[-1][:, None] - 1 + torch.arange(k + 1, device=x.device)).clamp(max=x.shape[1] - 1)
        h = torch.gather(h, 1, gather[..., None].expand(-1, -1, h.shape[-1]))
        logits = self.head(h)
        offsets = torch.arange(k + 1, device=x.device)[None]
        tokens = F.pad(audio_tokens.long(), (0, 1))
        is_token = offsets < audio_lens[:, None]
        codes = split_codes(tokens.masked_fill(~is_token, 0), self.code_size, self.audio_emb.codebooks)
        # the head's targets: the first code, EOS at the end, nothing past it
        targets = torch.where(offsets == audio_lens[:, None], self.code_eos, codes[..., 0])
        targets = targets.masked_fill(offsets > audio_lens[:, None], IGNORE)
        loss = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE)
        right = logits.argmax(-1) == targets
        if self.next_code_heads:
            rest_loss, rest_right = next_code_loss(self.next_code_heads, h, codes, is_token)
            loss, right = loss + rest_loss, right & (rest_right.all(-1) | ~is_token)
        accuracy = right[targets != IGNORE].float().mean()  # whole tokens (every code) and EOS
        advance = None
        if self.advance_head is not None:
            advance = self._advance_loss(h[:, :k], pointer, audio_lens)
        text_ctc = self._text_ctc(h[:, :k], audio_lens, text, text_lens)
        return AROutput(loss, accuracy, logits, text_ctc, align, advance)

    @staticmethod
    def _pointer(text_starts, text_lens, total, steps) -> torch.Tensor:
        """``(b, steps)`` the text token under the pointer at audio token j: the last one started at or
        before j (0 before the first), and ``text_lens`` (the end) from j = ``total (b,)`` on."""
        j = torch.arange(steps, device=text_starts.device)
        valid = torch.arange(text_starts.shape[1], device=j.device)[None] < text_lens[:, None]
        started = (text_starts[:, None, :] <= j[None, :, None]) & valid[:, None, :]
        pointer = (started.sum(-1) - 1).clamp(min=0)
        return torch.where(j[None] >= total[:, None], text_lens[:, None], pointer)

    @staticmethod
    def _spread(text_lens, total, steps) -> torch.Tensor:
        """``(b, steps)`` the text token at audio token j's share of the text, ``floor((j + 1/2) n /
        total)``, and ``text_lens`` (the end) from j = ``total (b,)`` on: the plain hints' pointer."""
        j = torch.arange(steps, device=text_lens.device)[None]
        share = (j.float() + 0.5) / total[:, None].clamp(min=1).float()
        pointer = (share * text_lens[:, None].float()).floor().long()
        return torch.where(j >= total[:, None], text_lens[:, None], pointer)

    def _advance_loss(self, h, pointer, audio_lens) -> torch.Tensor:
        """Cross-entropy of the pointer head at the ``h (b, k, d)`` that predict audio tokens 0..k-1: how far
        the pointer moves before the next one (``MAX_ADVANCE`` or more in the last class)."""
        k = h.shape[1]
        advance = (pointer[:, 1 : k + 1] - pointer[:, :k]).clamp(0, MAX_ADVANCE)
        advance = advance.masked_fill(torch.arange(k, device=h.device)[None] >= audio_lens[:, None], IGNORE)
        return F.cross_entropy(self.advance_head(h).float().transpose(1, 2), advance, ignore_index=IGNORE)

    def _hint_ids(self, text, text_lens, pointer) -> torch.Tensor:
        """``(b, s)`` hint ids: the text token under ``pointer (b, s)`` (``_spread`` or ``_pointer``), the end
        id (``text_vocab_size``) where it is past the text."""
        ids = text.gather(1, pointer.clamp(0, max(text.shape[1] - 1, 0)))
        return ids.masked_fill(pointer >= text_lens[:, None], self.hint_emb.num_embeddings - 1)

    def _hints(self, text, text_lens, pointer, dwell=None) -> torch.Tensor:
        """The hints ``(b, s, d)`` under ``pointer (b, s)``: the embedding of ``_hint_ids``, and with
        ``hint_context`` those of the next token's id and of ``dwell (b, s)`` (by default ``_dwell(pointer)``,
        for a pointer from the first audio token on)."""
        hints = self.hint_emb(self._hint_ids(text, text_lens, pointer))
        if self.dwell_emb is None:
            return hints
        dwell = _dwell(pointer) if dwell is None else dwell
        following = self.hint_next_emb(self._hint_ids(text, text_lens, pointer + 1))
        return hints + following + self.dwell_emb(dwell.clamp(max=MAX_DWELL))

    def hint_total(self, text_lens: torch.Tensor) -> torch.Tensor:
        """The audio tokens ``(b,)`` generation's hints spread the text over: ``hint_rate`` per text token."""
        return (self.hint_rate * text_lens.float()).round().long().clamp(min=1)

    @torch.no_grad()
    def _track_hint_rate(self, audio_lens: torch.Tensor, text_lens: torch.Tensor) -> None:
        """Moves ``hint_rate`` 1 % toward the batch's audio tokens per text token (the first sets it)."""
        rate = audio_lens.sum().float() / text_lens.sum().clamp(min=1).float()
        self.hint_rate.copy_(torch.where(self.hint_rate > 0, 0.99 * self.hint_rate + 0.01 * rate, rate))

    def _add_hints(self, x, start, audio_lens, text, text_lens, pointer):
        """Adds the hints under ``pointer (b, k + 1)`` of the target tokens and EOS (``_hints``) to their
        inputs, from ``start (b,)``."""
        j = torch.arange(pointer.shape[1], device=x.device)[None]
        hint = self._hints(text, text_lens, pointer) * (j <= audio_lens[:, None])[..., None]
        pos = (start[:, None] + j).clamp(max=x.shape[1] - 1)
        return x.scatter_add(1, pos[..., None].expand(-1, -1, x.shape[-1]), hint.to(x.dtype))

    def _audio_inputs(self, audio_tokens: torch.Tensor) -> torch.Tensor:
        """Target tokens ``(b, k)`` -> input embeddings ``(b, k, d)``, whole tokens dropped in training."""
        x = self.audio_emb(audio_tokens.long())
        p = self.audio_input_dropout
        if self.training and p > 0:
            keep = torch.rand(*x.shape[:2], 1, device=x.device) >= p
            x = x * keep.to(x.dtype) / (1 - p)
        return x

    def _blocks_with_attention(self, x, rope) -> tuple[torch.Tensor, torch.Tensor]:
        """``_blocks`` (causal, no cache) that also returns the guided heads' attention weights
        ``(b, len(align_layers) * align_heads, t, t)``."""
        probs = []
        for i, block in enumerate(self.blocks):
            if i in self.align_layers:
                probs.append(block.attn.causal_probabilities(block.attn_norm(x), self.align_heads, rope=rope))
            x = block(x, rope=rope, is_causal=True)
        return self.norm(x), torch.cat(probs, 1)

    def _align_loss(self, probs, query_start, query_lens, key_start, key_lens) -> torch.Tensor:
        """Guided attention loss of ``probs (b, g, t, t)`` between the audio steps (``query_lens (b,)`` from
        position ``query_start (b,)``) and the text (``key_lens (b,)`` from ``key_start (b,)``)."""
        b, g, t, _ = probs.shape

        def span(start, lens):  # (b, max lens) positions, clamped into the sequence
            return (start[:, None] + torch.arange(int(lens.max()), device=probs.device)).clamp(max=t - 1)

        queries, keys = span(query_start, query_lens), span(key_start, key_lens)
        rows = probs.gather(2, queries[:, None, :, None].expand(b, g, -1, t))
        attn = rows.gather(3, keys[:, None, None, :].expand(b, g, queries.shape[1], -1))
        return guided_attention_loss(attn, query_lens, key_lens, self.align_sigma)

    def _text_ctc(self, h, audio_lens, text, text_lens) -> torch.Tensor | None:
        """CTC loss of the target text ``(b, n)`` from the hidden states ``h (b, k, d)`` of the positions that
        predict the audio tokens (mean over rows of the per-target-token loss); None without the head."""
        if self.text_ctc is None:
            return None
        log_probs = self.text_ctc(h).float().log_softmax(-1).transpose(0, 1)  # (k, b, text vocab)
        return F.ctc_loss(log_probs, text, audio_lens, text_lens, blank=0, zero_infinity=True)

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
        """Frees the KV caches and the blocks' decoding copies of their weights."""
        for block in self.blocks:
            block.attn.kv_cache = None
            block.drop_step_weights()

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

    def _fit_limits(self, prefix_len: int, min_new: torch.Tensor, max_new: torch.Tensor) -> _Limits:
        """Caps the ``_length_limits`` so that the prefix and the new tokens fit in ``max_len`` positions.

        Raises:
            ValueError: the prefix alone leaves no room.
        """
        room = self.max_len - prefix_len
        if int(max_new.max()) > room:
            if room <= 0:
                raise ValueError(
                    f"prefix of {prefix_len} positions leaves no room within max_len {self.max_len}"
                )
            max_new = max_new.clamp(max=room)
        return _Limits(min_new, max_new, int(min_new.max()), int(max_new.min()))

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
        eos_threshold: float | None = None,
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
            eos_threshold: A row stops as soon as EOS's probability reaches this share of the most likely
                token's (before temperature and filters; ``1.0``: when EOS is the most likely token), even
                if the draw picked another token. ``None``: only a drawn EOS stops a row.
            min_tokens_per_text, max_tokens_per_text, max_tokens: Length limits, see above.
            generator: Source of randomness.

        Returns:
            As the generator's ``StopIteration.value``: ``(tokens (b, k) int64, token_lens (b,))``, only the
            new tokens (no prompt, no EOS), 0-padded.
        """
        if eos_threshold is not None and not 0 < eos_threshold <= 1:
            raise ValueError(f"eos_threshold must be in (0, 1] or None, got {eos_threshold}")
        prefix = self._prefix(speaker, text, text_lens, prompt_text, prompt_text_lens, prompt_tokens,
                              prompt_lens)  # fmt: skip
        x, lens, _ = pack(prefix, left_pad=True)
        bounds = self._length_limits(text_lens, min_tokens_per_text, max_tokens_per_text, max_tokens)
        limits = self._fit_limits(x.shape[1], *bounds)
        hints = None
        if self.advance_head is not None:
            hints = _PointerHints(self, text, text_lens, x.dtype)
        elif self.hint_emb is not None:
            spread = self._spread(text_lens, self.hint_total(text_lens), int(limits.max_new.max()) + 1)
            hints = _SpreadHints(self._hints(text, text_lens, spread).to(x.dtype))
        if hints is not None:
            x = torch.cat([x[:, :-1], x[:, -1:] + hints.first()[:, None]], 1)
        h, keys = self._prefill(x, lens, int(limits.max_new.max()))
        sampling = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "window": ras_window,
                    "threshold": ras_threshold, "generator": generator}  # fmt: skip
        eos_margin = None if eos_threshold is None else math.log(eos_threshold)
        out = yield from self._decode(h, self._decoding(keys), limits, sampling, eos_margin, hints)
        return self._trim(out, limits.max_new)

    def _prefill(self, x: torch.Tensor, lens: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Runs the left-padded prefix ``x (b, t, d)`` (``lens (b,)`` real positions) into emptied caches of
        ``s >= t + steps`` slots.

        Returns:
            ``(h (b, d), keys (b, s))``: the hidden state that predicts the first new token, and the slots
            that hold or will hold a real token (False on each row's left padding), for ``slot_mask``.
        """
        b, t = x.shape[:2]
        self._ready_cache(b, t + steps, x.dtype)
        # every slot of the caches (a kept cache may be longer than t + steps)
        slots = torch.arange(self.blocks[0].attn.kv_cache.max_len, device=x.device)
        keys = slots[None] >= (t - lens)[:, None]
        rope = self.rope.angles(positions_from_mask(keys[:, :t]))
        # the prefix attends over its own t slots only (the rest are empty)
        h = self._blocks(x, rope=rope, mask=slot_mask(keys[:, :t], slots[:t]), cached=True)
        return h[:, -1], keys

    def _lean_tables(self, slots: int) -> _Lean:
        """What ``TransformerBlock.step`` reads besides the caches, for one generation of ``slots``."""
        norm = self.norm
        cos, sin = self.rope.packed_angles(torch.arange(slots, device=norm.weight.device))
        d = norm.weight.shape[0]
        floor = torch.tensor((d * norm.eps) ** 0.5, device=norm.weight.device)
        return _Lean([block.step_weights() for block in self.blocks], cos, sin, norm.weight * d**0.5, floor)

    def _decode_step(
        self, token: torch.Tensor, keys: torch.Tensor, pad: torch.Tensor, hint: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One decoding step through the blocks' ``forward``, with static shapes (``torch.compile`` traces it
        once): ``token (b,)`` into the caches' next slot; returns the hidden state ``(b, d)`` that predicts
        the next token.

        Args:
            keys: ``(b, s)`` from ``_prefill``.
            pad: ``(b,)`` each row's left padding (its False keys).
        """
        slot = self.blocks[0].attn.kv_cache.pos  # (1,): every layer's cache is at the same slot
        rope = self.rope.angles((slot - pad)[:, None])  # RoPE counts each row's real tokens from 0
        h = self._blocks(
            self._step_input(token, hint)[:, None], rope=rope, mask=slot_mask(keys, slot), cached=True
        )
        return h[:, 0]

    def _step_input(self, token: torch.Tensor, hint: torch.Tensor | None) -> torch.Tensor:
        """The input ``(b, d)`` of a decoding step: ``token (b,)``'s embedding, plus its text hint if any."""
        x = self.audio_emb(token)
        return x if hint is None else x + hint

    def _lean_decode_step(self, token, keys, pad, lean: _Lean, filled: int, hint=None) -> torch.Tensor:
        """``_decode_step`` through the blocks' lean ``step`` (CPU), attending over the ``filled`` slots
        only (the caller counts them on the host): fewer keys, and no mask at all without padding.

        Args:
            pad: ``(b,)``, or None when no row is padded.
        """
        position = filled - 1 if pad is None else filled - 1 - pad  # RoPE: real tokens from 0
        rope = lean.cos[position], lean.sin[position]
        mask = None if pad is None else keys[:, None, None, :filled]
        x = self._step_input(token, hint)
        for block, weights in zip(self.blocks, lean.weights, strict=True):
            x = block.step(x, weights, rope=rope, mask=mask, cache=block.attn.kv_cache, filled=filled)
        return unit_rms(x, lean.norm_floor) * lean.norm_gain

    def _next_token(
        self, h, history, i: int, limits: _Limits, sampling: dict, eos_margin: float | None
    ) -> torch.Tensor:
        """Step ``i``'s tokens ``(b,)`` from the hidden states ``h (b, d)``: EOS is masked for the rows that
        have not made ``min_new`` tokens yet, taken where its log-probability is within ``eos_margin``
        (<= 0) of the most likely first code's, and forced for the rows that reached ``max_new``.
        Repetition-aware sampling looks at first codes; the further codes are drawn with the same
        temperature and filters, each given the ones before."""
        logits = self.head(h).float()
        if i < limits.min_steps:
            logits[:, self.code_eos].masked_fill_(i < limits.min_new, float("-inf"))
        likely_eos = None
        if eos_margin is not None:
            likely_eos = logits[:, self.code_eos] - logits.max(-1).values >= eos_margin
        first = ras_next(logits, history % self.code_size if self.next_code_heads else history, **sampling)
        if likely_eos is not None:
            first = first.masked_fill(likely_eos, self.code_eos)
        if i >= limits.first_cap:
            first = first.masked_fill(limits.max_new <= i, self.code_eos)
        if not self.next_code_heads:
            return first
        eos = first == self.code_eos
        codes = first.masked_fill(eos, 0)[:, None]
        draw = {key: sampling[key] for key in ("temperature", "top_k", "top_p", "generator")}
        for head in self.next_code_heads:
            codes = torch.cat([codes, sample_next(head(h, codes).float(), **draw)[:, None]], -1)
        return join_codes(codes, self.code_size).masked_fill(eos, self.eos_id)

    def _decoding(self, keys: torch.Tensor) -> _Decoding:
        """This generation's decoding state; the blocks' lean ``step`` on CPU, where per-op overhead
        dominates (``scripts/bench/bench_ar.py``), else their ``forward`` (static shapes)."""
        pad = (~keys).sum(1)  # (b,) each row's left padding
        if keys.device.type != "cpu":
            return _Decoding(keys, pad, None, None)
        return _Decoding(keys, pad, self._lean_tables(keys.shape[1]), pad if bool(pad.any()) else None)

    def _step(self, token: torch.Tensor, filled: int, decoding: _Decoding, hint=None) -> torch.Tensor:
        """One decoding step: ``token (b,)`` into slot ``filled - 1`` of the caches -> the hidden state
        ``(b, d)`` that predicts the next token."""
        if decoding.lean is None:
            if hint is None:  # the call a CUDA-graphed step replaces (gpu_check_sections.py)
                return self._decode_step(token, decoding.keys, decoding.pad)
            return self._decode_step(token, decoding.keys, decoding.pad, hint)
        return self._lean_decode_step(token, decoding.keys, decoding.lean_pad, decoding.lean, filled, hint)

    def _decode(
        self,
        h,
        decoding: _Decoding,
        limits: _Limits,
        sampling: dict,
        eos_margin: float | None = None,
        hints: _SpreadHints | _PointerHints | None = None,
    ) -> Generator[torch.Tensor, None, torch.Tensor]:
        """Samples and feeds back one token per step from the hidden state ``h (b, d)`` of the prefix,
        yielding each ``(b,)``, until every row has made an EOS or ``max_new`` tokens; returns the tokens
        ``(b, steps)`` (anything after a row's EOS is junk). ``hints``: the text hints, ``hints.after(h, i)``
        added to the input of step ``i``'s token (``hints.first()`` went into the prefix)."""
        b, steps = h.shape[0], int(limits.max_new.max())
        prefix = self.blocks[0].attn.kv_cache.length
        out = torch.zeros(b, steps, dtype=torch.long, device=h.device)
        done = torch.zeros(b, dtype=torch.bool, device=h.device)
        for i in range(steps):
            token = self._next_token(h, out[:, :i], i, limits, sampling, eos_margin)
            out[:, i] = token
            yield token
            done |= token == self.eos_id
            if i == steps - 1 or bool(done.all()):
                break
            h = self._step(token, prefix + i + 1, decoding, None if hints is None else hints.after(h, i))
        return out

    def _trim(self, out: torch.Tensor, max_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens (b, k), token_lens (b,))``: each row up to its first EOS (a row without one reached
        ``max_new``: every shorter row is forced), 0-padded."""
        eos = out == self.eos_id
        out_lens = torch.where(eos.any(1), eos.int().argmax(1), max_new)
        k = int(out_lens.max()) if out.shape[0] else 0
        out = out[:, :k].masked_fill(torch.arange(k, device=out.device)[None] >= out_lens[:, None], 0)
        return out, out_lens
