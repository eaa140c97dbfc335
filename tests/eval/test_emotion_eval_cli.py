"""eval/emotion_eval.py: the prosody shift of an emotion in its training renditions and in generated wavs,
measured on harmonic tones whose pitch, length and level are known."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from script_runs import run_script

pytest.importorskip("pyworld")
SCRIPT = Path(__file__).resolve().parents[2] / "eval" / "emotion_eval.py"
SR = 16000


def tone(path: Path, f0: float, seconds: float, gain: float) -> None:
    t = np.arange(int(SR * seconds)) / SR
    wav = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (gain * wav / np.abs(wav).max()).astype(np.float32), SR)


def corpus(root: Path) -> Path:
    """Two source utterances said neutral (120 Hz, 1.0 s) and happy (150 Hz, 0.8 s, twice as loud)."""
    records = []
    for i in range(2):
        for emotion, f0, seconds, gain in (("neutral", 120, 1.0, 0.2), ("happy", 150, 0.8, 0.4)):
            path = f"wavs/s/u{i}-{emotion}.wav"
            tone(root / path, f0, seconds, gain)
            records.append({"id": f"u{i}-{emotion}", "source_id": f"u{i}", "emotion": emotion, "path": path})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def test_table_sets_generated_shift_beside_the_data(tmp_path):
    root = corpus(tmp_path / "corpus")
    for name in ("a", "b", "c"):
        tone(tmp_path / "base" / f"{name}.wav", 100, 1.2, 0.3)
        tone(tmp_path / "happy" / f"{name}.wav", 130, 1.0, 0.3)
    tone(tmp_path / "base" / "only_in_base.wav", 100, 1.0, 0.3)  # unpaired: left out
    out = tmp_path / "out"
    run_script(SCRIPT, f"emotions={{happy: {tmp_path / 'happy'}}}", f"base={tmp_path / 'base'}",
               f"corpus={root}", f"out={out}", "progress=false")  # fmt: skip
    saved = json.loads((out / "prosody.json").read_text())["happy"]
    assert saved["data"]["count"] == 2 and saved["generated"]["count"] == 3
    assert saved["data"]["f0_ratio"] == pytest.approx(1.25, rel=0.03)
    assert saved["data"]["duration_ratio"] == pytest.approx(0.8, rel=1e-3)
    assert saved["data"]["loudness_db"] == pytest.approx(20 * math.log10(2), abs=0.1)
    assert saved["generated"]["f0_ratio"] == pytest.approx(1.3, rel=0.03)
    assert saved["generated"]["duration_ratio"] == pytest.approx(1.0 / 1.2, rel=1e-3)
    assert saved["generated"]["loudness_db"] == pytest.approx(0.0, abs=0.1)
    table = (out / "prosody.md").read_text()
    assert "| happy | 2 | 3 | 1.2" in table and (out / "prosody.png").stat().st_size > 1000


def test_missing_emotion_or_folder_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # the errors themselves, not Hydra's exit
    root = corpus(tmp_path / "corpus")
    tone(tmp_path / "base" / "a.wav", 100, 1.0, 0.3)
    tone(tmp_path / "sad" / "a.wav", 100, 1.0, 0.3)
    args = [f"base={tmp_path / 'base'}", f"corpus={root}", f"out={tmp_path / 'out'}", "progress=false"]
    with pytest.raises(SystemExit, match="has no 'sad' rendition with a neutral one"):
        run_script(SCRIPT, f"+emotions.sad={tmp_path / 'sad'}", *args)
    with pytest.raises(FileNotFoundError, match="nowhere not found: generate it with infer.py"):
        run_script(SCRIPT, f"+emotions.happy={tmp_path / 'nowhere'}", *args)
    with pytest.raises(
        SystemExit, match=r"expected emotions=\{<emotion>: <folder>, ...\}, e.g. .*got 'happy'"
    ):
        run_script(SCRIPT, "emotions=happy", *args)
