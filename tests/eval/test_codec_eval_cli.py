"""eval/codec_eval.py end to end: identical, noisy, missing and unreadable resyntheses all counted."""

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

SCRIPT = Path(__file__).resolve().parents[2] / "eval" / "codec_eval.py"


def test_codec_eval_folders(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    speechlike = (0.3 * np.sin(2 * np.pi * 200 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    ref, est = tmp_path / "ref", tmp_path / "est"
    ref.mkdir(), est.mkdir()
    for name in ("same", "noisy", "missing", "broken"):
        sf.write(ref / f"{name}.wav", speechlike, 16000)
    sf.write(est / "same.wav", speechlike, 16000)
    sf.write(est / "noisy.wav", speechlike + 0.05 * rng.standard_normal(32000).astype(np.float32), 16000)
    (est / "broken.wav").write_bytes(b"garbage")
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), f"ref_dir={ref}", f"est_dir={est}",
                                      f"out_dir={tmp_path}/out", "~speaker", "progress=false"])  # fmt: skip
    runpy.run_path(str(SCRIPT), run_name="__main__")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_expected"] == 4 and summary["n_scored"] == 2
    assert summary["missing"] == ["missing"] and summary["unreadable"][0].startswith("broken")
    rows = {
        r["name"]: r
        for r in map(json.loads, (tmp_path / "out" / "utterances.jsonl").read_text().splitlines())
    }
    assert rows["same"]["mel_l1"] == 0.0 and rows["noisy"]["mel_l1"] > 0.1
    assert rows["same"]["stoi"] > rows["noisy"]["stoi"]
    assert "scored 2 / 4 (missing 1, unreadable 1)" in capsys.readouterr().out
