"""Data parallel training on the CPU, in real processes (issue 15): ``python train.py experiment=<stage>
trainer=ddp trainer.accelerator=cpu trainer.devices=2`` runs Lightning's DDPStrategy over gloo, Lightning
starting the second rank itself. A probe callback (``ddp_probe.py``) records what each rank saw.

Proven on the tiny tokenizer run: the ranks draw disjoint batches that together are the one-process epoch,
the weights are bit-identical on both ranks after every step, checkpoints are written by rank 0 only and
atomically, a run killed with SIGKILL (every rank) resumes both ranks at the step, batch, sampler position
and random state of an uninterrupted run, and a NaN on one rank stops every rank. On a small regressor: two
processes with batch b reach the losses and weights of one process with batch 2b. And one step of every
other stage (the Flow-VAE's manual optimization, AR, flow matching, the emotion adapter) runs under DDP."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_probe import read
from ddp_runs import ROOT, TIMEOUT, TWO_PROCESSES, environment, probe, tail, train
from ddp_toy import fit_toy
from lhotse import CutSet
from test_ar_adapter_stage import adapter_args, emotion_corpus
from test_ar_stage import TINY as AR_TINY
from test_ar_stage import fake_token_cache
from test_flow_matching_stage import TINY as FM_TINY
from test_flow_matching_stage import fake_caches
from test_flow_vae_stage import TINY as VAE_TINY
from tiny_tokenizer import tokenizer_command

from speech.checkpoints import load_checkpoint
from speech.lit.datamodule import SpeechDataModule

MAX_DURATION = 3  # 7 batches an epoch: 3 per rank, so the checkpoint of step 2 is mid-epoch


def with_overrides(args: list[str], *overrides: str) -> list[str]:
    """``args`` with the keys of ``overrides`` replaced (Hydra refuses a key given twice)."""
    keys = {o.split("=", 1)[0] for o in overrides}
    return [a for a in args if a.split("=", 1)[0] not in keys] + list(overrides)


def tokenizer_ddp(prepared: Path, log_dir: Path, *overrides: str) -> list[str]:
    """The tiny tokenizer on two CPU processes for 4 steps, a checkpoint and a validation every 2."""
    base = tokenizer_command(prepared, log_dir)
    return with_overrides(base, f"data.datamodule.max_duration={MAX_DURATION}", "trainer.max_steps=4",
                          *TWO_PROCESSES, *overrides)  # fmt: skip


def batches(events: list[dict]) -> list[dict]:
    return [e for e in events if e["event"] == "batch"]


def trained(events: list[dict]) -> dict[int, dict]:
    """The step-end records by the global step reached."""
    return {e["step"]: e for e in events if e["event"] == "trained"}


@pytest.fixture(scope="module")
def straight(shared_prepared, tmp_path_factory):
    """An uninterrupted two-process tokenizer run of 4 steps."""
    tmp = tmp_path_factory.mktemp("ddp_straight")
    train([*tokenizer_ddp(shared_prepared, tmp / "logs"), *probe(tmp / "probe")], tmp / "train.log")
    return {"tmp": tmp, "events": read(tmp / "probe"), "checkpoints": tmp / "logs/tokenizer_tiny/checkpoints"}


def dealt(prepared: Path, rank: int, monkeypatch) -> list[list[str]]:
    """The training batches (cut ids) of epoch 0 that the run's sampler deals to ``rank`` of 2."""
    monkeypatch.setenv("WORLD_SIZE", "2")  # what Lhotse reads first
    monkeypatch.setenv("RANK", str(rank))
    datamodule = SpeechDataModule(prepared, max_duration=MAX_DURATION, num_workers=0, references=False)
    datamodule.setup()
    sampler = datamodule.train_dataloader().sampler
    sampler.set_epoch(0)
    return [list(cuts.ids) for cuts in sampler]


def test_the_run_is_lightning_ddp_over_gloo_in_float32(straight):
    setups = [next(e for e in straight["events"][r] if e["event"] == "setup") for r in (0, 1)]
    for rank, setup in enumerate(setups):
        assert setup["strategy"] == "DDPStrategy" and setup["backend"] == "gloo"
        assert setup["world_size"] == 2 and setup["local_rank"] == rank and setup["precision"] == "32-true"


