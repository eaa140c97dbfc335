"""eval/ar_token_content.py end to end through Hydra: tiny random AR and tokenizer checkpoints, a meta list
with ground-truth wavs; the summary reads both rows and names what is missing."""

import importlib.util
import json
import runpy
import sys
from pathlib import Path

import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "eval" / "ar_token_content.py"
_spec = importlib.util.spec_from_file_location(
    "tiny_pipeline", ROOT / "tests" / "inference" / "tiny_pipeline.py"
)
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)

pytestmark = pytest.mark.usefixtures("one_thread")


def run(monkeypatch, *overrides):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *overrides])
    runpy.run_path(str(SCRIPT), run_name="__main__")


def test_both_rows_are_read_by_the_tokenizer_it_was_trained_on(tmp_path, monkeypatch, capsys):
    ckpts = tiny.write_checkpoints(tmp_path)
    refs = tiny.write_references(tmp_path)
    meta = tmp_path / "meta.lst"
    meta.write_text(
        f"u1|alpha|{refs[0]}|gamma delta|{refs[1]}\nu2|beta|{refs[1]}|epsilon zeta eta|{refs[2]}\n"
        f"u3|beta|{refs[2]}|no ground truth here\n"
    )
    out = tmp_path / "out"
    run(monkeypatch, f"ar_ckpt={ckpts['ar']}", f"meta={meta}", f"out_dir={out}", "progress=false",
        "sampling.temperature=0")  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 2 and summary["tokenizer_ckpt"] == str(ckpts["tokenizer"])  # the AR's upstream
    # the ground truth's tokens: 25 per second of each gt wav (1.2 s and 1.6 s)
    seconds = [sf.info(str(p)).duration for p in refs[1:]]
    assert summary["ground_truth"]["mean_tokens"] == pytest.approx(sum(25 * s for s in seconds) / 2, abs=1)
    for row in ("ground_truth", "generated"):
        assert (
            summary[row]["cer"] >= 0 and summary[row]["chance_cer"] >= 0 and summary[row]["mean_tokens"] > 0
        )
    assert summary["example"]["reference"] == "gamma delta"
    assert "generated     CER" in capsys.readouterr().out


def test_a_missing_tokenizer_is_named(tmp_path, monkeypatch):
    ckpts = tiny.write_checkpoints(tmp_path)
    ckpts["tokenizer"].unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer_ckpt="):
        run(monkeypatch, f"ar_ckpt={ckpts['ar']}", f"out_dir={tmp_path / 'out'}", "progress=false")
