"""Sentence pools per language from text that ships with Debian: fortunes and Japanese man pages.

=====  ============================================================  ==========================
lang   source (Debian package)                                        notes
=====  ============================================================  ==========================
en     ``fortunes`` (top-level files of ``/usr/share/games/fortunes``) offensive ``off/`` skipped
de     ``fortunes-de`` (``de/``)
es     ``fortunes-es`` (``es/*.fortunes``)
it     ``fortunes-it`` (``it/``)                                      ASCII accents ``e'`` -> è
zh     ``fortunes-zh`` (``chinese``, ``tang300``, ``song100``)        prose tips and classical poems
ja     ``manpages-ja`` (``/usr/share/man/ja``)                        kanji -> hiragana (pykakasi)
=====  ============================================================  ==========================

Each sentence is cleaned, normalized with :func:`speech.text.normalize.normalize_text` (numbers to words)
and kept only if the *normalized* text uses nothing but the letters and punctuation of its language:
that text is what the synthesizer reads and what the transcript says. espeak-ng's Japanese voice reads
only kana (kanji come out as "Chinese letter"), so Japanese is written in kana; zh and ja keep no latin
letters or digits. Everything is deterministic for a seed: files are read in sorted order and the
candidates are shuffled with a seeded generator before the pool is filled.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speech.data.synthetic.config import TextConfig

Normalizer = Callable[[str, str], str]

# What the normalized text of each language may contain. The synthesizer says every character of it.
ALLOWED = {
    "en": re.compile(r"[A-Za-z ,.?!'\-]+"),
    "de": re.compile(r"[A-Za-zÄÖÜäöüß ,.?!'\-]+"),
    "es": re.compile(r"[A-Za-zÁÉÍÓÚÜÑáéíóúüñ¿¡ ,.?!'\-]+"),
    "it": re.compile(r"[A-Za-zÀÈÉÌÍÒÓÙÚàèéìíòóùú ,.?!'\-]+"),
    "zh": re.compile(r"[\u4e00-\u9fff，。？！、]+"),
    "ja": re.compile(r"[\u3041-\u3096\u30a1-\u30fa\u30fc、。？！]+"),
}
# Characters per second of espeak-ng at its default rate (measured), used to estimate spoken length.
CHARS_PER_SECOND = {"en": 16.0, "de": 17.0, "es": 17.0, "it": 17.0, "zh": 3.7, "ja": 8.5}
LANGUAGES = tuple(ALLOWED)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_OVERSTRIKE = re.compile(r".\x08")
_ACRONYM = re.compile(r"\b[A-ZÄÖÜÁÉÍÓÚÑÀÈÌÒÙ]{2,}\b")
_LATIN_SENTENCE = re.compile(r"\S.*?[.!?]+(?=\s|$)")  # ends at . ! ? before a space: www.x.org stays whole
_GLUED_PUNCT = re.compile(r"[.,!?][^\s.,!?'\-]")  # www.example.org, e.g., 3.5
_CJK_SENTENCE = re.compile(r"[^。！？]*[。！？]")
_ZH_POEM_HEADER = re.compile(r"《|》|作者|题目")
_JA_SOURCE = re.compile(r"[\u3041-\u3096\u30a1-\u30fa\u30fc\u3005\u4e00-\u9fff、。！？・]+")
_JA_BAD_START = set("をにはがでとのへもやかよりらっゃゅょ、。ー")
_KANJI = re.compile(r"[\u3005\u4e00-\u9fff]")
_IT_ACCENT = re.compile(r"([aeiouAEIOU])'(?=[\s,.?!;:]|$)")
_IT_GRAVE = dict(zip("aeiouAEIOU", "àèìòùÀÈÌÒÙ", strict=True))
_PUNCT_OR_SPACE = re.compile(r"[\s,.?!'\-，。？！、¿¡]+")


@dataclass(frozen=True)
class SentencePool:
    """The sentences of one language.

    Attributes:
        language: Language code.
        train: Sentences the training speakers say.
        heldout: Sentences reserved for the test speakers (never said in training).
        candidates: Distinct raw candidate sentences found in the sources before filtering.
    """

    language: str
    train: list[str]
    heldout: list[str]
    candidates: int


def build_pools(
    languages: list[str], config: TextConfig, seed: int, normalize: Normalizer | None = None
) -> dict[str, SentencePool]:
    """Builds the sentence pool of every language.

    Args:
        languages: Language codes out of :data:`LANGUAGES`.
        config: Source folders, pool sizes and length limits.
        seed: Seeds the shuffle that picks the sentences.
        normalize: ``(text, language) -> text``; defaults to :func:`speech.text.normalize.normalize_text`.

    Raises:
        ValueError: a language is not supported, or its pool is smaller than its held-out share.
        FileNotFoundError: a language's source files are missing (the message names the Debian package).
    """
    if normalize is None:
        from speech.text.normalize import normalize_text as normalize
    pools = {}
    for lang in languages:
        if lang not in ALLOWED:
            raise ValueError(f"no text source for language {lang!r}; supported: {list(LANGUAGES)}")
        candidates = list(dict.fromkeys(raw_sentences(lang, config)))
        order = np.random.default_rng([seed, zlib.crc32(lang.encode())]).permutation(len(candidates))
        sentences = _fill(lang, [candidates[i] for i in order], config, normalize)
        n_heldout = config.heldout_sentences_per_language
        if len(sentences) <= n_heldout:
            raise ValueError(
                f"only {len(sentences)} usable {lang} sentences, fewer than the {n_heldout} held out for "
                "testing: lower text.heldout_sentences_per_language or widen text.min/max_seconds"
            )
        pools[lang] = SentencePool(lang, sentences[n_heldout:], sentences[:n_heldout], len(candidates))
    return pools


def _fill(lang: str, candidates: list[str], config: TextConfig, normalize: Normalizer) -> list[str]:
    kana = _kana_converter() if lang == "ja" else None
    kept: list[str] = []
    seen: set[str] = set()
    for raw in candidates:
        text = finalize(raw, lang, normalize, config, kana=kana)
        if text is None:
            continue
        key = _PUNCT_OR_SPACE.sub("", text).casefold()
        if key in seen:
            continue
        seen.add(key)
        kept.append(text)
        if len(kept) >= config.max_sentences_per_language:
            break
    return kept


def finalize(
    raw: str,
    lang: str,
    normalize: Normalizer,
    config: TextConfig,
    *,
    kana: Callable[[str], str] | None = None,
) -> str | None:
    """Turns a raw candidate into the exact text to synthesize, or ``None`` when it is unusable.

    Japanese needs ``kana`` (kanji -> hiragana) unless the text is already kana.
    """
    text = clean(raw, lang)
    if lang == "ja" and kana is not None:
        text = kana(text)
    text = normalize(text, lang).strip()
    if not text or not ALLOWED[lang].fullmatch(text) or not _has_word(text, lang):
        return None
    if lang in ("en", "de", "es", "it") and (
        _ACRONYM.search(text) or _GLUED_PUNCT.search(text) or text[-1] not in ".?!"
    ):
        return None
    seconds = len(text) / CHARS_PER_SECOND[lang]
    return text if config.min_seconds <= seconds <= config.max_seconds else None


def _has_word(text: str, lang: str) -> bool:
    return bool(_PUNCT_OR_SPACE.sub("", text))


def clean(raw: str, lang: str) -> str:
    """Light, language-aware clean-up before normalization: quotes, dashes, colons, Italian accents."""
    text = " ".join(raw.split())
    if lang in ("zh", "ja"):
        text = re.sub(r"[“”‘’「」『』《》\"]", "", text).replace("・", "")
        return re.sub(r"[；：]", "，" if lang == "zh" else "、", text.replace(" ", ""))
    text = re.sub(r"[\"“”„«»]", "", text).replace("’", "'").replace("‘", "'")
    text = re.sub(r"\s*(?:--+|—|–)\s*", ", ", text)
    text = re.sub(r"\s*[;:]\s*", ", ", text)
    if lang == "it":
        text = _IT_ACCENT.sub(lambda m: _IT_GRAVE[m[1]], text)
    return " ".join(text.split())


# ------------------------------------------------------------------------------------------- sources
def raw_sentences(lang: str, config: TextConfig) -> Iterator[str]:
    """Yields raw sentence candidates of ``lang`` from its sources, in a fixed order."""
    if lang == "ja":
        yield from _man_page_sentences(Path(config.man_ja_dir))
        return
    for path in _fortune_files(lang, Path(config.fortune_dir)):
        for block in _fortune_blocks(path):
            yield from _split(_strip_block(block, lang), lang)


# Debian package of each language's text.
TEXT_PACKAGES = {"en": "fortunes", "de": "fortunes-de", "es": "fortunes-es", "it": "fortunes-it",
                 "zh": "fortunes-zh", "ja": "manpages-ja"}  # fmt: skip
_ZH_FILES = ("chinese", "tang300", "song100")
_SKIPPED_FILES = {"ascii-art", "asciiart", "banner", *_ZH_FILES}


def _fortune_files(lang: str, root: Path) -> list[Path]:
    folder = root if lang in ("en", "zh") else root / lang
    if lang == "zh":
        files = [folder / name for name in _ZH_FILES if (folder / name).is_file()]
    elif folder.is_dir():
        files = sorted(
            p
            for p in folder.iterdir()
            if p.is_file() and not p.is_symlink() and p.suffix not in (".dat", ".u8")
            and p.name not in _SKIPPED_FILES and not p.name.endswith("-pre")
        )  # fmt: skip
    else:
        files = []
    if not files:
        raise FileNotFoundError(
            f"no {lang} text under {folder}: install the Debian package {TEXT_PACKAGES[lang]!r} "
            f"(apt-get install {TEXT_PACKAGES[lang]}) or set data.synthetic.text.fortune_dir"
        )
    return files


def _fortune_blocks(path: Path) -> Iterator[str]:
    text = path.read_bytes().decode("utf-8", errors="replace")
    block: list[str] = []
    for line in text.splitlines():
        if line.strip() == "%":
            yield "\n".join(block)
            block = []
        else:
            block.append(line)
    if block:
        yield "\n".join(block)


def _strip_block(block: str, lang: str) -> str:
    """Drops escape codes, overstrikes, attributions (``-- Author``) and poem headers of one fortune."""
    block = _OVERSTRIKE.sub("", _ANSI.sub("", block))
    lines = []
    for line in block.splitlines():
        stripped = line.strip()
        if stripped.startswith(("--", "—", "――")):
            break
        if not (lang == "zh" and _ZH_POEM_HEADER.search(stripped)):
            lines.append(stripped)
    return ("" if lang == "zh" else " ").join(lines)


def _split(text: str, lang: str) -> Iterator[str]:
    pattern = _CJK_SENTENCE if lang in ("zh", "ja") else _LATIN_SENTENCE
    for match in pattern.finditer(text):
        sentence = match[0].strip()
        if lang in ("zh", "ja") or sentence[:1].isupper() or sentence[:1] in "¿¡":
            yield sentence


def _man_page_sentences(root: Path) -> Iterator[str]:
    """Japanese prose sentences of the man pages: text lines of each paragraph, roff markup dropped."""
    files = sorted(root.rglob("*.gz")) if root.is_dir() else []
    if not files:
        raise FileNotFoundError(
            f"no Japanese man pages under {root}: install the Debian package 'manpages-ja' "
            "(apt-get install manpages-ja) or set data.synthetic.text.man_ja_dir"
        )
    for path in files:
        try:
            text = gzip.decompress(path.read_bytes()).decode("utf-8")
        except (OSError, UnicodeDecodeError, EOFError):
            continue
        paragraph: list[str] = []
        for line in [*text.splitlines(), ".PP"]:
            line = line.replace("\\&", "")
            if line.startswith((".", "'")) or not line.strip() or "\\" in line:
                # A macro, a blank line or inline markup ends the paragraph: sentences never span them,
                # so no sentence loses words to dropped markup.
                for match in _CJK_SENTENCE.finditer("".join(paragraph)):
                    sentence = match[0].strip()
                    if _JA_SOURCE.fullmatch(sentence) and sentence[0] not in _JA_BAD_START:
                        yield sentence
                paragraph = []
            else:
                paragraph.append(line.strip())


def _kana_converter() -> Callable[[str], str]:
    """kanji -> hiragana with pykakasi; kana and punctuation pass through unchanged."""
    try:
        import pykakasi
    except ImportError as err:
        raise ImportError(
            "Japanese text needs pykakasi: pip install -e '.[corpus]' (or drop 'ja' from "
            "data.synthetic.languages)"
        ) from err
    kakasi = pykakasi.kakasi()

    def convert(text: str) -> str:
        return "".join(
            item["hira"] if _KANJI.search(item["orig"]) else item["orig"] for item in kakasi.convert(text)
        )

    return convert
