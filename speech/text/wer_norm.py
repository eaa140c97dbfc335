"""The WER scoring normalizer of Seed-TTS-eval (``run_wer.py::process_one``), reproduced.

This is not the synthesis front-end (``speech.text.normalize``): it spells nothing out, it only strips
punctuation and case so that the reference text and the ASR transcript compare word for word (en) or
character for character (zh, ja).
"""

from __future__ import annotations

import string

from speech.text.normalize import base_language

# ``zhon.hanzi.punctuation`` (zhon 2.x, src/zhon/hanzi.py: ``non_stops + stops``), written out here so that
# scoring does not pull in a dependency for one constant.
_ZHON_NON_STOPS = (
    # full-width ASCII variants
    "\uff02\uff03\uff04\uff05\uff06\uff07\uff08\uff09\uff0a\uff0b\uff0c\uff0d"
    "\uff0f\uff1a\uff1b\uff1c\uff1d\uff1e\uff20\uff3b\uff3c\uff3d\uff3e\uff3f"
    "\uff40\uff5b\uff5c\uff5d\uff5e\uff5f\uff60"
    # half-width CJK punctuation
    "\uff62\uff63\uff64"
    # CJK symbols and punctuation, angle/corner brackets, brackets
    "\u3000\u3001\u3003"
    "\u3008\u3009\u300a\u300b\u300c\u300d\u300e\u300f\u3010\u3011"
    "\u3014\u3015\u3016\u3017\u3018\u3019\u301a\u301b\u301c\u301d\u301e\u301f"
    "\u3030\u303e\u303f"
    # en/em dash, curly quotes (the right single quote included), ellipsis, hyphenation point
    "\u2013\u2014"
    "\u2018\u2019\u201b\u201c\u201d\u201e\u201f"
    "\u2026\u2027"
    # small-form variants, middle dot
    "\ufe4f\ufe51\ufe54"
    "\u00b7"
)
_ZHON_STOPS = "\uff0e\uff01\uff1f\uff61\u3002"
ZHON_HANZI_PUNCTUATION = _ZHON_NON_STOPS + _ZHON_STOPS

#: Every character the protocol deletes: Chinese and ASCII punctuation, except the ASCII apostrophe.
REMOVED_PUNCTUATION = "".join(sorted(set(ZHON_HANZI_PUNCTUATION + string.punctuation) - {"'"}))
_DELETE = str.maketrans("", "", REMOVED_PUNCTUATION)

#: Base languages scored per character (the "WER" is a CER there).
CHARACTER_LANGUAGES = frozenset({"zh", "ja", "yue"})


def normalize_for_wer(text: str, language: str) -> str:
    """Normalizes a reference or a transcript the way Seed-TTS-eval does before ``jiwer``.

    Steps, as in the protocol:

    1. delete (not replace by a space) every character of ``zhon.hanzi.punctuation +
       string.punctuation`` except the ASCII apostrophe ``'``. So ``"don't"`` keeps its apostrophe, but
       ``"don’t"`` (U+2019, which is in the zhon set) becomes ``"dont"``; hyphenated words merge
       (``"well-known"`` -> ``"wellknown"``); full-width punctuation (``，。！？「」``) goes too;
    2. zh (and ja, yue): split into single characters joined by spaces, without lower-casing; other
       languages: lower-case with ``str.lower`` and keep words. Digits, full-width letters and other
       symbols (``°``, ``€``) are left as they are: there is no number or NFKC normalization.

    Deliberate differences from ``run_wer.py``:

    - every run of whitespace (tabs and newlines included) becomes one space and the ends are stripped;
      the protocol does one ``str.replace("  ", " ")`` pass. ``jiwer`` collapses spaces itself, so WER
      is unchanged; only the stored normalized strings are tidier;
    - Japanese (and Cantonese) are not in the protocol (it raises for anything but en/zh); we score them
      per character like zh. Other languages are scored like en (lower-cased words) instead of raising.

    Mixed Chinese/English text in a zh item follows the protocol: every non-space character becomes a
    token, so an English word inside Chinese text is scored letter by letter, case-sensitively
    (``"用GPU"`` -> ``"用 G P U"``, and ``"gpu"`` in the transcript counts three substitutions). English
    text in an en item that contains Chinese characters keeps them inside their word.

    Args:
        text: Reference text or ASR transcript.
        language: Language code; its base (``base_language``) selects the rule.

    Returns:
        Space-separated tokens; ``""`` when nothing but punctuation and spaces was left.
    """
    stripped = text.translate(_DELETE)
    if base_language(language) in CHARACTER_LANGUAGES:
        return " ".join(ch for ch in stripped if not ch.isspace())
    return " ".join(stripped.lower().split())