def test_the_ranks_draw_disjoint_batches_that_together_cover_the_epoch(
    straight, shared_prepared, monkeypatch
):
    events = straight["events"]
    ranks = {r: [b["ids"] for b in batches(events[r]) if b["epoch"] == 0] for r in (0, 1)}
    assert len(ranks[0]) == len(ranks[1]) == 3  # in step: neither rank waits for the other at the end
    for rank in (0, 1):  # the duration-bucketed sampler's own split of the epoch between two ranks
        assert ranks[rank] == dealt(shared_prepared, rank, monkeypatch)
    ids = {r: [i for batch in ranks[r] for i in batch] for r in (0, 1)}
    train = set(CutSet.from_file(shared_prepared / "train_cuts.jsonl.gz").ids)
    assert not set(ids[0]) & set(ids[1]) and len(ids[0] + ids[1]) == len(set(ids[0] + ids[1]))
    # training batches drop each duration bucket's partial last batch (drop_last): 16 of the 21 cuts here,
    # other ones each epoch; validation keeps them all, spread over the ranks
    assert set(ids[0] + ids[1]) < train and len(set(ids[0] + ids[1])) == 16
    val = {r: [i for e in events[r] if e["event"] == "val_batch" and e["step"] == 2 for i in e["ids"]]
           for r in (0, 1)}  # fmt: skip
    assert val[0] and val[1] and not set(val[0]) & set(val[1])
    assert sorted(val[0] + val[1]) == sorted(CutSet.from_file(shared_prepared / "val_cuts.jsonl.gz").ids)


def test_the_weights_are_identical_on_both_ranks_after_every_step(straight):
    steps = {r: trained(straight["events"][r]) for r in (0, 1)}
    assert sorted(steps[0]) == sorted(steps[1]) == [1, 2, 3, 4]
    for step in steps[0]:
        assert steps[0][step]["weights"] == steps[1][step]["weights"], step
        assert steps[0][step]["loss"] != steps[1][step]["loss"]  # different batches, one model
    assert len({s["weights"] for s in steps[0].values()}) == 4  # and it trained


def test_checkpoints_are_written_once_by_rank_0_atomically(straight):
    saves = [e for events in straight["events"].values() for e in events if e["event"] == "save"]
    assert {e["rank"] for e in saves} == {0}
    assert sorted((Path(e["path"]).name, e["step"]) for e in saves) == [
        ("last.ckpt", 2), ("last.ckpt", 4), ("step0000002.ckpt", 2), ("step0000004.ckpt", 4)
    ]  # fmt: skip
    setups = [e for events in straight["events"].values() for e in events if e["event"] == "setup"]
    assert {e["checkpoint_io"] for e in setups} == {"AtomicCheckpointIO"}
    files = sorted(p.name for p in straight["checkpoints"].iterdir())
    assert files == ["last.ckpt", "step0000002.ckpt", "step0000004.ckpt"]  # no .tmp left
    checkpoint = load_checkpoint(straight["checkpoints"] / "last.ckpt")
    assert checkpoint["global_step"] == 4 and len(checkpoint["callbacks"]["RNGState"]["ranks"]) == 2


def test_a_killed_run_resumes_every_rank_exactly_where_an_uninterrupted_one_is(
    straight, shared_prepared, tmp_path
):
    args = tokenizer_ddp(shared_prepared, tmp_path / "logs")
    code = train([*args, *probe(tmp_path / "killed", kill_at_step=3)], tmp_path / "train.log", expect=None)
    assert code == -9  # SIGKILL, every rank
    last = tmp_path / "logs/tokenizer_tiny/checkpoints/last.ckpt"
    assert load_checkpoint(last)["global_step"] == 2  # mid-epoch: batch 2 of 3
    train([*args, *probe(tmp_path / "resumed")], tmp_path / "train.log")  # the same command again
    resumed = read(tmp_path / "resumed")
    for rank in (0, 1):
        after = [b for b in batches(straight["events"][rank]) if b["step"] >= 2]
        assert [{k: b[k] for k in ("step", "epoch", "batch_idx")} for b in batches(resumed[rank])] == [
            {"step": 2, "epoch": 0, "batch_idx": 2}, {"step": 3, "epoch": 1, "batch_idx": 0}
        ]  # fmt: skip
        assert batches(resumed[rank]) == after  # same cuts, same random states
        steps, expected = trained(resumed[rank]), trained(straight["events"][rank])
        assert sorted(steps) == [3, 4]
        for step in steps:
            assert steps[step]["loss"] == pytest.approx(expected[step]["loss"], rel=1e-6)
            assert steps[step]["weights"] == expected[step]["weights"]  # bit-identical


def test_a_nan_on_one_rank_stops_every_rank(shared_prepared, tmp_path):
    log = tmp_path / "train.log"
    args = tokenizer_ddp(shared_prepared, tmp_path / "logs")
    assert train([*args, *probe(tmp_path / "probe", nan_at_step=2, nan_rank=1)], log, expect=None) != 0
    # rank 0's own loss was finite: it stops on rank 1's
    message = "NonFiniteLossError: a non-finite loss on another rank at global step 2"
    assert message in log.read_text(), tail(log)
    events = read(tmp_path / "probe")
    for rank in (0, 1):
        assert max(trained(events[rank])) == 2  # the NaN step was applied on neither rank
    checkpoint = load_checkpoint(tmp_path / "logs/tokenizer_tiny/checkpoints/last.ckpt")
    assert checkpoint["global_step"] == 2
    assert all(torch.isfinite(v.float()).all() for v in checkpoint["state_dict"].values())


