"""The corpus's files on disk: the plan, the manifest and the speaker list (JSON lines, sorted by id).

Layout of a built corpus ``<root>``::

    wavs/<speaker>/<utt>.wav        16-bit mono audio at the corpus rate
    manifest.jsonl                  one line per utterance that was rendered (see ``manifest_record``)
    speakers.jsonl                  one line per speaker: split, engine, base voice, warp, languages
    plan.jsonl                      every planned utterance (a resumed build compares against it)
    text/<lang>.{train,heldout}.txt the sentence pools
    test-synth-{en,multi,cross}/    Seed-TTS-eval test sets (meta.lst, prompt-wavs/, gt-wavs/); the prefix is
                                    the config's test_set_prefix (test-natural for the Kokoro corpus)
    stats.json  rejects.tsv  build.log
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import soundfile as sf

from speech.data.synthetic.plan import PlannedUtterance, Speaker
from speech.data.synthetic.render import PART_SUFFIX

MANIFEST = "manifest.jsonl"
PLAN = "plan.jsonl"
SPEAKERS = "speakers.jsonl"


def dumps(record: dict[str, Any]) -> str:
    """One JSON line; key order as given, so identical records give identical bytes."""
    return json.dumps(record, ensure_ascii=False)


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(dumps(record) + "\n")
    tmp.replace(path)
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def wav_frames(path: Path, sample_rate: int) -> int | None:
    """Frames of a finished corpus wav, or ``None`` when it is missing, unreadable or not 16-bit mono at
    ``sample_rate`` (a resumed build renders it again)."""
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError):
        return None
    ok = (
        info.samplerate == sample_rate and info.channels == 1 and info.frames > 0 and info.subtype == "PCM_16"
    )
    return info.frames if ok else None


def manifest_record(utt: PlannedUtterance, frames: int, sample_rate: int) -> dict[str, Any]:
    """The manifest line of one rendered utterance: the utterance, its audio, and its speaker's metadata."""
    record = utt.to_dict()
    return {
        "id": record.pop("id"),
        "speaker": record.pop("speaker"),
        "language": record.pop("language"),
        "text": record.pop("text"),
        "split": record.pop("split"),
        "path": record.pop("path"),
        "sample_rate": sample_rate,
        "num_samples": frames,
        "duration": round(frames / sample_rate, 6),
        **record,
    }


def write_manifest(root: Path, planned: list[PlannedUtterance], sample_rate: int) -> list[dict[str, Any]]:
    """Writes ``manifest.jsonl`` with every planned utterance whose wav is complete; returns its records."""
    records = []
    for utt in planned:
        frames = wav_frames(root / utt.path, sample_rate)
        if frames is not None:
            records.append(manifest_record(utt, frames, sample_rate))
    write_jsonl(root / MANIFEST, records)
    return records


def write_speakers(root: Path, speakers: list[Speaker]) -> Path:
    return write_jsonl(root / SPEAKERS, (s.to_dict() for s in speakers))


def read_manifest(root: str | Path) -> list[dict[str, Any]]:
    """Reads ``<root>/manifest.jsonl``.

    Raises:
        FileNotFoundError: the corpus has not been built; the message gives the command that builds it.
    """
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"synthetic corpus manifest not found: {path}. Build the corpus first: "
            f"python scripts/corpus/make_synthetic_corpus.py data={Path(root).name}"
        )
    return read_jsonl(path)


def reconcile_plan(root: Path, plan: dict[str, dict[str, Any]]) -> None:
    """Makes ``<root>/plan.jsonl`` say ``plan`` (id -> record with a ``path`` relative to ``root``), deleting
    the wavs a rerun must render again: those whose plan line changed, those with no earlier plan line (of
    unknown origin) and every half-written ``*.part.wav``."""
    old = {r["id"]: r for r in read_jsonl(root / PLAN)} if (root / PLAN).is_file() else {}
    for item_id, record in old.items():
        if plan.get(item_id) != record:
            (root / record["path"]).unlink(missing_ok=True)
    for item_id, record in plan.items():
        if item_id not in old:
            (root / record["path"]).unlink(missing_ok=True)
    for part in root.glob(f"wavs/*/*{PART_SUFFIX}"):
        part.unlink()
    write_jsonl(root / PLAN, plan.values())
