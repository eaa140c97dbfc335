"""What a long run must survive, through the real train.py (issue 17): ``kill -9`` and a full disk while a
checkpoint is written, a NaN batch, and a resume with a changed config. The stage is a tiny audio tokenizer
on the prepared test corpus (a few seconds a run)."""

import io
import json
import multiprocessing
import os
import re
import signal
from pathlib import Path

import pytest
import torch
from script_runs import run_script
from tiny_tokenizer import tokenizer_command

from speech.checkpoints import CheckpointWriteError, ResumeCheck, ResumeError, load_checkpoint
from speech.lit.audio_tokenizer import AudioTokenizerModule
from speech.lit.callbacks import NonFiniteLossError, RunLineage

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "train.py"

pytestmark = pytest.mark.usefixtures("one_thread")


def checkpoints(log_dir: Path) -> Path:
    return log_dir / "tokenizer_tiny" / "checkpoints"


def steps_logged(log_dir: Path, version: int) -> set[int]:
    """The global steps a launch logged training metrics at (its CSV log)."""
    lines = (
        (log_dir / "tokenizer_tiny" / "csv" / f"version_{version}" / "metrics.csv").read_text().splitlines()
    )
    header = lines[0].split(",")
    step, loss = header.index("step"), header.index("train/loss")
    return {int(row.split(",")[step]) for row in lines[1:] if row.split(",")[loss]}


def _killed_while_saving(args: list[str], at_step: int) -> None:
    """train.py in a forked child whose write of ``last.ckpt`` at ``at_step`` is cut off by SIGKILL after half
    of its bytes reached the disk: what ``kill -9`` (or a power cut) does mid-write."""
    save = torch.save

    def save_then_die(checkpoint, path):
        if checkpoint["global_step"] == at_step and Path(path).name == "last.ckpt.tmp":
            buffer = io.BytesIO()
            save(checkpoint, buffer)
            with open(path, "wb") as f:
                f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                f.flush()
                os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        save(checkpoint, path)

    torch.save = save_then_die  # the child's own copy of the module: the test process is untouched
    run_script(TRAIN, *args)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_kill_9_while_writing_a_checkpoint_keeps_the_previous_one_and_a_rerun_resumes_from_it(
    shared_prepared, tmp_path
):
    args = tokenizer_command(shared_prepared, tmp_path, "trainer.max_steps=4")
    child = multiprocessing.get_context("fork").Process(target=_killed_while_saving, args=(args, 4))
    child.start()
    child.join(timeout=300)
    assert child.exitcode == -signal.SIGKILL
    last = checkpoints(tmp_path) / "last.ckpt"
    partial = last.with_name("last.ckpt.tmp")
    assert partial.exists() and partial.stat().st_size < last.stat().st_size  # the write was cut off
    assert load_checkpoint(last)["global_step"] == 2  # the previous checkpoint, whole
    run_script(TRAIN, *args)  # the same command again
    assert load_checkpoint(last)["global_step"] == 4 and not partial.exists()
    assert steps_logged(tmp_path, 1) and min(steps_logged(tmp_path, 1)) >= 2  # resumed at step 2


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_while_writing_a_checkpoint_fails_clearly_and_keeps_the_previous_one(
    shared_prepared, tmp_path, monkeypatch
):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # the error itself, not Hydra's exit
    run_script(TRAIN, *tokenizer_command(shared_prepared, tmp_path, "trainer.max_steps=2"))
    last = checkpoints(tmp_path) / "last.ckpt"
    partial = last.with_name("last.ckpt.tmp")
    partial.symlink_to("/dev/full")  # the next write of last.ckpt meets a full disk (ENOSPC), for real
    with pytest.raises(CheckpointWriteError) as err:
        run_script(TRAIN, *tokenizer_command(shared_prepared, tmp_path, "trainer.max_steps=4"))
    assert str(err.value).startswith(f"writing the checkpoint {last} failed (")
    assert "the previous last.ckpt (if any) is kept. " in str(err.value)
    assert "free on its disk: is it full?" in str(err.value)
    assert not partial.exists() and load_checkpoint(last)["global_step"] == 2
    # room again: resumes
    run_script(TRAIN, *tokenizer_command(shared_prepared, tmp_path, "trainer.max_steps=4"))
    assert load_checkpoint(last)["global_step"] == 4


