"""One WER/SIM table for several runs scored on the same test set by ``eval/seedtts_eval.py``.

    python eval/compare_runs.py zero-shot=logs/eval/zs one-shot=logs/eval/os --out logs/eval/table.md

Each argument is ``label=<out_dir of a seedtts_eval run>`` (or the path of its summary.json). The table
gets one row per run plus the ground-truth row (of the first run that scored it, or of ``--ground-truth``:
an eval folder such as ``scripts/score_ground_truth.py`` writes), and is printed and optionally written to
``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from speech.metrics.seedtts import GROUND_TRUTH, comparison_markdown


def load_summary(path: str) -> dict:
    p = Path(path)
    p = p / "summary.json" if p.is_dir() else p
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: run eval/seedtts_eval.py with out_dir={path} first")
    return json.loads(p.read_text())


def parse_runs(items: list[str]) -> dict[str, dict]:
    runs = {}
    for item in items:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise SystemExit(f"expected label=<eval dir>, got {item!r}")
        runs[label] = load_summary(path)
    metas = {s.get("meta") for s in runs.values()}
    if len(metas) > 1:
        raise SystemExit(f"the runs were scored on different test sets: {sorted(map(str, metas))}")
    return runs


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", help="label=<seedtts_eval out_dir or summary.json>")
    parser.add_argument("--out", help="also write the table (markdown) here")
    parser.add_argument("--ground-truth", help="the ground-truth row from this eval folder (or summary.json)")
    args = parser.parse_args(argv)
    runs = parse_runs(args.runs)
    first = next(iter(runs.values()))
    truth = None
    if args.ground_truth:
        truth_summary = load_summary(args.ground_truth)
        if truth_summary.get("meta") != first.get("meta") or not truth_summary.get(GROUND_TRUTH):
            raise SystemExit(
                f"--ground-truth {args.ground_truth} holds no ground-truth row of {first.get('meta')} "
                f"(it scored {truth_summary.get('meta')})"
            )
        truth = truth_summary[GROUND_TRUTH]
    table = (
        f"Test set `{first.get('meta')}`, ASR `{first.get('asr')}`, speaker model `{first.get('speaker')}`; "
        "brackets: 95% bootstrap CIs over utterances.\n\n" + comparison_markdown(runs, truth=truth)
    )
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table)
    return table


if __name__ == "__main__":
    main()
