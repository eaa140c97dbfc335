"""eval/learning_curves.py: metrics of resumed runs, minutes from the training clock, table and plot."""

import importlib.util
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


def test_a_run_keeps_its_color_in_every_panel_and_the_legend_names_every_run():
    """A run that did not log the first metric neither shifts the colors of the others nor drops out of the
    legend."""
    import matplotlib.pyplot as plt

    spec = importlib.util.spec_from_file_location("learning_curves", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    runs = {"old": {"val/loss": {1: 2.0}}, "new": {"val/gain": {1: 0.5}, "val/loss": {1: 1.5}}}
    fig = script.figure(runs, ["val/gain", "val/loss"], "step")
    gain, loss = ([(line.get_label(), line.get_color()) for line in ax.get_lines()] for ax in fig.axes)
    assert gain == [("new", "C1")] and loss == [("old", "C0"), ("new", "C1")]
    assert [text.get_text() for text in fig.axes[0].get_legend().get_texts()] == ["old", "new"]
    plt.close(fig)
