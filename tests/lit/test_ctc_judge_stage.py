"""The judge ASR stage: it learns, trains through train.py, resumes, and a checkpoint alone rebuilds it."""

from pathlib import Path

import numpy as np
import pytest
import torch
from script_runs import run_script

from speech.audio.mel import LogMelSpectrogram
from speech.lit.ctc_judge import CTCJudgeModule
from speech.lit.datamodule import SpeechDataModule
from speech.lit.schedules import AdamWSchedule
from speech.metrics.asr.ctc_judge import CTCJudgeASR
from speech.models.ctc_judge import CTCJudge
from speech.text.byte_ctc import judge_target

TRAIN = Path(__file__).resolve().parents[2] / "train.py"


def test_judge_targets():
    assert judge_target("Hello, World!", "en") == "hello world"
    assert judge_target("你好，世界。", "cmn") == "你好世界"


def test_overfits_one_batch(shared_prepared):
    torch.manual_seed(0)
    dm = SpeechDataModule(shared_prepared, max_duration=4.0, num_workers=0, references=False)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    module = CTCJudgeModule(CTCJudge(dim=64, layers=2, heads=2, dropout=0.0), LogMelSpectrogram(),
                            optim=AdamWSchedule(lr=3e-3, warmup_steps=1, total_steps=1000))  # fmt: skip
    opt = module.configure_optimizers()["optimizer"]
    losses = []
    for _ in range(120):
        loss, _, _ = module._loss(batch, augment=False)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0], (losses[0], losses[-1])


def test_train_py_step_resume_and_rebuild(shared_prepared, tmp_path):
    common = [
        "experiment=ctc_judge_tiny", f"data.prepared_dir={shared_prepared}", f"paths.log_dir={tmp_path}",
        "data.datamodule.num_workers=0", "data.datamodule.max_duration=4", "model.dim=32", "model.layers=1",
        "model.heads=2", "trainer.val_check_interval=2", "trainer.enable_progress_bar=false",
        "callbacks.checkpoint.every_n_train_steps=2",
    ]  # fmt: skip
    run_script(TRAIN, *common, "trainer.max_steps=2")
    last = tmp_path / "ctc_judge_tiny" / "checkpoints" / "last.ckpt"
    first = torch.load(last, weights_only=False)
    assert first["global_step"] == 2 and first["config"]["model"]["dim"] == 32
    assert (tmp_path / "ctc_judge_tiny" / "csv" / "version_0" / "metrics.csv").is_file()
    run_script(TRAIN, *common, "trainer.max_steps=4")  # same command, longer: resumes
    second = torch.load(last, weights_only=False)
    first_log = (tmp_path / "ctc_judge_tiny" / "csv" / "version_0" / "metrics.csv").read_text()
    assert "val/loss" in first_log  # the resumed launch logged into version_1 and kept these
    assert (tmp_path / "ctc_judge_tiny" / "csv" / "version_1" / "metrics.csv").is_file()
    assert second["global_step"] == 4
    adam_steps = {int(s["step"]) for s in second["optimizer_states"][0]["state"].values()}
    assert adam_steps == {4}  # a fresh optimizer would have counted 2
    assert not list(last.parent.glob("*.tmp"))
    judge = CTCJudgeASR(str(last))
    texts = judge.transcribe([np.zeros(16000, np.float32), 0.1 * np.ones(8000, np.float32)], language="en")
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_train_py_without_experiment_says_what_to_do(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_script(TRAIN, f"paths.log_dir={tmp_path}", "name=x")
    assert "no stage chosen: run `python train.py experiment=<name>`" in capsys.readouterr().err


def test_judge_missing_checkpoint():
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        CTCJudgeASR("/nonexistent/last.ckpt")
