"""eval/compare_runs.py: one table over several seedtts_eval runs."""

import json
from pathlib import Path

import pytest
from script_runs import run_script

ROOT = Path(__file__).resolve().parents[2]


def _ci(x):
    return {"estimate": x, "low": x - 0.01, "high": x + 0.01, "level": 0.95}


def _summary(meta, wer, sim, truth=True):
    row = {"n_scored": 3, "n_expected": 4, "wer": _ci(wer), "corpus_wer": _ci(wer), "sim": _ci(sim),
           "words_right": _ci(1 - wer), "words_right_chance": _ci(0.02)}  # fmt: skip
    out = {"meta": meta, "asr": "pocketsphinx", "speaker": "resemblyzer", "generated": row}
    out["ground_truth"] = {**row, "wer": _ci(0.05), "sim": _ci(0.9)} if truth else None
    return out


def _run(argv):
    return run_script(ROOT / "eval" / "compare_runs.py", *argv)


def _runs(**folders) -> str:
    """The ``runs={label: folder, ...}`` override (labels may hold dashes: ``zero_shot`` -> ``zero-shot``)."""
    return "runs={" + ", ".join(f"{label.replace('_', '-')}: {path}" for label, path in folders.items()) + "}"


def test_table_has_one_row_per_run_and_ground_truth(tmp_path, capsys):
    for name, wer, sim, truth in (("zs", 0.5, 0.6, False), ("os", 0.25, 0.7, True)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(_summary("m.lst", wer, sim, truth)))
    _run(
        [
            _runs(zero_shot=tmp_path / "zs", one_shot=tmp_path / "os" / "summary.json"),
            f"out={tmp_path / 't.md'}",
        ]
    )
    table = (tmp_path / "t.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "row" not in line]
    assert [r.split("|")[1].strip() for r in rows] == ["ground truth", "zero-shot", "one-shot"]
    assert "5.00" in rows[0] and "50.00 [49.00, 51.00]" in rows[1] and "0.700" in rows[2]
    assert "| 75.0 [74.0, 76.0] | 2.0 [1.0, 3.0] |" in rows[2]  # words right, then its chance level
    assert [r.split("|")[-2].strip() for r in rows] == ["x1.00", "x10.00", "x5.00"]  # WER over the truth's
    assert table in capsys.readouterr().out


def test_a_summary_from_before_words_right_shows_na(tmp_path):
    old = _summary("m.lst", 0.5, 0.6)
    del old["generated"]["words_right"], old["generated"]["words_right_chance"]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "summary.json").write_text(json.dumps(old))
    _run([_runs(old=tmp_path / "old"), f"out={tmp_path / 't.md'}"])
    (row,) = [line for line in (tmp_path / "t.md").read_text().splitlines() if line.startswith("| old ")]
    assert row.split("|")[5].strip() == row.split("|")[6].strip() == "n/a" and "0.600" in row


def test_refuses_runs_on_different_test_sets(tmp_path):
    for name, meta in (("a", "en.lst"), ("b", "zh.lst")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(_summary(meta, 0.1, 0.5)))
    with pytest.raises(SystemExit, match="different test sets"):
        _run([_runs(a=tmp_path / "a", b=tmp_path / "b")])


def test_missing_run_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # the error itself, not Hydra's exit
    with pytest.raises(FileNotFoundError, match="seedtts_eval.py"):
        _run([f"+runs.a={tmp_path / 'nope'}"])


@pytest.mark.parametrize("runs", ["runs={}", "runs=logs/eval/zs", "runs=[logs/eval/zs]"])
def test_runs_must_map_labels_to_folders(runs):
    with pytest.raises(
        SystemExit, match=r"runs: expected \{label: <eval dir>, ...\}, e.g. 'runs=\{zero-shot"
    ):
        _run([runs])


def test_ground_truth_row_from_a_separate_eval(tmp_path):
    runs = {"zs": _summary("m.lst", 0.5, 0.6, truth=False), "gt": _summary("m.lst", 1.0, 0.0)}
    runs["gt"]["ground_truth"]["wer"] = _ci(0.33)
    runs["other"] = _summary("other.lst", 1.0, 0.0)
    for name, summary in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
    _run([_runs(zero_shot=tmp_path / "zs"), f"ground_truth={tmp_path / 'gt'}", f"out={tmp_path / 't.md'}"])
    lines = (tmp_path / "t.md").read_text().splitlines()
    truth = [line for line in lines if line.startswith("| ground truth")]
    assert len(truth) == 1 and "33.00 [32.00, 34.00]" in truth[0]
    with pytest.raises(SystemExit, match="no ground-truth row of m.lst"):
        _run([_runs(zero_shot=tmp_path / "zs"), f"ground_truth={tmp_path / 'other'}"])


def test_without_a_ground_truth_row_there_is_no_relative_column(tmp_path, capsys):
    (tmp_path / "zs").mkdir()
    (tmp_path / "zs" / "summary.json").write_text(json.dumps(_summary("m.lst", 0.5, 0.6, truth=False)))
    _run([f"+runs.zero-shot={tmp_path / 'zs'}"])  # one run per argument
    table = capsys.readouterr().out
    assert "WER / truth" not in table and "| zero-shot | 3 / 4 | 50.00" in table
