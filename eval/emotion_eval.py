"""Do emotion adapters move prosody the way their training data does? One table and one plot.

    python eval/emotion_eval.py base=logs/emo/base 'emotions={happy: logs/emo/happy, sad: logs/emo/sad}' \\
        corpus=data/synthetic_emotion_tiny out=logs/emo/prosody

``base`` holds ``<utt>.wav`` generated without an adapter; each ``emotions`` folder holds the same utterances
generated with that emotion's adapter (same texts, references and seed). Per emotion, every utterance in
both folders gives an F0 ratio, a duration ratio and a loudness difference (``speech.audio.prosody``);
their medians are set beside the same medians of the training data: each rendition of the emotion corpus
(``corpus``) against the neutral rendition of the same source utterance. Writes ``prosody.json``,
``prosody.md`` and ``prosody.png`` to ``out`` and prints the table (``configs/entry/emotion_eval.yaml``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from speech.audio.io import load_audio
from speech.audio.prosody import ProsodyShift, measure_prosody, median_shift, prosody_shift
from speech.data.synthetic.catalog import read_manifest

SR = 16000
FIELDS = {"f0_ratio": "F0 ratio", "duration_ratio": "duration ratio", "loudness_db": "loudness (dB)"}


def _prosody(path: Path):
    return measure_prosody(load_audio(path, sample_rate=SR)[0], SR)


def generated_shifts(base: Path, emotive: Path, progress: bool = True) -> list[ProsodyShift]:
    """Shifts of every ``<utt>.wav`` found in both folders.

    Raises:
        FileNotFoundError: a folder is missing or the two share no wav.
    """
    for folder in (base, emotive):
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder} not found: generate it with infer.py meta=... out_dir={folder}"
            )
    names = sorted({p.name for p in base.glob("*.wav")} & {p.name for p in emotive.glob("*.wav")})
    if not names:
        raise FileNotFoundError(f"{base} and {emotive} share no <utt>.wav")
    bar = tqdm(names, desc=f"prosody {emotive.name}", unit="utt", disable=not progress)
    return [prosody_shift(_prosody(emotive / n), _prosody(base / n)) for n in bar]


def corpus_shifts(root: Path, emotion: str, progress: bool = True) -> list[ProsodyShift]:
    """Shifts of every rendition of ``emotion`` in the emotion corpus against its neutral rendition."""
    records = read_manifest(root)
    neutral = {r["source_id"]: r for r in records if r.get("emotion") == "neutral"}
    pairs = [(r, neutral[r["source_id"]]) for r in records
             if r.get("emotion") == emotion and r["source_id"] in neutral]  # fmt: skip
    bar = tqdm(pairs, desc=f"prosody corpus {emotion}", unit="utt", disable=not progress)
    return [prosody_shift(_prosody(root / r["path"]), _prosody(root / n["path"])) for r, n in bar]


def _cell(value: float, field: str) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:+.1f}" if field == "loudness_db" else f"{value:.3f}"


def markdown(results: dict[str, dict]) -> str:
    """One row per emotion; each measure twice: in the training data and in the adapter's output."""
    head = ["emotion", "utterances: data", "generated"]
    for label in FIELDS.values():
        head += [f"{label}: data", "generated"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for emotion, r in results.items():
        cells = [emotion, str(r["data"]["count"]), str(r["generated"]["count"])]
        for field in FIELDS:
            cells += [_cell(r["data"][field], field), _cell(r["generated"][field], field)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    emotions = list(results)
    fig, axes = plt.subplots(1, len(FIELDS), figsize=(4.2 * len(FIELDS), 3.6))
    x = range(len(emotions))
    for ax, (field, label) in zip(axes, FIELDS.items(), strict=True):
        neutral = 0.0 if field == "loudness_db" else 1.0
        for offset, (kind, colour) in zip((-0.2, 0.2), (("data", "tab:gray"), ("generated", "tab:blue")),
                                          strict=True):  # fmt: skip
            values = [results[e][kind][field] - neutral for e in emotions]
            ax.bar([i + offset for i in x], values, width=0.4, bottom=neutral, color=colour, label=kind)
        ax.axhline(neutral, color="black", linewidth=0.8)
        ax.set_xticks(list(x), emotions, rotation=45, ha="right")
        ax.set_title(label)
    axes[0].legend()
    fig.suptitle("each emotion against neutral: training renditions vs adapter output (medians)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def evaluate(emotions: Mapping[str, str], base: str, corpus: str, out: str, progress: bool = True) -> dict:
    """``emotion -> {"data": medians, "generated": medians}``, also written to ``out/prosody.{json,md,png}``.

    Raises:
        SystemExit: ``emotions`` is not an ``{emotion: folder}`` mapping, or the corpus lacks an emotion.
        FileNotFoundError: a generated folder is missing or shares no wav with ``base``.
    """
    if not isinstance(emotions, Mapping) or not emotions:
        raise SystemExit(
            "expected emotions={<emotion>: <folder>, ...}, e.g. 'emotions={happy: out/happy}'; "
            f"got {emotions!r}"
        )
    results = {}
    for emotion, folder in emotions.items():
        data = corpus_shifts(Path(corpus), emotion, progress)
        if not data:
            raise SystemExit(f"the corpus {corpus} has no {emotion!r} rendition with a neutral one")
        results[emotion] = {
            "data": median_shift(data),
            "generated": median_shift(generated_shifts(Path(base), Path(folder), progress)),
        }
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "prosody.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (out_dir / "prosody.md").write_text(table)
    plot(results, out_dir / "prosody.png")
    print(table)
    return results


@hydra.main(config_path="../configs", config_name="entry/emotion_eval", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    args = OmegaConf.to_container(cfg, resolve=True)  # emotions as a plain dict (or what was given instead)
    return evaluate(args["emotions"], args["base"], args["corpus"], args["out"], progress=args["progress"])


if __name__ == "__main__":
    main()
