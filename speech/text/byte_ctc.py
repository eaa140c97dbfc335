"""UTF-8 byte targets for CTC heads: a fixed 257-symbol vocabulary (blank + 256 bytes) for every language.

A byte vocabulary needs nothing from the data, so a CTC model's output size is known before the corpus is
seen and a checkpoint never depends on a side file. Hanzi cost three bytes each, which a 50 Hz encoder
affords (about 15 bytes/s for Mandarin).
"""

from __future__ import annotations

from collections.abc import Sequence

from speech.text.normalize import base_language
from speech.text.wer_norm import normalize_for_wer

BLANK = 0
VOCAB_SIZE = 257
CHARACTER_LANGUAGES = frozenset({"zh", "ja"})  # scored per character: the spaces between them go


def judge_target(text: str, language: str) -> str:
    """The string a CTC head over bytes learns to emit for ``text`` (the CTC judge, the audio tokenizer):
    the WER scorer's normalization (``speech.text.wer_norm``), without the per-character spaces of Chinese
    and Japanese."""
    lang = base_language(language)
    norm = normalize_for_wer(text, lang)
    return norm.replace(" ", "") if lang in CHARACTER_LANGUAGES else norm


def text_to_ids(text: str) -> list[int]:
    """UTF-8 bytes shifted by one (0 is the CTC blank)."""
    return [b + 1 for b in text.encode("utf-8")]


def ids_to_text(ids: Sequence[int]) -> str:
    """Inverse of ``text_to_ids``; blanks are skipped and broken UTF-8 sequences dropped."""
    return bytes(i - 1 for i in ids if i != BLANK).decode("utf-8", errors="ignore")


def greedy_decode(ids: Sequence[int]) -> str:
    """CTC greedy decoding of per-frame argmax ids: merge repeats, drop blanks, decode bytes."""
    out, prev = [], None
    for i in ids:
        if i != prev and i != BLANK:
            out.append(i)
        prev = i
    return ids_to_text(out)
