"""scripts/score_ground_truth.py: the per-voice table of the ground-truth rows."""

import json
import runpy
from pathlib import Path
from types import SimpleNamespace

SCRIPT = runpy.run_path(str(Path(__file__).resolve().parents[1] / "scripts" / "score_ground_truth.py"))


def test_per_voice_rows_average_each_speaker_and_list_the_best_first(tmp_path):
    lines = [
        {"id": "a-en-001", "speaker": "a"},
        {"id": "a-en-002", "speaker": "a"},
        {"id": "b-en-001", "speaker": "b"},
    ]
    (tmp_path / "manifest.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")
    speakers = SCRIPT["speakers_of"](tmp_path)
    assert speakers == {"a-en-001": "a", "a-en-002": "a", "b-en-001": "b"}
    records = [
        SimpleNamespace(utt="a-en-001", wav="gt/a-en-001.wav", wer=0.5, sim=0.8),
        SimpleNamespace(utt="a-en-002-from-de", wav="gt/a-en-002.wav", wer=0.1, sim=0.9),
        SimpleNamespace(utt="b-en-001", wav="gt/b-en-001.wav", wer=0.2, sim=None),
        SimpleNamespace(utt="c-en-001", wav="gt/c-en-001.wav", wer=None, sim=0.7),
    ]
    rows = SCRIPT["per_voice_rows"]("test-x", "en", records, speakers)
    assert rows == [
        "| test-x | en | b | 1 | 20.0 | n/a |",
        "| test-x | en | a | 2 | 30.0 | 0.850 |",
        "| test-x | en | ? | 1 | n/a | 0.700 |",  # not in the manifest, no WER
    ]
    assert SCRIPT["speakers_of"](tmp_path / "nowhere") == {}