@pytest.fixture
def nan_at_step_2(monkeypatch):
    """NaN audio in the training batch of global step 2."""
    step = AudioTokenizerModule.training_step

    def poisoned(self, batch, batch_idx):
        if self.global_step == 2:
            batch = {**batch, "audio": batch["audio"] * float("nan")}
        return step(self, batch, batch_idx)

    monkeypatch.setattr(AudioTokenizerModule, "training_step", poisoned)


@pytest.mark.usefixtures("nan_at_step_2")
def test_a_nan_batch_stops_the_run_naming_the_step_and_last_ckpt_stays_finite(
    shared_prepared, tmp_path, monkeypatch
):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(
        NonFiniteLossError, match=r"non-finite loss nan at global step 2 \(epoch 0, batch 2\)"
    ):
        run_script(TRAIN, *tokenizer_command(shared_prepared, tmp_path, "trainer.max_steps=4"))
    checkpoint = load_checkpoint(checkpoints(tmp_path) / "last.ckpt")
    assert checkpoint["global_step"] == 2
    assert all(torch.isfinite(v.float()).all() for v in checkpoint["state_dict"].values())


@pytest.mark.usefixtures("nan_at_step_2")
def test_a_nan_batch_in_skip_mode_is_skipped_and_leaves_no_nan_in_the_model(shared_prepared, tmp_path):
    with pytest.warns(
        UserWarning, match=r"global step 2 .*skipped this optimizer update \(1 skipped so far\)"
    ):
        skip = "callbacks.nan_guard.mode=skip"
        run_script(TRAIN, *tokenizer_command(shared_prepared, tmp_path, "trainer.max_steps=4", skip))
    checkpoint = load_checkpoint(checkpoints(tmp_path) / "last.ckpt")
    assert checkpoint["global_step"] == 4
    # The VQ codebook is a buffer its forward pass updates: it took the NaN batch in before the guard ran.
    not_finite = [k for k, v in checkpoint["state_dict"].items() if not torch.isfinite(v.float()).all()]
    assert not_finite == []
    (guard,) = [v for k, v in checkpoint["callbacks"].items() if k.startswith("NonFiniteGuard")]
    assert guard == {"skipped": 1}  # only the poisoned step: the next ones were finite again


