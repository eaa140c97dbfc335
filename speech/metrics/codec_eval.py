"""Codec evaluation over folders: every ``<name>.wav`` resynthesis against its original ``<name>.wav``."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tqdm import tqdm

from speech.audio.io import AudioError, load_audio
from speech.metrics.codec import codec_metrics, summarize
from speech.metrics.speaker.base import SpeakerEmbedder


def evaluate_codec(
    ref_dir: str | Path,
    est_dir: str | Path,
    *,
    sample_rate: int,
    embedder: SpeakerEmbedder | None = None,
    progress: bool = True,
) -> tuple[list[dict], dict]:
    """Scores each resynthesis in ``est_dir`` against the same-named original in ``ref_dir``.

    Both files are loaded at ``sample_rate``. Originals without a resynthesis (or unreadable ones) are
    counted in the summary, never silently dropped.

    Returns:
        ``(records, summary)``: one dict per scored pair (``name`` + metrics) and
        ``{"n_expected", "n_scored", "missing", "unreadable", "metrics": summarize(...)}``.
    """
    ref_dir, est_dir = Path(ref_dir), Path(est_dir)
    refs = sorted(ref_dir.glob("*.wav"))
    if not refs:
        raise FileNotFoundError(f"no *.wav originals in {ref_dir}")
    records, missing, unreadable = [], [], []
    for ref_path in tqdm(refs, desc="codec metrics", unit="utt", disable=not progress):
        est_path = est_dir / ref_path.name
        if not est_path.is_file():
            missing.append(ref_path.stem)
            continue
        try:
            ref, _ = load_audio(ref_path, sample_rate=sample_rate)
            est, _ = load_audio(est_path, sample_rate=sample_rate)
        except AudioError as err:
            unreadable.append(f"{ref_path.stem}: {err}")
            continue
        records.append({"name": ref_path.stem, **codec_metrics(ref, est, sample_rate, embedder)})
    summary = {
        "n_expected": len(refs),
        "n_scored": len(records),
        "missing": missing,
        "unreadable": unreadable,
        "metrics": summarize([{k: v for k, v in r.items() if k != "name"} for r in records]),
    }
    return records, summary


def codec_markdown(summary: dict) -> str:
    """A one-row-per-metric table with the coverage line."""
    lines = [
        f"scored {summary['n_scored']} / {summary['n_expected']} "
        f"(missing {len(summary['missing'])}, unreadable {len(summary['unreadable'])})",
        "",
        "| metric | mean | std | n | undefined |",
        "|---|---|---|---|---|",
    ]
    for name, m in summary["metrics"].items():
        mean = "n/a" if math.isnan(m["mean"]) else f"{m['mean']:.4f}"
        std = "n/a" if math.isnan(m["std"]) else f"{m['std']:.4f}"
        lines.append(f"| {name} | {mean} | {std} | {m['n']} | {m['n_nan']} |")
    return "\n".join(lines) + "\n"


def write_codec_outputs(records: list[dict], summary: dict, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "utterances.jsonl").open("w") as f:
        for rec in records:
            clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rec.items()}
            f.write(json.dumps(clean) + "\n")
    clean = json.loads(json.dumps(summary, default=str).replace("NaN", "null"))
    (out / "summary.json").write_text(json.dumps(clean, indent=2))
    (out / "summary.md").write_text(codec_markdown(summary))
    return out
