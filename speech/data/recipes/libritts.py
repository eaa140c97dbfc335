"""LibriTTS and LibriTTS-R: read English audiobook speech, 24 kHz, one folder per subset/speaker/chapter.

Both corpora share one layout (LibriTTS-R restores the audio of the same utterances and keeps every
name), under the extracted ``LibriTTS`` or ``LibriTTS_R`` folder::

    <root>/<subset>/<speaker>/<chapter>/
        <speaker>_<chapter>_<paragraph>_<sentence>.wav
        <speaker>_<chapter>_<paragraph>_<sentence>.normalized.txt
        <speaker>_<chapter>_<paragraph>_<sentence>.original.txt
        <speaker>_<chapter>.trans.tsv    # utt_id <TAB> original <TAB> normalized, one line per utterance
        <speaker>_<chapter>.book.tsv     # every sentence of the chapter's book text, kept or not: unused

Subsets: ``train-clean-100``, ``train-clean-360``, ``train-other-500``, ``dev-clean``, ``dev-other``,
``test-clean``, ``test-other``. A few wavs of the real corpus have no ``.normalized.txt``; the chapter's
``.trans.tsv`` is read for those, and what has a transcript in neither place is rejected. macOS
``._*`` resource-fork files, which appear in some copies, are ignored.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

from speech.data.records import Utterance
from speech.data.rejects import RejectLog

log = logging.getLogger(__name__)

LANGUAGE = "en"
TEXT_KINDS = ("normalized", "original")
# Column of each text kind in ``<speaker>_<chapter>.trans.tsv`` (column 0 is the utterance id).
_TRANS_COLUMN = {"original": 1, "normalized": 2}
# What counts as a subset folder when ``subsets`` is None (the corpus root also holds README files,
# speakers.tsv and, in practice, whatever else users put there).
_SUBSET_NAME = re.compile(r"^(train|dev|test)-(clean|other)(-\d+)?$")


def load_libritts(
    root: str | Path,
    subsets: Sequence[str] | str | None = None,
    *,
    text: str = "normalized",
    speaker_prefix: str = "",
    rejects: RejectLog | None = None,
) -> list[Utterance]:
    """Lists the utterances of LibriTTS or LibriTTS-R.

    Args:
        root: The corpus folder holding the subset folders (``.../LibriTTS`` or ``.../LibriTTS_R``).
        subsets: Subset folder names such as ``["train-clean-100", "train-clean-360"]``; ``None`` takes
            every subset folder found under ``root``.
        text: ``"normalized"`` (numbers, abbreviations spelled out) or ``"original"`` (book text).
        speaker_prefix: Prepended to utterance and speaker ids, e.g. ``"ltts_"``, so that LibriTTS and
            LibriTTS-R (same ids) or other corpora can be mixed.
        rejects: Collects utterances without a usable transcript. When ``None`` a private log is used
            and its summary is logged as one warning.

    Returns:
        Utterances sorted by id: id ``<prefix><speaker>_<chapter>_<paragraph>_<sentence>``, speaker
        ``<prefix><speaker>``, language ``en``, whole files.

    Raises:
        ValueError: ``text`` is not one of :data:`TEXT_KINDS`.
        FileNotFoundError: ``root`` is missing, holds no subset folder, or lacks a requested subset.
    """
    if text not in TEXT_KINDS:
        raise ValueError(f"text must be one of {TEXT_KINDS}, got {text!r}")
    root = Path(root)
    subset_dirs = _subset_dirs(root, subsets)
    own_log = rejects is None
    rejects = RejectLog() if rejects is None else rejects
    transcripts = _TransTsvCache(text, rejects)
    utterances = []
    for subset_dir in subset_dirs:
        for wav in sorted(subset_dir.glob("*/*/*.wav")):
            if wav.name.startswith("."):
                continue
            transcript = _transcript(wav, text, transcripts, rejects)
            if transcript is None:
                continue
            utterances.append(
                Utterance(
                    id=f"{speaker_prefix}{wav.stem}",
                    audio_path=wav,
                    text=transcript,
                    speaker=f"{speaker_prefix}{wav.parent.parent.name}",
                    language=LANGUAGE,
                )
            )
    if own_log and rejects:
        log.warning("LibriTTS %s: %s", root, rejects.summary())
    return sorted(utterances, key=lambda u: u.id)


def _subset_dirs(root: Path, subsets: Sequence[str] | str | None) -> list[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"LibriTTS root not found: {root}")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and _SUBSET_NAME.match(p.name))
    if subsets is None:
        if not found:
            folders = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise FileNotFoundError(
                f"no LibriTTS subset folder (such as train-clean-100) in {root}; its folders: {folders}"
            )
        return [root / name for name in found]
    names = list(dict.fromkeys([subsets] if isinstance(subsets, str) else subsets))
    missing = [name for name in names if not (root / name).is_dir()]
    if missing:
        raise FileNotFoundError(f"LibriTTS subset(s) {missing} not found in {root}; subsets there: {found}")
    return [root / name for name in names]


def _transcript(wav: Path, text: str, transcripts: _TransTsvCache, rejects: RejectLog) -> str | None:
    """The utterance's text from ``<stem>.<text>.txt``, else from the chapter's ``.trans.tsv``."""
    per_utterance = wav.with_name(f"{wav.stem}.{text}.txt")
    if per_utterance.is_file():
        try:
            raw = per_utterance.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            rejects.add(wav, "unreadable_transcript", f"{per_utterance.name}: {err}")
            return None
    else:
        raw = transcripts.get(wav)
        if raw is None:
            rejects.add(
                wav, "missing_transcript", f"no {per_utterance.name} and no line in the chapter's .trans.tsv"
            )
            return None
    cleaned = " ".join(raw.split())
    if not cleaned:
        rejects.add(wav, "empty_transcript", f"the {text} text is empty")
        return None
    return cleaned


class _TransTsvCache:
    """Reads each chapter's ``.trans.tsv`` once, and only for chapters that need it."""

    def __init__(self, text: str, rejects: RejectLog) -> None:
        self.column = _TRANS_COLUMN[text]
        self.rejects = rejects
        self.chapters: dict[Path, dict[str, str]] = {}

    def get(self, wav: Path) -> str | None:
        chapter = wav.parent
        if chapter not in self.chapters:
            self.chapters[chapter] = self._read(chapter)
        return self.chapters[chapter].get(wav.stem)

    def _read(self, chapter: Path) -> dict[str, str]:
        table: dict[str, str] = {}
        for tsv in sorted(chapter.glob("*.trans.tsv")):
            if tsv.name.startswith("."):
                continue
            for lineno, line in enumerate(tsv.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                fields = line.split("\t")
                if len(fields) != 3:
                    self.rejects.add(
                        f"{tsv}:{lineno}",
                        "bad_transcript_line",
                        f"expected 3 tab-separated fields (id, original, normalized), found {len(fields)}",
                    )
                    continue
                table[fields[0]] = fields[self.column]
        return table
