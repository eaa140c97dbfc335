"""Request text -> what the AR model reads: pronunciation substitutions, pauses, normalization, BPE.

The order matters: substitutions apply to the text as the user wrote it (so an entry for "Dr." matches
before "Dr." becomes "Doctor"); pause markers then split the text; each piece is normalized the way the
data pipeline normalizes transcripts (``normalize_text(text, language)``, speech/data/manifest.py) and
encoded with the text BPE without special tokens, as the training batches are (speech/data/dataset.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from speech.text.bpe import TextTokenizer
from speech.text.normalize import normalize_text
from speech.text.pauses import Pause, parse_pauses


@dataclass(frozen=True)
class Segment:
    """A piece of speech between pauses: its normalized text and BPE ids."""

    text: str
    tokens: list[int]


def apply_pronunciations(text: str, pairs: list[tuple[str, str]]) -> str:
    """Replaces each written form by its spoken form in one pass (a replacement is never rewritten).

    Args:
        text: Raw request text.
        pairs: ``(written, spoken)``, longest written form first so it wins over its prefixes.
    """
    if not pairs:
        return text
    table = dict(pairs)
    pattern = re.compile("|".join(re.escape(written) for written, _ in pairs))
    return pattern.sub(lambda m: table[m[0]], text)


def encode_text(text: str, language: str, tokenizer: TextTokenizer) -> Segment:
    """Normalizes and BPE-encodes one piece of text.

    Raises:
        ValueError: the text normalizes to nothing the BPE can encode.
    """
    normalized = normalize_text(text, language)
    tokens = tokenizer.encode(normalized)
    if not tokens:
        raise ValueError(f"text {text!r} normalizes to nothing to speak")
    return Segment(normalized, tokens)


def split_text(
    text: str, language: str, tokenizer: TextTokenizer, pairs: list[tuple[str, str]] = ()
) -> list[Segment | Pause]:
    """The request text as segments to synthesize and pauses between them.

    Args:
        text: Raw text, possibly with ``<#x#>`` pause markers.
        language: Language code for normalization.
        tokenizer: The AR model's text BPE.
        pairs: Pronunciation substitutions (``SynthesisRequest.pronunciations()``).

    Returns:
        ``Segment`` s alternating with ``Pause`` s, starting and ending with a segment.
    """
    parts = parse_pauses(apply_pronunciations(text, list(pairs)))
    return [p if isinstance(p, Pause) else encode_text(p.text, language, tokenizer) for p in parts]
