"""One WER/SIM table for several runs scored on the same test set by ``eval/seedtts_eval.py``.

    python eval/compare_runs.py 'runs={zero-shot: logs/eval/zs, one-shot: logs/eval/os}' \\
        out=logs/eval/table.md

``runs`` maps each label to the ``out_dir`` of a seedtts_eval run (or the path of its summary.json); one
run can also be added per argument, ``+runs.zero-shot=logs/eval/zs`` (``configs/entry/compare_runs.yaml``).
The table gets one row per run plus the ground-truth row (of the first run that scored it, or of
``ground_truth``: an eval folder such as ``scripts/score_ground_truth.py`` writes), and is printed and
optionally written to ``out``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from speech.metrics.seedtts import GROUND_TRUTH, comparison_markdown


def load_summary(path: str) -> dict:
    p = Path(path)
    p = p / "summary.json" if p.is_dir() else p
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: run eval/seedtts_eval.py with out_dir={path} first")
    return json.loads(p.read_text())


def load_runs(folders: Mapping[str, str]) -> dict[str, dict]:
    """``label -> summary`` of each run, all scored on one test set.

    Raises:
        SystemExit: no runs, or runs scored on different test sets.
        FileNotFoundError: a run without a summary.json, naming the command that writes it.
    """
    if not isinstance(folders, Mapping) or not folders:
        raise SystemExit(
            "runs: expected {label: <eval dir>, ...}, e.g. 'runs={zero-shot: logs/eval/zs}'; "
            f"got {folders!r}"
        )
    runs = {str(label): load_summary(str(path)) for label, path in folders.items()}
    metas = {s.get("meta") for s in runs.values()}
    if len(metas) > 1:
        raise SystemExit(f"the runs were scored on different test sets: {sorted(map(str, metas))}")
    return runs


def compare(folders: Mapping[str, str], ground_truth: str | None = None, out: str | None = None) -> str:
    """The markdown table of the runs in ``folders`` (``label -> eval dir``); printed, and written to
    ``out`` when given."""
    runs = load_runs(folders)
    first = next(iter(runs.values()))
    truth = None
    if ground_truth:
        truth_summary = load_summary(ground_truth)
        if truth_summary.get("meta") != first.get("meta") or not truth_summary.get(GROUND_TRUTH):
            raise SystemExit(
                f"ground_truth={ground_truth} holds no ground-truth row of {first.get('meta')} "
                f"(it scored {truth_summary.get('meta')})"
            )
        truth = truth_summary[GROUND_TRUTH]
    table = (
        f"Test set `{first.get('meta')}`, ASR `{first.get('asr')}`, speaker model `{first.get('speaker')}`; "
        "brackets: 95% bootstrap CIs over utterances.\n\n" + comparison_markdown(runs, truth=truth)
    )
    print(table)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(table)
    return table


@hydra.main(config_path="../configs", config_name="entry/compare_runs", version_base="1.3")
def main(cfg: DictConfig) -> str:
    args = OmegaConf.to_container(cfg, resolve=True)  # runs as a plain dict (or what was given instead)
    return compare(args["runs"], args["ground_truth"], args["out"])


if __name__ == "__main__":
    main()
