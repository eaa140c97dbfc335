"""Per-voice intelligibility and speaker separability of a built synthetic corpus, over all its speakers.

    python scripts/corpus/corpus_voice_report.py corpus=data/synthetic_natural_tiny   # up to 6 utts each
    python scripts/corpus/corpus_voice_report.py corpus=data/synthetic_natural_tiny per_speaker=3 out=r.md

Whisper tiny.en (``WhisperCT2ASR``, one thread) transcribes up to ``per_speaker`` English utterances of
every speaker, training and test, and the table gives each speaker's utterance-mean WER against the
transcript (the ground-truth row per voice). The separability check of the build (resemblyzer, pairs in
one language only; ``speech.metrics.separability``) is then run over *all* speakers rather than
the test split alone, so that voices that would be confused show up whichever split they are in
(``configs/entry/corpus_voice_report.yaml``).
``scripts/score_ground_truth.py`` scores a test set's ``meta.lst`` the same way, test speakers only.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from speech.audio.io import load_audio
from speech.data.synthetic import read_manifest
from speech.metrics.asr.base import ASR_SAMPLE_RATE
from speech.metrics.asr.whisper_ct2 import WhisperCT2ASR
from speech.metrics.separability import format_separability, measure_separability
from speech.metrics.wer import score_utterance


def voice_label(record: dict) -> str:
    """The engine voice, with Kokoro weights and WORLD warps spelled out."""
    label = record["engine_voice"]
    if "kokoro_voice" in record:
        weights = record["kokoro_voice"]["weights"]
        if len(weights) > 1:
            label += " (" + " ".join(f"{n.split('_')[1][:4]}{w:+.2f}" for n, w in weights.items()) + ")"
        label += f" speed {record['kokoro_voice']['speed']}"
    warp = record["warp"]
    if warp != {"pitch": 1.0, "formant": 1.0, "rate": 1.0}:
        label += f", warp p{warp['pitch']} f{warp['formant']} r{warp['rate']}"
    return label


def per_speaker_wer(root: Path, records: list[dict], per_speaker: int) -> list[tuple[dict, int, float]]:
    """``(first record, utterances, utterance-mean WER)`` of each speaker, over its first English ones."""
    by_speaker: dict[str, list[dict]] = defaultdict(list)
    for record in sorted(records, key=lambda r: r["id"]):
        if record["language"] == "en" and len(by_speaker[record["speaker"]]) < per_speaker:
            by_speaker[record["speaker"]].append(record)
    asr = WhisperCT2ASR()
    rows = []
    for speaker in sorted(by_speaker):
        group = by_speaker[speaker]
        wavs = [load_audio(root / r["path"], sample_rate=ASR_SAMPLE_RATE)[0] for r in group]
        hyps = asr.transcribe(wavs, language="en", utts=[r["id"] for r in group])
        wers = [score_utterance(r["text"], hyp, "en").wer for r, hyp in zip(group, hyps, strict=True)]
        rows.append((group[0], len(group), float(np.mean(wers))))
    return rows


def report(root: Path, per_speaker: int) -> str:
    records = read_manifest(root)
    rows = per_speaker_wer(root, records, per_speaker)
    lines = ["| speaker | split | voice | utts | Whisper WER % |", "|---|---|---|---:|---:|"]
    for record, n, wer in rows:
        split = record["split"] + (f" ({record['heldout']})" if record["heldout"] else "")
        lines.append(f"| {record['speaker']} | {split} | {voice_label(record)} | {n} | {100 * wer:.1f} |")
    for split in ("train", "test", None):
        chosen = [(n, w) for r, n, w in rows if split in (None, r["split"])]
        if chosen:
            mean = sum(n * w for n, w in chosen) / sum(n for n, _ in chosen)
            lines.append(
                f"| all {split or 'speakers'} | | | {sum(n for n, _ in chosen)} | {100 * mean:.1f} |"
            )
    everyone = [{**r, "split": "test"} for r in records]
    separability = measure_separability(root, everyone, per_speaker=per_speaker)
    lines += ["", f"All {separability.get('speakers', 0)} speakers: " + format_separability(separability)]
    lines.append(
        "Closest pairs: " + ", ".join(f"{a} / {b} {c:.3f}" for a, b, c in separability["closest_speakers"])
    )
    lines += ["", "```json", json.dumps(separability), "```"]
    return "\n".join(lines) + "\n"


@hydra.main(config_path="../../configs", config_name="entry/corpus_voice_report", version_base="1.3")
def main(cfg: DictConfig) -> str:
    text = report(Path(cfg.corpus), cfg.per_speaker)
    print(text)
    if cfg.out is not None:
        Path(cfg.out).write_text(text, encoding="utf-8")
    return text


if __name__ == "__main__":
    main()
