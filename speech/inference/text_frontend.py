"""Request text -> what the AR model reads: substitutions, pauses, long-text cuts, normalization, BPE.

The order matters: substitutions apply to the text as the user wrote it (so an entry for "Dr." matches
before "Dr." becomes "Doctor"); pause markers then split the text; a piece too long for the AR model is cut
into sentence-sized chunks of raw text (``max_tokens``); each piece or chunk is normalized the way the
data pipeline normalizes transcripts (``normalize_text(text, language)``, speech/data/manifest.py) and
encoded with the text BPE without special tokens, as the training batches are (speech/data/dataset.py).

What can be spoken has one rule, ``check_speakable``: the normalized text must hold a letter, digit, CJK
character or kana (``speech.text.pauses.speakable``). Normalization comes first because it can make a symbol
speakable ("&" -> "and") or remove everything (a zero-width space).

Control characters (NUL, escape, DEL, ...; tabs and line breaks are whitespace and fine) are refused by
``check_characters`` rather than dropped: normalization would delete them and join the words around them
("hello\\0world" -> "helloworld"), and in a request they are a client's bug, not text.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from itertools import pairwise

from speech.text.bpe import TextBPE
from speech.text.normalize import normalize_text
from speech.text.pauses import Pause, TextSegment, parse_pauses, speakable

_CLOSERS = "\"'”’)\\]」』）"
# A full stop after an abbreviation that normalize_text expands ("Dr. Smith") ends no sentence.
_ABBREVIATION = r"(?<!\b(?:Mr|Ms|Dr|Jr|Sr|St|Mt|No|vs))(?<!\b(?:Mrs|e\.g|i\.e))(?<!\bProf)"
# Where long text may be cut, coarsest first: sentence ends and line breaks, clause punctuation, spaces,
# after any CJK character. A cut falls at the end of a match, so punctuation and the whitespace after it
# stay with the text before the cut; ASCII punctuation cuts only before whitespace (not in "3.14", "1,000").
_CUTS = (
    re.compile(rf"{_ABBREVIATION}[.!?;]+[{_CLOSERS}]*(?:\s+|$)|[…。！？；]+[{_CLOSERS}]*\s*|\n\s*"),
    re.compile(rf"[,:]+[{_CLOSERS}]*\s+|[，、：][{_CLOSERS}]*\s*|\s*(?:[—–]+|--+)\s*"),
    re.compile(r"\s+"),
    re.compile(r"[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff01-\uff60]"),
)
# Between words: the two finest cuts.
_WORD_CUTS = re.compile(f"{_CUTS[2].pattern}|{_CUTS[3].pattern}")


@dataclass(frozen=True)
class Segment:
    """A piece of speech between pauses: its normalized text and BPE ids."""

    text: str
    tokens: list[int]


@dataclass(frozen=True)
class _Chunk:
    """Raw text, the BPE length of its normalization and whether that has a letter, digit or CJK character."""

    raw: str
    length: int
    speakable: bool

    def __add__(self, other: _Chunk) -> _Chunk:
        return _Chunk(self.raw + other.raw, self.length + other.length, self.speakable or other.speakable)


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


def check_characters(text: str) -> None:
    """Refuses control characters (Unicode category Cc) other than whitespace: NUL, escape, DEL, C1 codes.

    Raises:
        ValueError: naming the first one, its code point and position.
    """
    for i, ch in enumerate(text):
        if unicodedata.category(ch) == "Cc" and not ch.isspace():
            around = text[max(0, i - 10) : i + 10]
            raise ValueError(
                f"holds the control character U+{ord(ch):04X} at character {i} ({around!r}); control "
                "characters are not text: remove them or put a space (tabs and line breaks are fine)"
            )


def check_speakable(text: str, language: str) -> str:
    """``text`` normalized, if it has something to speak: a letter, digit, CJK character or kana.

    Raises:
        ValueError: it has nothing to speak (only punctuation, symbols, emoji or whitespace).
    """
    normalized = normalize_text(text, language)
    if not speakable(normalized):
        shown = f"it normalizes to {normalized!r}, which" if normalized != text else "it"
        raise ValueError(f"{text!r} has nothing to speak: {shown} has no letter, digit or CJK character")
    return normalized


def encode_text(text: str, language: str, bpe: TextBPE) -> Segment:
    """Normalizes and BPE-encodes one piece of text.

    Raises:
        ValueError: the text has nothing to speak (``check_speakable``).
    """
    normalized = check_speakable(text, language)
    return Segment(normalized, bpe.encode(normalized, language))


def _pieces_to_speak(text: str, language: str, pairs: list[tuple[str, str]]) -> list[TextSegment | Pause]:
    """Substitutions applied, then the text split at its pause markers (``parse_pauses``)."""
    text = apply_pronunciations(text, list(pairs))
    if not text.strip():  # refused by check_speakable's rule, not the parser's own message
        check_speakable(text, language)
    return parse_pauses(text)


def check_text(text: str, language: str, pairs: list[tuple[str, str]] = ()) -> None:
    """What :func:`split_text` refuses, without the BPE: malformed pause markers, or a piece between
    them with nothing to speak.

    Raises:
        ValueError: the text is empty, a piece has nothing to speak, or a marker is malformed or misplaced.
    """
    for part in _pieces_to_speak(text, language, pairs):
        if isinstance(part, TextSegment):
            check_speakable(part.text, language)


def leading_text(text: str, share: float, language: str, bpe: TextBPE, max_tokens: int) -> Segment:
    """The beginning of ``text`` cut between words (after CJK characters): the most words that hold at most
    ``share`` of its characters and at most ``max_tokens`` BPE tokens, but at least the first word with
    something to speak. Used to cut a one-shot transcript along with its audio.

    Raises:
        ValueError: ``text`` has nothing to speak.
    """
    text = text.strip()
    ends = sorted({m.end() for m in _WORD_CUTS.finditer(text)} | {len(text)})
    first = next((i for i, end in enumerate(ends) if speakable(normalize_text(text[:end], language))), -1)

    def encode(i: int) -> Segment:
        return encode_text(text[: ends[i]].strip(), language, bpe)

    within_share = [i for i, end in enumerate(ends) if len(text[:end].rstrip()) <= share * len(text)]
    fits, too_long = first, max([first, *within_share]) + 1  # bisect the last word end that fits max_tokens
    while too_long - fits > 1:
        middle = (fits + too_long) // 2
        if len(encode(middle).tokens) <= max_tokens:
            fits = middle
        else:
            too_long = middle
    return encode(fits)


def split_text(
    text: str,
    language: str,
    bpe: TextBPE,
    pairs: list[tuple[str, str]] = (),
    max_tokens: int | None = None,
) -> list[Segment | Pause]:
    """The request text as segments to synthesize and pauses between them.

    A piece between pause markers longer than ``max_tokens`` BPE tokens (counted after normalization) is
    cut into consecutive segments of its raw text: whole sentences packed greedily; a sentence too long
    alone is cut at clause punctuation, its clauses packed; a clause too long between words; a word too
    long after each CJK character. A chunk with nothing to speak (only punctuation) joins its neighbour.
    Every segment holds at most ``max_tokens`` tokens, except a single word longer than that with its
    punctuation (text is never cut inside a word or a number, nor inside Latin text within CJK text).
    Each segment is normalized alone, so a rule that reads across a word cut ("$5 million") may differ.

    Args:
        text: Raw text, possibly with ``<#x#>`` pause markers.
        language: Language code for normalization.
        bpe: The AR model's text BPE.
        pairs: Pronunciation substitutions (``SynthesisRequest.pronunciations()``).
        max_tokens: Longest segment in BPE tokens, at least 1; ``None`` keeps each piece between pause
            markers whole.

    Returns:
        ``Segment`` s and ``Pause`` s in text order, starting and ending with a segment; a pause stands
        exactly where each marker was, and consecutive segments are the cuts of one long piece.

    Raises:
        ValueError: ``max_tokens`` is not ``None`` or an int >= 1, the text is empty, a piece normalizes
            to nothing to speak, or a pause marker is malformed or misplaced (``PauseMarkerError``).
    """
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise ValueError(f"max_tokens must be None (no cutting) or an int >= 1, got {max_tokens!r}")
    parts: list[Segment | Pause] = []
    for part in _pieces_to_speak(text, language, pairs):
        if isinstance(part, Pause):
            parts.append(part)
        elif max_tokens is None:
            parts.append(encode_text(part.text, language, bpe))
        else:
            parts += _cut_long(part.text, language, bpe, max_tokens)
    return parts


def _cut_long(text: str, language: str, bpe: TextBPE, max_tokens: int) -> list[Segment]:
    """``text`` as segments of at most ``max_tokens`` tokens where possible (see ``split_text``)."""

    def measure(raw: str) -> _Chunk:
        normalized = normalize_text(raw, language)
        return _Chunk(raw, len(bpe.encode(normalized, language)), speakable(normalized))

    def cut(raw: str, level: int) -> list[Segment]:
        """``raw`` cut at ``_CUTS[level]``: runs of pieces that fit are packed, longer pieces cut finer."""
        segments: list[Segment] = []
        run: list[_Chunk] = []
        for chunk in _merge_unspeakable([measure(piece) for piece in _pieces(raw, _CUTS[level])]):
            if chunk.length <= max_tokens or level + 1 == len(_CUTS):
                run.append(chunk)
            else:
                segments += _pack(run, language, bpe, max_tokens) + cut(chunk.raw, level + 1)
                run = []
        return segments + _pack(run, language, bpe, max_tokens)

    if measure(text).length <= max_tokens:
        return [encode_text(text, language, bpe)]
    return cut(text, 0)


def _pieces(text: str, pattern: re.Pattern) -> list[str]:
    """``text`` cut after every match of ``pattern``; the pieces join back to ``text``."""
    bounds = [0, *(m.end() for m in pattern.finditer(text)), len(text)]
    return [text[a:b] for a, b in pairwise(bounds) if a < b]


def _merge_unspeakable(chunks: list[_Chunk]) -> list[_Chunk]:
    """Joins each chunk with nothing to speak to the chunk before it (the first one: the chunk after)."""
    merged: list[_Chunk] = []
    for chunk in chunks:
        if merged and not (chunk.speakable and merged[-1].speakable):
            merged[-1] += chunk
        else:
            merged.append(chunk)
    return merged


def _pack(chunks: list[_Chunk], language: str, bpe: TextBPE, max_tokens: int) -> list[Segment]:
    """Consecutive chunks packed greedily by their summed lengths into segments of at most ``max_tokens``.

    A pack is encoded as one text, which can take more tokens than its chunks apart (a space before a word
    is a token of its own when the BPE has not merged it); a pack over the limit is shortened to the most
    chunks that fit, found by bisection, or to its first chunk.
    """

    def encode(start: int, end: int) -> Segment:
        return encode_text("".join(c.raw for c in chunks[start:end]), language, bpe)

    segments: list[Segment] = []
    start = 0
    while start < len(chunks):
        end, length = start + 1, chunks[start].length
        while end < len(chunks) and length + chunks[end].length <= max_tokens:
            length += chunks[end].length
            end += 1
        segment = encode(start, end)
        if len(segment.tokens) > max_tokens:
            fits, too_long = start + 1, end  # ends of packs: one chunk always goes, ``end`` is too long
            while too_long - fits > 1:
                middle = (fits + too_long) // 2
                if len(encode(start, middle).tokens) <= max_tokens:
                    fits = middle
                else:
                    too_long = middle
            end, segment = fits, encode(start, fits)
        segments.append(segment)
        start = end
    return segments
