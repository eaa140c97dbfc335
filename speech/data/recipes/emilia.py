"""Emilia: multilingual in-the-wild speech cut by Emilia-Pipe into 3-30 s single-speaker mp3 segments.

Two on-disk layouts are read, both with one folder per language (``EN``, ``ZH``, ``DE``, ``FR``, ``JA``,
``KO``) under ``root``:

* The original release (OpenDataLab, first Hugging Face release), JSONL metadata per batch::

      <root>/EN/EN_B00000.jsonl            (or .jsonl.gz)
      <root>/EN/EN_B00000/EN_B00000_S00000/mp3/EN_B00000_S00000_W000000.mp3

  with one object per line, ``wav`` relative to the JSONL's folder::

      {"id": "EN_B00000_S00000_W000000", "wav": "EN_B00000/EN_B00000_S00000/mp3/EN_B00000_S00000_W000000.mp3",
       "text": " ...", "duration": 6.264, "speaker": "EN_B00000_S00000", "language": "en", "dnsmos": 3.29}

* The webdataset release (``amphion/Emilia-Dataset``: ``Emilia/EN/EN-B000000.tar``, ``Emilia-YODAS/...``)
  once its shards are extracted in place (``tar -xf``): every segment is a pair ``<key>.json`` +
  ``<key>.mp3`` holding the same fields (there ``wav`` names the original layout and is ignored).

Each mp3 is one whole segment, so utterances span their whole file (``start=0``, ``duration=None``); the
metadata's rounded ``duration`` is not used as a read span.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from speech.data.records import Utterance
from speech.data.rejects import RejectLog

log = logging.getLogger(__name__)

_REQUIRED = ("id", "text", "speaker")
_SIDECAR_AUDIO_EXTS = (".mp3", ".wav", ".flac")
# (where: ``file:line`` or the sidecar file, the JSON object, its audio file)
Record = tuple[str, dict[str, Any], Path]


def load_emilia(
    root: str | Path,
    languages: Sequence[str] | str | None = None,
    *,
    min_dnsmos: float | None = None,
    speaker_prefix: str = "",
    rejects: RejectLog | None = None,
) -> list[Utterance]:
    """Lists the segments of Emilia (original JSONL release or extracted webdataset shards).

    Args:
        root: The folder holding the language folders (``EN``, ``ZH`` ...).
        languages: Language folders to read, case-insensitive (``["en", "zh"]``); ``None`` reads every
            folder under ``root`` that holds Emilia metadata.
        min_dnsmos: Keep only segments whose DNSMOS P.835 overall score is at least this; ``None`` keeps
            all (and then records need no ``dnsmos`` field).
        speaker_prefix: Prepended to utterance and speaker ids, e.g. ``"emilia_"``.
        rejects: Collects bad JSON lines, records with missing or malformed fields, missing audio, empty
            texts, DNSMOS below ``min_dnsmos`` and repeated ids, each named by ``file:line`` (or by the
            sidecar file). When ``None`` a private log is used and its summary is logged as one warning.

    Returns:
        Utterances sorted by id: id ``<prefix><id>``, speaker ``<prefix><speaker>``, language from the
        record (lower-cased; the folder's name when absent), text with its whitespace collapsed.

    Raises:
        FileNotFoundError: ``root`` or a requested language folder is missing, a requested folder holds
            no metadata, no folder does, or a folder holds only unextracted ``.tar`` shards.
    """
    root = Path(root)
    sources = _sources(root, languages)
    own_log = rejects is None
    rejects = RejectLog() if rejects is None else rejects
    utterances: list[Utterance] = []
    for lang_dir, kind, files in sources:
        records = _jsonl_records(files, rejects) if kind == "jsonl" else _sidecar_records(files, rejects)
        for where, record, audio in records:
            utt = _utterance(record, audio, where, lang_dir.name.lower(), min_dnsmos, speaker_prefix, rejects)
            if utt is not None:
                utterances.append(utt)
    unique: dict[str, Utterance] = {}
    for utt in sorted(utterances, key=lambda u: (u.id, str(u.audio_path))):
        if utt.id in unique:
            detail = f"id {utt.id!r} also names {unique[utt.id].audio_path}"
            rejects.add(utt.audio_path, "duplicate_id", detail)
            continue
        unique[utt.id] = utt
    if own_log and rejects:
        log.warning("Emilia %s: %s", root, rejects.summary())
    return list(unique.values())


def _sources(root: Path, languages: Sequence[str] | str | None) -> list[tuple[Path, str, list[Path]]]:
    """``(language folder, "jsonl" | "json", metadata files)`` for each folder to read."""
    if not root.is_dir():
        raise FileNotFoundError(f"Emilia root not found: {root}")
    folders = {p.name.upper(): p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")}
    names_there = sorted(p.name for p in folders.values())
    if languages is None:
        chosen = list(folders.values())
    else:
        names = [languages] if isinstance(languages, str) else languages
        names = list(dict.fromkeys(name.upper() for name in names))
        missing = [name for name in names if name not in folders]
        if missing:
            raise FileNotFoundError(
                f"Emilia language folder(s) {missing} not found in {root}; folders there: {names_there}"
            )
        chosen = [folders[name] for name in names]
    sources = []
    for lang_dir in chosen:
        kind, files = _metadata_files(lang_dir)
        shards = sorted(lang_dir.glob("*.tar"))
        if files:
            sources.append((lang_dir, kind, files))
        elif shards:
            raise FileNotFoundError(
                f"{lang_dir} holds {len(shards)} webdataset shard(s) ({shards[0].name} ...) but no extracted "
                "metadata: extract them in place first (tar -xf); recipes need the audio files on disk"
            )
        elif languages is not None:
            raise FileNotFoundError(
                f"no Emilia metadata in {lang_dir}: expected <LANG>_B*.jsonl files (original release) or "
                "<key>.json + <key>.mp3 pairs (extracted webdataset shards)"
            )
    if not sources:
        raise FileNotFoundError(
            f"no Emilia language folder with metadata in {root} (expected e.g. "
            f"{root / 'EN' / 'EN_B00000.jsonl'}); its folders: {names_there}"
        )
    return sources


def _metadata_files(lang_dir: Path) -> tuple[str, list[Path]]:
    """``("jsonl", files)`` for the original release, else ``("json", sidecars)`` of extracted shards."""
    jsonl = [*lang_dir.glob("*.jsonl"), *lang_dir.glob("*.jsonl.gz")]
    jsonl = [p for p in jsonl if not p.name.startswith(".")]
    if jsonl:
        return "jsonl", sorted(jsonl)
    return "json", sorted(p for p in lang_dir.rglob("*.json") if not p.name.startswith("."))


def _jsonl_records(files: list[Path], rejects: RejectLog) -> Iterator[Record]:
    """One record per line; ``wav`` is relative to the JSONL's folder."""
    for path in files:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                record = _parse(line, where, rejects)
                if record is None:
                    continue
                wav = record.get("wav")
                if wav is None:
                    rejects.add(where, "missing_field", "missing: wav")
                elif not isinstance(wav, str) or not wav.strip():
                    rejects.add(where, "bad_field", f"wav={wav!r} is not a path")
                else:
                    yield where, record, path.parent / wav


def _sidecar_records(files: list[Path], rejects: RejectLog) -> Iterator[Record]:
    """One record per ``<key>.json``; the audio is its sibling ``<key>.mp3`` (or .wav/.flac)."""
    for path in files:
        record = _parse(path.read_text(encoding="utf-8"), str(path), rejects)
        if record is None:
            continue
        siblings = [path.with_suffix(ext) for ext in _SIDECAR_AUDIO_EXTS]
        yield str(path), record, next((a for a in siblings if a.is_file()), siblings[0])


def _parse(text: str, where: str, rejects: RejectLog) -> dict[str, Any] | None:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        rejects.add(where, "bad_json", str(err))
        return None
    if not isinstance(record, dict):
        rejects.add(where, "bad_json", f"expected a JSON object, found {type(record).__name__}")
        return None
    return record


def _utterance(
    record: dict[str, Any],
    audio: Path,
    where: str,
    folder_language: str,
    min_dnsmos: float | None,
    speaker_prefix: str,
    rejects: RejectLog,
) -> Utterance | None:
    problem = _field_problem(record, min_dnsmos)
    if problem is not None:
        rejects.add(where, *problem)
        return None
    if min_dnsmos is not None and record["dnsmos"] < min_dnsmos:
        rejects.add(where, "low_dnsmos", f"dnsmos {record['dnsmos']} < {min_dnsmos}")
        return None
    text = " ".join(record["text"].split())
    if not text:
        rejects.add(where, "empty_transcript", f"id {record['id']!r}")
        return None
    if not audio.is_file():
        rejects.add(where, "missing_audio", f"{audio} not found")
        return None
    return Utterance(
        id=f"{speaker_prefix}{record['id']}",
        audio_path=audio,
        text=text,
        speaker=f"{speaker_prefix}{record['speaker']}",
        language=(record.get("language") or folder_language).lower(),
    )


def _field_problem(record: dict[str, Any], min_dnsmos: float | None) -> tuple[str, str] | None:
    """``(reason, detail)`` when a field the recipe needs is absent or malformed."""
    needed = (*_REQUIRED, "dnsmos") if min_dnsmos is not None else _REQUIRED
    missing = [key for key in needed if record.get(key) is None]
    if missing:
        return "missing_field", f"missing: {', '.join(missing)}"
    bad = [key for key in ("id", "speaker") if not isinstance(record[key], str) or not record[key].strip()]
    # ``language`` may be absent or null (the folder's name is used then), but not of another type.
    bad += [key for key in ("text", "language") if not isinstance(record.get(key) or "", str)]
    if min_dnsmos is not None and not _is_number(record["dnsmos"]):
        bad.append("dnsmos")
    if bad:
        return "bad_field", "malformed: " + ", ".join(f"{key}={record[key]!r}" for key in bad)
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
