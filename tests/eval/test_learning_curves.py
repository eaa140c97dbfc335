"""eval/learning_curves.py: metrics of resumed runs, minutes from the training clock, table and plot."""

from pathlib import Path

import pytest
from script_runs import run_script

SCRIPT = Path(__file__).resolve().parents[2] / "eval" / "learning_curves.py"


def write_run(root: Path, versions: list[str]) -> Path:
    for i, text in enumerate(versions):
        path = root / "csv" / f"version_{i}" / "metrics.csv"
        path.parent.mkdir(parents=True)
        path.write_text(text)
    return root


def test_resumed_versions_join_and_minutes_come_from_the_clock(tmp_path, capsys):
    clocked = write_run(tmp_path / "a", [
        "epoch,step,time/train_minutes,train/loss,val/loss\n0,9,1.0,3.0,\n0,19,2.0,2.5,\n0,19,,,2.8\n",
        # a resume from step 19: its rows win where they repeat a step
        "epoch,step,time/train_minutes,train/loss,val/loss\n0,29,3.0,2.0,\n0,39,4.0,1.8,\n0,39,,,2.2\n",
    ])  # fmt: skip
    plain = write_run(tmp_path / "b", ["epoch,step,val/loss\n0,19,3.5\n"])
    out = tmp_path / "img" / "curves.png"
    run_script(SCRIPT, f"runs={{clocked: {clocked}, plain: {plain}}}", "metrics=[val/loss]", f"out={out}")
    printed = capsys.readouterr().out
    assert "| clocked | 19 | 2.0 | 2.8 |" in printed and "| clocked | 39 | 4.0 | 2.2 |" in printed
    assert "| plain | 19 |  | 3.5 |" in printed  # no clock: no minutes
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_runs_and_metrics_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # the errors themselves, not Hydra's exit
    with pytest.raises(FileNotFoundError, match="no csv/version_\\*/metrics.csv under"):
        run_script(SCRIPT, f"+runs.x={tmp_path}")
    run = write_run(tmp_path / "r", ["epoch,step,val/loss\n0,1,2.0\n"])
    with pytest.raises(SystemExit, match=r"none of the runs logged \['val/acc'\]; logged: \['val/loss'\]"):
        run_script(SCRIPT, f"+runs.r={run}", "metrics=[val/acc]")
    with pytest.raises(SystemExit, match="x='hours': expected one of minutes | step"):
        run_script(SCRIPT, f"+runs.r={run}", "x=hours")
    with pytest.raises(SystemExit, match=r"runs: expected \{label: <run folder>, ...\}.* got '"):
        run_script(SCRIPT, f"runs={run}")