def test_two_processes_reach_the_loss_of_one_with_twice_the_batch(tmp_path):
    """Tolerance: 1e-5 relative on the losses and 1e-5 absolute on the weights after 6 AdamW steps (the
    sums run in another order: float32 rounding, nothing more)."""
    fit_toy(tmp_path / "one", devices=1, batch_size=8)
    toy = [sys.executable, str(ROOT / "tests" / "lit" / "ddp_toy.py"), str(tmp_path / "two"), "2", "4"]
    subprocess.run(toy, env=environment(), check=True, timeout=TIMEOUT)  # Lightning starts rank 1
    one = json.loads((tmp_path / "one" / "rank0.json").read_text())
    two = [json.loads((tmp_path / "two" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert two[0]["world_size"] == 2 and one["world_size"] == 1
    mean = [(a + b) / 2 for a, b in zip(two[0]["losses"], two[1]["losses"], strict=True)]
    assert len(mean) == 6 and two[0]["losses"] != two[1]["losses"]
    assert mean == pytest.approx(one["losses"], rel=1e-5)
    assert two[0]["weights"] == two[1]["weights"]
    assert two[0]["weights"] == pytest.approx(one["weights"], abs=1e-5)


# ---- every other stage: two steps under DDP ---------------------------------------------------------------
def run_stage(args: list[str], tmp: Path, run: str) -> dict[int, list[dict]]:
    """Two steps of a stage on two processes (no validation); what each rank saw."""
    common = ["data.datamodule.num_workers=0", "trainer.enable_progress_bar=false", "trainer.max_steps=2",
              "++trainer.limit_val_batches=0", *TWO_PROCESSES]  # fmt: skip
    train([*with_overrides(args, *common), *probe(tmp / "probe")], tmp / "train.log")
    events = read(tmp / "probe")
    steps = {r: trained(events[r]) for r in (0, 1)}
    assert sorted(steps[0]) == sorted(steps[1]) == [1, 2]
    assert all(steps[0][s]["weights"] == steps[1][s]["weights"] for s in (1, 2))
    assert load_checkpoint(next((tmp / "logs").rglob("last.ckpt")))["global_step"] == 2
    return events


def test_the_flow_vae_trains_under_ddp_before_and_after_its_discriminator_starts(shared_prepared, tmp_path):
    # manual optimization, two optimizers: step 0 the generator alone, step 1 discriminator + generator
    run_stage(["experiment=flow_vae_tiny", f"data.prepared_dir={shared_prepared}",
               f"paths.log_dir={tmp_path / 'logs'}", "data.datamodule.max_duration=1.5",
               "stage.disc_start_step=1", *VAE_TINY], tmp_path, "flow_vae")  # fmt: skip


@pytest.fixture(scope="module")
def ar_under_ddp(shared_prepared, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp_ar")
    cache = fake_token_cache(shared_prepared, tmp / "tokens")
    run_stage(["experiment=ar_tiny", f"data.prepared_dir={shared_prepared}", f"paths.log_dir={tmp / 'logs'}",
               f"data.datamodule.features.tokens={cache}", "data.datamodule.max_duration=4",
               "stage.prompt_prob=0.5", *AR_TINY], tmp, "ar")  # fmt: skip
    return tmp / "logs" / "ar_tiny" / "checkpoints" / "last.ckpt"


def test_the_ar_model_trains_under_ddp(ar_under_ddp):
    assert load_checkpoint(ar_under_ddp)["config"]["trainer"]["strategy"]["find_unused_parameters"] is False


def test_flow_matching_trains_under_ddp_with_ema(shared_prepared, tmp_path):
    caches = fake_caches(shared_prepared, tmp_path / "cache")
    run_stage(["experiment=flow_matching_tiny", f"data.prepared_dir={shared_prepared}",
               f"paths.log_dir={tmp_path / 'logs'}", f"data.datamodule.features.tokens={caches['tokens']}",
               f"data.datamodule.features.latents={caches['latents']}", "data.datamodule.max_duration=4",
               *FM_TINY], tmp_path, "flow_matching")  # fmt: skip
    checkpoint = load_checkpoint(tmp_path / "logs/flow_matching_tiny/checkpoints/last.ckpt")
    assert checkpoint["ema_state_dict"]


def test_the_emotion_adapter_trains_under_ddp(ar_under_ddp, shared_prepared, tmp_path):
    prepared = emotion_corpus(tmp_path / "corpus", shared_prepared / "bpe.json")
    args = adapter_args(ar_under_ddp, prepared, tmp_path / "logs")  # 9 happy cuts: 2 batches a rank
    run_stage(with_overrides(args, "data.datamodule.max_duration=2"), tmp_path, "adapter")
