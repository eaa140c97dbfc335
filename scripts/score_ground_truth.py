"""Ground-truth rows of every synthetic test set (each language separately) with one ASR/SIM setup.

    python scripts/score_ground_truth.py asr=ctc_judge \
        asr.checkpoint=logs/judge_asr_tiny/checkpoints/last.ckpt
    python scripts/score_ground_truth.py asr=pocketsphinx sets=[test-synth-en]

Runs the evaluation suite on each ``meta.lst`` / ``meta.<lang>.lst`` of ``corpus_root`` with no generated
audio, so only the ground-truth row is scored: how well the ASR reads the real recordings (its error rate
is the floor under any TTS system's WER on the set) and cos(ground truth, prompt) for SIM. Prints a
markdown table and writes it with the per-set outputs under ``out_dir``.
"""

from __future__ import annotations

import json
import tempfile
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


@hydra.main(config_path="../configs", config_name="score_ground_truth", version_base="1.3")
def main(cfg: DictConfig) -> str:
    asr, speaker = instantiate(cfg.asr), instantiate(cfg.speaker)
    rows = ["| set | language | items | WER % (utterance mean) | corpus WER % | SIM (GT vs prompt) |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    with tempfile.TemporaryDirectory() as empty:
        for name in cfg.sets:
            for lang, meta in meta_files(Path(cfg.corpus_root) / name):
                if not asr.supports(lang):
                    continue
                result = evaluate_seedtts(meta, empty, asr=asr, embedder=speaker, language=lang,
                                          ground_truth=True, progress=cfg.progress)  # fmt: skip
                write_outputs(result, Path(cfg.out_dir) / name / lang)
                gt = result.summary[GROUND_TRUTH]
                rows.append(f"| {name} | {lang} | {gt['n_scored']} | {_cell(gt['wer'], 100, 1)} | "
                            f"{_cell(gt['corpus_wer'], 100, 1)} | {_cell(gt['sim'], 1, 3)} |")  # fmt: skip
    table = "\n".join(rows) + "\n"
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.out_dir) / "ground_truth.md").write_text(table)
    (Path(cfg.out_dir) / "settings.json").write_text(json.dumps({"asr": cfg.asr._target_}, indent=2))
    print(table)
    return table


if __name__ == "__main__":
    main()
