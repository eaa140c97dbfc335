"""Ground-truth rows of every synthetic test set (each language separately) with one ASR/SIM setup.

    python scripts/score_ground_truth.py asr=ctc_judge \
        asr.checkpoint=logs/ctc_judge_tiny/checkpoints/last.ckpt
    python scripts/score_ground_truth.py asr=pocketsphinx sets=[test-synth-en]

Runs the evaluation suite on each ``meta.lst`` / ``meta.<lang>.lst`` of ``corpus_root`` with no generated
audio, so only the ground-truth row is scored: how well the ASR reads the real recordings (its error rate
is the floor under any TTS system's WER on the set) and cos(ground truth, prompt) for SIM. Prints a
markdown table and writes it with the per-set outputs under ``out_dir``, plus ``per_voice.md``: the same
per test voice (speakers from the corpus's ``manifest.jsonl``), since judges read some voices far better
than others.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from speech.metrics.seedtts import GROUND_TRUTH, evaluate_seedtts, write_outputs


def meta_files(set_dir: Path) -> list[tuple[str, Path]]:
    """``(language, meta file)`` pairs: the per-language lists where a set mixes languages."""
    per_language = sorted(set_dir.glob("meta.*.lst"))
    if per_language:
        return [(p.name.split(".")[1], p) for p in per_language]
    return [("en", set_dir / "meta.lst")]


def _cell(ci: dict | None, scale: float, digits: int) -> str:
    if not ci or ci.get("estimate") is None:
        return "n/a"
    est, low, high = (ci[k] * scale for k in ("estimate", "low", "high"))
    return f"{est:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def speakers_of(corpus_root: Path) -> dict[str, str]:
    """Utterance id -> speaker, from the corpus's ``manifest.jsonl`` (empty when there is none)."""
    manifest = corpus_root / "manifest.jsonl"
    if not manifest.is_file():
        return {}
    return {row["id"]: row["speaker"] for row in map(json.loads, manifest.read_text().splitlines()) if row}


def per_voice_rows(name: str, lang: str, records, speakers: dict[str, str]) -> list[str]:
    """Markdown rows of utterance-mean WER and mean SIM per speaker, best WER first."""
    groups = defaultdict(list)
    for record in records:  # cross-lingual items are named <target>-from-<lang>: their wav is the target's
        speaker = speakers.get(record.utt) or speakers.get(Path(record.wav).stem, "?")
        groups[speaker].append(record)

    def mean(values):
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    stats = {
        voice: (mean([r.wer for r in rs]), mean([r.sim for r in rs]), len(rs)) for voice, rs in groups.items()
    }
    order = sorted(stats, key=lambda v: (stats[v][0] is None, stats[v][0] or 0.0, v))
    return [
        f"| {name} | {lang} | {voice} | {stats[voice][2]} | "
        f"{'n/a' if stats[voice][0] is None else f'{100 * stats[voice][0]:.1f}'} | "
        f"{'n/a' if stats[voice][1] is None else f'{stats[voice][1]:.3f}'} |"
        for voice in order
    ]


@hydra.main(config_path="../configs", config_name="entry/score_ground_truth", version_base="1.3")
def main(cfg: DictConfig) -> str:
    asr, speaker = instantiate(cfg.asr), instantiate(cfg.speaker)
    rows = ["| set | language | items | WER % (utterance mean) | corpus WER % | SIM (GT vs prompt) |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    voices = ["| set | language | voice | items | WER % (utterance mean) | SIM (GT vs prompt) |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    speakers = speakers_of(Path(cfg.corpus_root))
    with tempfile.TemporaryDirectory() as empty:
        for name in cfg.sets:
            for lang, meta in meta_files(Path(cfg.corpus_root) / name):
                if not asr.supports(lang):
                    continue
                result = evaluate_seedtts(meta, empty, asr=asr, embedder=speaker, language=lang,
                                          ground_truth=True, progress=cfg.progress)  # fmt: skip
                write_outputs(result, Path(cfg.out_dir) / name / lang)
                voices += per_voice_rows(name, lang, result.ground_truth.records, speakers)
                gt = result.summary[GROUND_TRUTH]
                rows.append(f"| {name} | {lang} | {gt['n_scored']} | {_cell(gt['wer'], 100, 1)} | "
                            f"{_cell(gt['corpus_wer'], 100, 1)} | {_cell(gt['sim'], 1, 3)} |")  # fmt: skip
    table = "\n".join(rows) + "\n"
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.out_dir) / "ground_truth.md").write_text(table)
    (Path(cfg.out_dir) / "per_voice.md").write_text("\n".join(voices) + "\n")
    (Path(cfg.out_dir) / "settings.json").write_text(json.dumps({"asr": cfg.asr._target_}, indent=2))
    print(table)
    return table


if __name__ == "__main__":
    main()
