"""Where each text token starts in the audio: CTC forced alignment, carried from bytes to BPE tokens.

The audio tokenizer's CTC head reads its 25 Hz tokens as UTF-8 bytes of the judge's normalized transcript
(``speech.text.byte_ctc``; lower case, punctuation deleted). Forcing that transcript through the head's
log-probabilities (Viterbi over the usual CTC states: blank, byte, blank, byte, ...) gives the frame where
each byte is first emitted, which is the audio token where it is said. The AR model's text is the raw
transcript in BPE tokens; ``token_starts`` carries the byte frames over to them through the characters both
strings share: a BPE token starts where its first character that survives normalization is said, and a token
with none (punctuation, a lone space) where the next surviving character is.

Legend: T CTC frames, V CTC vocabulary, L target bytes, n BPE tokens, c characters.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from speech.text.byte_ctc import judge_target

NEG_INF = -np.inf


def forced_align(log_probs: np.ndarray, targets: Sequence[int], blank: int = 0) -> np.ndarray:
    """The most likely CTC path of ``targets`` through ``log_probs``: the frame where each target is first
    emitted.

    Args:
        log_probs: ``(T, V)`` log-probabilities of one utterance (its valid frames only).
        targets: ``L`` target ids, none of them ``blank``.
        blank: The blank id.

    Returns:
        ``(L,)`` int64 frames, non-decreasing, strictly increasing between equal neighbours.

    Raises:
        ValueError: no path fits (``T`` is shorter than ``L`` plus the repeats that need a blank between
            them), or a target is the blank.
    """
    targets = np.asarray(targets, dtype=np.int64)
    t_len, length = log_probs.shape[0], len(targets)
    if length == 0:
        return np.zeros(0, dtype=np.int64)
    if (targets == blank).any():
        raise ValueError(f"CTC targets may not hold the blank id {blank}")
    repeats = int((targets[1:] == targets[:-1]).sum())
    if t_len < length + repeats:
        raise ValueError(f"{t_len} CTC frames cannot hold {length} targets with {repeats} repeats")
    states = np.full(2 * length + 1, blank, dtype=np.int64)
    states[1::2] = targets
    s_len = len(states)
    # a state may be entered from itself, the one before, and (a byte, not after the same byte) two before
    skip = np.zeros(s_len, dtype=bool)
    skip[3::2] = targets[1:] != targets[:-1]
    score = np.full(s_len, NEG_INF)
    score[:2] = log_probs[0, states[:2]]
    back = np.zeros((t_len, s_len), dtype=np.int8)  # 0 stay, 1 from s - 1, 2 from s - 2
    for t in range(1, t_len):
        one = np.concatenate([[NEG_INF], score[:-1]])
        two = np.where(skip, np.concatenate([[NEG_INF, NEG_INF], score[:-2]]), NEG_INF)
        options = np.stack([score, one, two])
        back[t] = options.argmax(0)
        score = options.max(0) + log_probs[t, states]
    s = s_len - 1 if score[-1] >= score[-2] else s_len - 2
    frames = np.zeros(length, dtype=np.int64)
    for t in range(t_len - 1, -1, -1):
        if s % 2 == 1:
            frames[s // 2] = t  # ends at the first frame of the state on the way back
        s -= int(back[t, s])
    return frames


def char_map(text: str, normalized: str) -> np.ndarray:
    """For each character of ``text``, the index in ``normalized`` of the first character at or after it
    that survives (``len(normalized)`` past the last).

    ``normalized`` must be ``text`` with characters deleted and letters lower-cased (whitespace runs may
    collapse): characters are matched greedily, left to right. Where that fails (a normalization that
    adds or reorders characters), characters map by their share of the string instead.

    Returns:
        ``(c,)`` int64 for ``c = len(text)``.
    """
    out = np.zeros(len(text), dtype=np.int64)
    p = 0
    for i, ch in enumerate(text):
        out[i] = p
        if p < len(normalized) and ch.lower() == normalized[p]:
            p += 1
    if p == len(normalized):
        return out
    share = (np.arange(len(text)) + 0.5) / max(len(text), 1)
    return np.floor(share * len(normalized)).astype(np.int64)


def token_starts(
    offsets: Sequence[tuple[int, int]], text: str, normalized: str, byte_frames: np.ndarray, end: int
) -> np.ndarray:
    """Where each BPE token of ``text`` starts in the audio.

    Args:
        offsets: ``n`` character spans ``(start, stop)`` of the tokens in ``text``.
        text: The transcript the BPE encoded.
        normalized: The CTC target string (``text`` normalized as ``char_map`` expects).
        byte_frames: ``(L,)`` the audio token where each UTF-8 byte of ``normalized`` is first said.
        end: Where the audio ends (a token with no surviving character after it starts there).

    Returns:
        ``(n,)`` int64 audio-token indices, non-decreasing, in ``[0, end]``.

    Raises:
        ValueError: ``byte_frames`` does not have one frame per byte of ``normalized``.
    """
    encoded = normalized.encode("utf-8")
    if len(byte_frames) != len(encoded):
        raise ValueError(f"{len(byte_frames)} byte frames for a {len(encoded)}-byte target")
    # the frame of each normalized character (its first byte), then `end` past the last
    first_byte = np.cumsum([0] + [len(ch.encode("utf-8")) for ch in normalized])[:-1]
    char_frames = np.append(np.asarray(byte_frames, dtype=np.int64)[first_byte], end)
    chars = char_map(text, normalized)
    starts = np.array([char_frames[chars[a]] if a < len(text) else end for a, _ in offsets], dtype=np.int64)
    return np.clip(np.maximum.accumulate(starts) if len(starts) else starts, 0, end)


def text_starts(bpe, text: str, language: str, byte_frames: np.ndarray, end: int) -> np.ndarray:
    """``token_starts`` of ``bpe.encode(text)`` (a ``speech.text.bpe.TextBPE`` over spelled text), from the
    byte frames of ``text``'s CTC target (``judge_target``) that ``scripts/encode.py kind=alignments``
    caches."""
    return token_starts(bpe.offsets(text), text, judge_target(text, language), byte_frames, end)


def even_frames(n: int, end: int) -> np.ndarray:
    """``(n,)`` the frame of each of ``n`` targets spread evenly over ``end`` frames,
    ``floor((i + 1/2) end / n)``: what stands in for an alignment where no CTC path fits."""
    return np.floor((np.arange(n) + 0.5) * end / max(n, 1)).astype(np.int64)


def even_starts(n: int, end: int) -> np.ndarray:
    """``(n,)`` where ``n`` text tokens spread evenly over ``end`` audio tokens start (the text hints'
    ``floor((j + 1/2) n / end)`` read the other way): ``ceil(i * end / n - 1/2)``."""
    return np.clip(np.ceil(np.arange(n) * end / max(n, 1) - 0.5), 0, end).astype(np.int64)
