"""espeak-ng IPA: the phoneme front-end that a text BPE may put before its byte-level merges.

With it (``data.bpe.phonemes=espeak-ng``) the AR model reads phonemes instead of spellings: one symbol per
sound, whatever the orthography, so the text it sees says more directly what the audio tokens carry (ours:
the paper's model reads BPE of the text). Languages that espeak-ng reads well are converted; the others
(Chinese and Japanese, whose espeak-ng readings are poor, and any language not listed) pass through as
normalized text, which the BPE then encodes as usual: their characters already stand for syllables.

The IPA of one utterance is espeak-ng's IPA of each of its clauses (``speech.text.espeak``: the C library,
fast enough to convert every batch's transcripts on the fly) followed by the punctuation that ended it, so
pauses stay visible to the model. Results are memoized: a training run asks for the same transcripts every
epoch.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable

from speech.text.espeak import espeak_ipa
from speech.text.normalize import base_language

PHONEMIZER = "espeak-ng"
# Corpus language -> espeak-ng voice, for the languages converted to IPA.
VOICES = {"en": "en-us", "de": "de", "es": "es", "it": "it", "fr": "fr", "pt": "pt"}
_CLAUSE = re.compile(r"([^,.!?;:]*)([,.!?;:]*)")
_SPACES = re.compile(r"\s+")


def check_phonemes(phonemes: str | None) -> None:
    """Raises ``ValueError`` unless ``phonemes`` is ``None`` (spelled text) or ``"espeak-ng"``."""
    if phonemes not in (None, PHONEMIZER):
        raise ValueError(f"phonemes must be null (the text as written) or {PHONEMIZER!r}, got {phonemes!r}")


def converts(language: str) -> bool:
    """Whether text of ``language`` (a corpus code such as ``en`` or ``en-us``) becomes IPA."""
    return base_language(language) in VOICES


def bpe_inputs(texts: Iterable[str], languages: Iterable[str], phonemes: str | None) -> list[str]:
    """:func:`bpe_input` of each text with its language.

    Raises:
        ValueError: the two do not pair up, or as :func:`bpe_input`.
        speech.text.espeak.PhonemizerError: libespeak-ng is missing or failed.
    """
    texts, languages = list(texts), list(languages)
    if len(texts) != len(languages):
        raise ValueError(f"{len(texts)} texts but {len(languages)} languages")
    return [bpe_input(text, language, phonemes) for text, language in zip(texts, languages, strict=True)]


def bpe_input(text: str, language: str | None, phonemes: str | None) -> str:
    """What a BPE with the front-end ``phonemes`` encodes for ``text``: the text itself, or its IPA.

    Raises:
        ValueError: ``phonemes`` is set and ``language`` is not given, or ``phonemes`` is unknown.
        speech.text.espeak.PhonemizerError: libespeak-ng is missing or failed.
    """
    check_phonemes(phonemes)
    if phonemes is None:
        return text
    if language is None:
        raise ValueError("this text BPE reads phonemes: encode(text, language) needs the text's language")
    return ipa(text, base_language(language)) if converts(language) else text


@functools.lru_cache(maxsize=1 << 16)
def ipa(text: str, language: str) -> str:
    """espeak-ng IPA of ``text`` with its clause punctuation kept, e.g. ``"həlˈoʊ, wˈɜːld."``.

    Args:
        text: Normalized text.
        language: A language of :data:`VOICES`.

    Raises:
        ValueError: ``language`` has no espeak-ng voice here.
        speech.text.espeak.PhonemizerError: libespeak-ng is missing or failed.
    """
    if language not in VOICES:
        raise ValueError(f"no espeak-ng voice for language {language!r}; converted: {sorted(VOICES)}")
    return clause_ipa(text, VOICES[language])


def clauses(text: str) -> list[tuple[str, str]]:
    """``text`` cut after each run of clause punctuation: ``(words, punctuation)`` pairs, either may be
    empty, e.g. ``[("hello", ","), (" world", "."), ("", "")]`` for ``"hello, world."``."""
    return _CLAUSE.findall(text)


def clause_ipa(
    text: str, voice: str, *, tie: str | None = None, rewrite: Callable[[str], str] | None = None
) -> str:
    """espeak-ng IPA of ``text`` clause by clause (``rewrite`` applied to each), each followed by the
    punctuation that ended it, joined by single spaces.

    Raises:
        speech.text.espeak.PhonemizerError: libespeak-ng is missing or failed.
    """
    pieces = []
    for words, punctuation in clauses(text):
        sounds = espeak_ipa(words, voice, tie) if words.strip() else ""
        if rewrite is not None:
            sounds = rewrite(sounds)
        if sounds or punctuation:
            pieces.append(sounds + punctuation)
    return _SPACES.sub(" ", " ".join(pieces)).strip()