def test_a_resume_that_changes_the_model_shape_is_refused_naming_the_settings(
    shared_prepared, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    run_script(TRAIN, *tokenizer_command(shared_prepared, tmp_path, "trainer.max_steps=2"))
    last = checkpoints(tmp_path) / "last.ckpt"
    with pytest.raises(ResumeError) as err:
        wider = tokenizer_command(shared_prepared, tmp_path, "trainer.max_steps=4", "model.dim=48")
        run_script(TRAIN, *wider)
    message = str(err.value)
    assert message.startswith(
        f"cannot resume from {last}: this run's config builds a model its weights do not fit"
    )
    assert re.search(
        r"The model settings that differ from the checkpoint's: model\.dim: 32 -> 48; model\.quantizer\.dim: "
        r"32 -> 48 \(\d+ parameters do not fit, e\.g\. ",
        message,
    )
    assert "model.quantizer.proj_in.weight: [8, 32] in the checkpoint, [8, 48] now" in message
    assert "ckpt_path=null" in message and load_checkpoint(last)["global_step"] == 2
    # A longer budget keeps the shapes: the run resumes, saying what changed.
    capsys.readouterr()
    run_script(TRAIN, *tokenizer_command(shared_prepared, tmp_path, "trainer.max_steps=4"))
    assert load_checkpoint(last)["global_step"] == 4
    printed = capsys.readouterr().out  # Hydra's log
    assert (
        f"resuming from {last} with settings changed since it was written: stage.optim.total_steps: 2 -> 4; "
        "trainer.max_steps: 2 -> 4\n" in printed
    )


def _features(tokens: str | None = None, latents: str | None = None) -> dict:
    features = {k: v for k, v in {"tokens": tokens, "latents": latents}.items() if v is not None}
    return {"data": {"datamodule": {"features": features}}}


def test_a_resume_on_the_tokens_of_another_tokenizer_checkpoint_is_refused():
    # The AR and flow-matching runs read a token cache named by the hash of the tokenizer that wrote it.
    weights = {"w": torch.zeros(2)}
    check = ResumeCheck({"w": (2,)}, _features("cache/tokens/last-bbbbbbbbbbbbbbbb", "cache/latents/last-1"))
    trained_on = _features("cache/tokens/last-aaaaaaaaaaaaaaaa", "cache/latents/last-1")
    with pytest.raises(ResumeError) as err:
        check({"config": trained_on, "state_dict": weights}, "logs/ar_tiny/checkpoints/last.ckpt")
    message = str(err.value)
    assert message.startswith(
        "cannot resume from logs/ar_tiny/checkpoints/last.ckpt: it was trained on the tokens in "
        "cache/tokens/last-aaaaaaaaaaaaaaaa, and this run reads cache/tokens/last-bbbbbbbbbbbbbbbb"
    )
    assert "name=..." in message and "ckpt_path=null" in message and "upstream.tokenizer" in message
    # The same cache under another cache_dir, new latents of a continued Flow-VAE (the long recipe), or a
    # run without tokens (the tokenizer itself, the Flow-VAE) resume.
    moved = ResumeCheck(
        {"w": (2,)}, _features("/data/cache/tokens/last-aaaaaaaaaaaaaaaa", "cache/latents/last-2")
    )
    moved({"config": trained_on, "state_dict": weights}, "last.ckpt")
    ResumeCheck({"w": (2,)}, _features(latents="cache/latents/last-2"))(
        {"config": _features(latents="cache/latents/last-1"), "state_dict": weights}, "last.ckpt"
    )


def test_a_resume_on_the_latents_of_a_new_flow_vae_is_refused_and_of_a_continued_one_allowed(tmp_path):
    """Each latent cache records the lineage of the Flow-VAE run that wrote it (``scripts/encode.py``)."""

    def cache(name: str, lineage: str | None) -> str:
        folder = tmp_path / "latents" / name
        folder.mkdir(parents=True)
        meta = {"kind": "latents", "sha256": name} | ({} if lineage is None else {"lineage": lineage})
        (folder / "meta.json").write_text(json.dumps(meta))
        return str(folder)

    weights = {"w": torch.zeros(2)}
    trained_on = cache("last-1111", "run-a")
    continued, retrained, older = (
        cache("last-2222", "run-a"),
        cache("last-3333", "run-b"),
        cache("last-4", None),
    )
    saved = {"config": _features(latents=trained_on), "state_dict": weights}
    for allowed in (trained_on, continued, older, str(tmp_path / "latents" / "gone")):
        ResumeCheck({"w": (2,)}, _features(latents=allowed))(saved, "last.ckpt")
    with pytest.raises(ResumeError) as err:
        ResumeCheck({"w": (2,)}, _features(latents=retrained))(saved, "logs/fm/last.ckpt")
    assert str(err.value).startswith(
        f"cannot resume from logs/fm/last.ckpt: it was trained on the latents in {trained_on}, written by "
        f"Flow-VAE run run-a, and this run reads {retrained}, written by another Flow-VAE run, run-b"
    )
    assert "name=..." in str(err.value) and "upstream.flow_vae" in str(err.value)


def test_a_run_lineage_is_drawn_per_run_and_restored_by_a_resume():
    first, second = RunLineage(), RunLineage()
    assert first.id != second.id and first.state_key == "RunLineage"
    second.load_state_dict(first.state_dict())
    assert second.id == first.id
