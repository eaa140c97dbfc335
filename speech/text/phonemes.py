"""espeak-ng IPA: the phoneme front-end that a text BPE may put before its byte-level merges.

With it (``data.bpe.phonemes=espeak-ng``) the AR model reads phonemes instead of spellings: one symbol per
sound, whatever the orthography, so the text it sees says more directly what the audio tokens carry (ours:
the paper's model reads BPE of the text). Languages that espeak-ng reads well are converted; the others
(Chinese and Japanese, whose espeak-ng readings are poor, and any language not listed) pass through as
normalized text, which the BPE then encodes as usual: their characters already stand for syllables.

The IPA of one utterance is ``espeak-ng -q -b 1 --ipa -v <voice>`` with its clause lines joined by spaces and
espeak-ng's language-switch marks such as ``(en)`` dropped; the punctuation the clauses ended with is put
back, so pauses stay visible to the model. Results are memoized: a training run asks for the same
transcripts every epoch.
"""

from __future__ import annotations

import functools
import re
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from speech.programs import run_program
from speech.text.normalize import base_language

PHONEMIZER = "espeak-ng"
# Corpus language -> espeak-ng voice, for the languages converted to IPA.
VOICES = {"en": "en-us", "de": "de", "es": "es", "it": "it", "fr": "fr", "pt": "pt"}
TIMEOUT_S = 30
THREADS = 4  # espeak-ng processes at a time when many texts are converted
_CLAUSE = re.compile(r"([^,.!?;:]*)([,.!?;:]*)")
_LANGUAGE_FLAG = re.compile(r"\([a-z]{2,3}(?:-[a-z0-9]+)*\)")
_SPACES = re.compile(r"\s+")


class PhonemizerError(RuntimeError):
    """espeak-ng is missing, failed or timed out."""


def check_phonemes(phonemes: str | None) -> None:
    """Raises ``ValueError`` unless ``phonemes`` is ``None`` (spelled text) or ``"espeak-ng"``."""
    if phonemes not in (None, PHONEMIZER):
        raise ValueError(f"phonemes must be null (the text as written) or {PHONEMIZER!r}, got {phonemes!r}")


def converts(language: str) -> bool:
    """Whether text of ``language`` (a corpus code such as ``en`` or ``en-us``) becomes IPA."""
    return base_language(language) in VOICES


def bpe_inputs(texts: Iterable[str], languages: Iterable[str], phonemes: str | None) -> list[str]:
    """:func:`bpe_input` of each text with its language, several espeak-ng processes at a time.

    Raises:
        ValueError: the two do not pair up, or as :func:`bpe_input`.
        PhonemizerError: espeak-ng is missing or failed.
    """
    texts, languages = list(texts), list(languages)
    if len(texts) != len(languages):
        raise ValueError(f"{len(texts)} texts but {len(languages)} languages")
    with ThreadPoolExecutor(THREADS) as pool:  # each call waits on its own subprocess
        return list(pool.map(functools.partial(bpe_input, phonemes=phonemes), texts, languages))


def bpe_input(text: str, language: str | None, phonemes: str | None) -> str:
    """What a BPE with the front-end ``phonemes`` encodes for ``text``: the text itself, or its IPA.

    Raises:
        ValueError: ``phonemes`` is set and ``language`` is not given, or ``phonemes`` is unknown.
        PhonemizerError: espeak-ng is missing or failed.
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
        PhonemizerError: espeak-ng is missing or failed.
    """
    if language not in VOICES:
        raise ValueError(f"no espeak-ng voice for language {language!r}; converted: {sorted(VOICES)}")
    return clause_ipa(text, VOICES[language])


def clause_ipa(
    text: str, voice: str, *, tie: str | None = None, rewrite: Callable[[str], str] | None = None
) -> str:
    """espeak-ng IPA of ``text`` clause by clause (``rewrite`` applied to each), each followed by the
    punctuation that ended it, joined by single spaces.

    Raises:
        PhonemizerError: espeak-ng is missing or failed.
    """
    pieces = []
    for words, punctuation in _CLAUSE.findall(text):
        sounds = espeak_ipa(words, voice, tie) if words.strip() else ""
        if rewrite is not None:
            sounds = rewrite(sounds)
        if sounds or punctuation:
            pieces.append(sounds + punctuation)
    return _SPACES.sub(" ", " ".join(pieces)).strip()


def espeak_ipa(words: str, voice: str, tie: str | None = None) -> str:
    """``espeak-ng -q --ipa`` of one clause in the espeak-ng ``voice``, on one line, without its
    language-switch marks; ``tie`` (e.g. ``"^"``) joins the letters of a multi-letter phoneme.

    Raises:
        PhonemizerError: espeak-ng is missing, failed or timed out.
    """
    if shutil.which(PHONEMIZER) is None:
        raise PhonemizerError(
            f"{PHONEMIZER} not found on PATH: the phoneme front-end needs it (apt-get install espeak-ng; "
            "scripts/system_packages.txt lists what the project needs)"
        )
    cmd = [PHONEMIZER, "-q", "-b", "1", "--ipa", *([f"--tie={tie}"] if tie else []), "-v", voice, words]
    stdout = run_program(cmd, f"{PHONEMIZER} on {words[:40]!r}", TIMEOUT_S, PhonemizerError)
    sounds = _LANGUAGE_FLAG.sub("", stdout.decode("utf-8", errors="replace"))
    return _SPACES.sub(" ", sounds).strip()
