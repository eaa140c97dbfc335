"""Kokoro's phonemes from espeak-ng's IPA: what the ``kokoro`` engine feeds the model.

Kokoro-82M reads phoneme strings in the symbol set of its G2P, misaki, whose English fallback and
Spanish, Italian (and French, Portuguese, Hindi) front-ends are espeak-ng itself with a few rewrites. The
same rewrites are applied here to espeak-ng's IPA with ``^`` ties, from its C library as misaki reads it
(the tie marks multi-letter phonemes, so that ``a^ɪ`` becomes Kokoro's single symbol ``I``), per clause,
with the clause's punctuation put back (Kokoro pauses and phrases at it):

- ``en`` (en-us): misaki's English espeak fallback for American English (``a^ɪ -> I``, ``o^ʊ -> O``,
  ``ɚ -> əɹ``, ``r -> ɹ``, length marks dropped, ...), plus the flap ``ɾ -> T`` and ``o -> ɔ`` of misaki's
  American lexicon (espeak-ng < 1.52 writes ``oː`` where it means ``ɔː``).
- ``es``, ``it``: misaki's espeak front-end for the languages Kokoro was trained on (diphthongs and
  affricates to single symbols, ties and hyphens dropped).
- ``de``: the same, plus stand-ins for the four German symbols outside Kokoro's vocabulary (``ʏ -> ɪ``,
  ``ɔ^ø -> Y``, ``ɑ̃``-type nasal marks dropped). Kokoro was never trained on German: an approximation.

Chinese and Japanese are not supported: espeak-ng's Mandarin IPA writes tones as digits that do not map
onto misaki's tone arrows, and its Japanese reading of kana differs from misaki's; Kokoro's own front-ends
for them need jieba/pypinyin and pyopenjtalk. A phoneme left outside the vocabulary after the rewrites
makes :func:`phonemize` raise :class:`~speech.data.synthetic.programs.EngineError` (the corpus skips that
sentence with the reason) rather than say something other than the transcript.
"""

from __future__ import annotations

import re

from speech.data.synthetic.programs import ESPEAK_LANGUAGES, EngineError, require
from speech.text.espeak import PhonemizerError
from speech.text.phonemes import clause_ipa

# misaki's espeak fallback for English (misaki/espeak.py, EspeakFallback), longest key first.
_EN = {
    "ʔˌn\u0329": "tᵊn", "ʔn\u0329": "tᵊn", "ʔn": "tᵊn", "ʔ": "t",
    "a^ɪ": "I", "a^ʊ": "W", "d^ʒ": "ʤ", "e^ɪ": "A", "e": "A", "t^ʃ": "ʧ", "ɔ^ɪ": "Y", "ə^l": "ᵊl",
    "ʲo": "jo", "ʲə": "jə", "ʲ": "", "ɚ": "əɹ", "r": "ɹ", "x": "k", "ç": "k", "ɐ": "ə", "ɬ": "l",
    "\u0303": "",
}  # fmt: skip
# ... and its American-English tail, applied after the syllabic-consonant rewrite.
_EN_US = {"o^ʊ": "O", "ɜːɹ": "ɜɹ", "ɜː": "ɜɹ", "ɪə": "iə", "ː": "", "o": "ɔ", "ɾ": "T"}
# misaki's espeak front-end for the other languages (misaki/espeak.py, EspeakG2P).
_OTHER = {
    "a^ɪ": "I", "a^ʊ": "W", "d^z": "ʣ", "d^ʒ": "ʤ", "e^ɪ": "A", "o^ʊ": "O", "ə^ʊ": "Q", "s^s": "S",
    "t^s": "ʦ", "t^ʃ": "ʧ", "ɔ^ɪ": "Y", "\u032a": "",  # the dental mark of English words in Italian text
}  # fmt: skip
# German symbols Kokoro's vocabulary lacks: the nearest symbol it has.
_DE = {"ɔ^ø": "Y", "ʏ": "ɪ", "\u0303": "", "ɑ̃": "ɑ"}

REWRITES: dict[str, list[tuple[str, str]]] = {
    "en": sorted(_EN.items(), key=lambda kv: -len(kv[0])),
    "de": sorted({**_DE, **_OTHER}.items(), key=lambda kv: -len(kv[0])),
    "es": sorted(_OTHER.items(), key=lambda kv: -len(kv[0])),
    "it": sorted(_OTHER.items(), key=lambda kv: -len(kv[0])),
}
LANGUAGES = tuple(REWRITES)


def phonemize(text: str, language: str, vocab: dict[str, int]) -> str:
    """Kokoro phonemes of ``text``: espeak-ng IPA per clause, rewritten, with the punctuation kept.

    Args:
        text: What to say (the corpus's normalized text).
        language: Corpus language code, one of :data:`LANGUAGES`.
        vocab: Kokoro's phoneme -> id table; every returned symbol is in it.

    Returns:
        The phoneme string, e.g. ``"hˈɛlO, wˈɜɹld."`` for ``"Hello, world."``.

    Raises:
        EngineError: the language is not supported, espeak-ng failed, nothing was said, or a phoneme stays
            outside the vocabulary.
    """
    if language not in REWRITES:
        raise EngineError(f"kokoro: no phoneme mapping for language {language!r} (supported: {LANGUAGES})")
    require("espeak-ng")
    try:
        phonemes = clause_ipa(
            text, ESPEAK_LANGUAGES[language], tie="^", rewrite=lambda ipa: to_kokoro(ipa, language)
        )
    except PhonemizerError as err:
        raise EngineError(f"kokoro: {err}") from err
    if not any(ch.isalpha() for ch in phonemes):
        raise EngineError(f"kokoro: espeak-ng gave no phonemes for {text[:40]!r}")
    unknown = sorted({ch for ch in phonemes if ch not in vocab})
    if unknown:
        raise EngineError(
            f"kokoro: phonemes outside the model's vocabulary: {' '.join(unknown)} in {phonemes!r}"
        )
    return phonemes


def to_kokoro(ipa: str, language: str) -> str:
    """Rewrites espeak-ng IPA (with ``^`` ties) into Kokoro's symbols for ``language``."""
    for old, new in REWRITES[language]:
        ipa = ipa.replace(old, new)
    if language == "en":
        ipa = re.sub(r"(\S)\u0329", r"ᵊ\1", ipa).replace("\u0329", "")
        for old, new in _EN_US.items():
            ipa = ipa.replace(old, new)
    return ipa.replace("^", "").replace("-", "")
