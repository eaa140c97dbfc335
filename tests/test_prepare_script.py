"""scripts/prepare_data.py end to end on a generic wav+txt folder, through Hydra like a user runs it."""

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "prepare_data.py"


def make_folder_corpus(root, text):
    """Three speakers x 4 one-second noise clips, ``text(speaker, i)`` as transcripts, and one broken clip."""
    rng = np.random.default_rng(0)
    for spk in ("anna", "bert", "carl"):
        for i in range(4):
            (root / spk).mkdir(parents=True, exist_ok=True)
            sf.write(root / spk / f"{i}.wav", (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
            (root / spk / f"{i}.txt").write_text(text(spk, i))
    (root / "anna" / "broken.wav").write_bytes(b"nope")
    (root / "anna" / "broken.txt").write_text("unreadable audio")


def run_prepare(root, tmp_path, monkeypatch) -> dict:
    monkeypatch.setattr(sys, "argv", [
        str(SCRIPT), "data=folder", f"data.root={root}", f"paths.data_dir={tmp_path}/data",
        f"paths.log_dir={tmp_path}/logs", "data.bpe.vocab_size=300", "data.datamodule.max_duration=3",
        "data.datamodule.num_workers=0", "progress=false",
    ])  # fmt: skip
    runpy.run_path(str(SCRIPT), run_name="__main__")
    return json.loads((tmp_path / "data" / "prepared" / "folder" / "summary.json").read_text())


def test_prepare_folder_corpus(tmp_path, monkeypatch, capsys):
    root = tmp_path / "voices"
    make_folder_corpus(root, lambda spk, i: f"{spk} says sentence number {i}.")
    summary = run_prepare(root, tmp_path, monkeypatch)
    out = tmp_path / "data" / "prepared" / "folder"
    assert summary["val_texts_in_train"] == 0
    assert summary["skipped"] == {"unreadable": 1}
    assert summary["pipeline"]["references_same_utterance_or_wrong_speaker"] == 0
    assert summary["pipeline"]["batches"] >= 1 and summary["pipeline"]["last_mel_shape"][2] == 80
    assert (
        summary["train"]["speakers"] == 3
        and summary["train"]["utterances"] + summary["val"]["utterances"] == 12
    )
    rejected = (out / "rejects.tsv").read_text().splitlines()
    assert len(rejected) == 1 and rejected[0].split("\t")[1] == "unreadable" and "broken" in rejected[0]
    assert (out / "durations.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert '"references_same_utterance_or_wrong_speaker": 0' in printed
    assert "1 items skipped (1 unreadable)" in printed


def test_validation_sentences_heard_in_training_are_counted_and_warned_about(tmp_path, monkeypatch, capsys):
    root = tmp_path / "voices"
    make_folder_corpus(root, lambda spk, i: f"everyone says sentence number {i}.")
    summary = run_prepare(root, tmp_path, monkeypatch)
    assert summary["val_texts_in_train"] == summary["val"]["utterances"] > 0
    printed = capsys.readouterr().out
    assert "warning: 3 of 3 validation utterances" in printed and "max_sentences_per_language" in printed
