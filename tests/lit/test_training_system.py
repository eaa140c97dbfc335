"""Training plumbing of every stage: the NaN/inf guard, exact resumes of the random streams, checkpoints
under faults (a failed write, a corrupt file), and the trainer / launcher configs."""

import os
import random
import re
import signal
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from speech.checkpoints import CheckpointError, load_checkpoint
from speech.lit.callbacks import (
    AtomicCheckpointIO,
    FinalCheckpoint,
    NonFiniteGuard,
    NonFiniteLossError,
    ProgressLog,
    RNGState,
)
from speech.lit.requeue import Requeue
from speech.lit.resolvers import register_resolvers

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

pytestmark = pytest.mark.usefixtures("one_thread")


class Toy(L.LightningModule):
    """A tiny regressor whose loss is NaN at global step ``nan_at``; it records the random draws of each
    step (dropout mask, torch, Python and NumPy) and makes random draws in validation too."""

    def __init__(self, nan_at: int | None = None, manual: bool = False) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Linear(8, 2))
        self.nan_at, self.automatic_optimization = nan_at, not manual
        self.draws: dict[int, list[float]] = {}

    def _loss(self, batch):
        x, y = batch
        loss = nn.functional.mse_loss(self.model(x), y)
        if self.global_step == self.nan_at:
            loss = loss * float("nan")
        self.log("train/loss", loss)
        self.log("train/mse", loss.detach() * 2)
        return loss

    def training_step(self, batch, batch_idx):
        self.draws[self.global_step] = [
            *self.model[1](torch.ones(8)).tolist(), torch.rand(()).item(), random.random(), np.random.rand()
        ]  # fmt: skip
        if self.automatic_optimization:
            return self._loss(batch)
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(self._loss(batch))
        opt.step()

    def validation_step(self, batch, batch_idx):
        torch.rand(5), random.random(), np.random.rand()  # must not shift the training draws

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.01, weight_decay=0.1)


def loader(shuffle: bool = False) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(16, 3, generator=g), torch.randn(16, 2, generator=g)),
                      batch_size=2, shuffle=shuffle)  # fmt: skip


def trainer(tmp_path, max_steps, callbacks, **kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=callbacks, default_root_dir=tmp_path, **kwargs,
    )  # fmt: skip


class Weights(L.Callback):
    """The weights after every optimizer step, keyed by global step."""

    def __init__(self) -> None:
        self.after: dict[int, list[torch.Tensor]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after[trainer.global_step] = [p.detach().clone() for p in pl_module.parameters()]


# ---- NaN / inf guard --------------------------------------------------------------------------------------
@pytest.mark.parametrize("manual", [False, True])
def test_nan_loss_stops_naming_the_step_and_terms(tmp_path, manual):
    module = Toy(nan_at=3, manual=manual)
    with pytest.raises(
        NonFiniteLossError, match=r"non-finite loss nan at global step 3 \(epoch 0, batch 3\)"
    ) as e:
        trainer(tmp_path, 10, [NonFiniteGuard()], enable_checkpointing=False).fit(module, loader())
    assert "train/loss=nan" in str(e.value) and "mode=skip" in str(e.value)
    assert sorted(module.draws) == [0, 1, 2, 3]


@pytest.mark.parametrize("accumulate", [1, 2])
def test_skip_mode_drops_the_bad_update_and_counts_it(tmp_path, accumulate):
    torch.manual_seed(0)
    module, weights, guard = Toy(nan_at=2), Weights(), NonFiniteGuard(mode="skip")
    trainer_ = trainer(
        tmp_path, 5, [weights, guard], enable_checkpointing=False, accumulate_grad_batches=accumulate
    )
    with pytest.warns(UserWarning, match="global step 2.*skipped this optimizer update"):
        trainer_.fit(module, loader())
    assert trainer_.global_step == 5 and guard.skipped == 1  # one update: all micro-batches of step 2
    for before, after in zip(weights.after[2], weights.after[3], strict=True):
        torch.testing.assert_close(before, after, rtol=0, atol=0)  # not even weight decay moved them
    for before, after in zip(weights.after[3], weights.after[4], strict=True):
        assert torch.isfinite(after).all() and not torch.equal(before, after)  # training went on
    assert trainer_.callback_metrics["train/skipped_batches"] == 1


class NormToy(L.LightningModule):
    """A BatchNorm regressor whose input is NaN in the second micro-batch of global step ``nan_at``: the
    NaN reaches the running statistics (buffers) in the forward pass, before any loss is checked."""

    def __init__(self, nan_at: int, accumulate: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 2))
        self.nan_at, self.accumulate = nan_at, accumulate
        self.stats: dict[int, torch.Tensor] = {}  # running mean at the start of each global step

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.stats.setdefault(self.global_step, self.model[0].running_mean.clone())
        if self.global_step == self.nan_at and batch_idx % self.accumulate == self.accumulate - 1:
            x = x * float("nan")
        return nn.functional.mse_loss(self.model(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


# Issue 17: a NaN batch updated a VQ codebook / BatchNorm statistics in its forward pass, before the guard saw
# the loss; skip mode dropped the weight update but kept the NaN buffers, and every later step was NaN too.
@pytest.mark.parametrize("accumulate", [1, 2])
def test_skip_mode_also_puts_back_the_buffers_the_bad_batch_updated(tmp_path, accumulate):
    module, guard = NormToy(nan_at=2, accumulate=accumulate), NonFiniteGuard(mode="skip")
    trainer_ = trainer(tmp_path, 4, [guard], enable_checkpointing=False, accumulate_grad_batches=accumulate)
    with pytest.warns(UserWarning, match="global step 2.*skipped this optimizer update"):
        trainer_.fit(module, loader())
    assert guard.skipped == 1  # the next steps are finite again
    torch.testing.assert_close(module.stats[3], module.stats[2], rtol=0, atol=0)  # step 2 left no trace
    assert (
        torch.isfinite(module.model[0].running_mean).all()
        and torch.isfinite(module.model[0].running_var).all()
    )


def test_skip_mode_refuses_manual_optimization_and_lightning_refuses_accumulation(tmp_path):
    with pytest.raises(ValueError, match="needs automatic optimization.*mode=stop"):
        trainer(tmp_path, 2, [NonFiniteGuard(mode="skip")], enable_checkpointing=False).fit(
            Toy(manual=True), loader()
        )
    with pytest.raises(MisconfigurationException, match="gradient accumulation is not supported for manual"):
        trainer(tmp_path, 2, [], enable_checkpointing=False, accumulate_grad_batches=2).fit(
            Toy(manual=True), loader()
        )
    with pytest.raises(ValueError, match="unknown NonFiniteGuard mode"):
        NonFiniteGuard(mode="ignore")


# ---- exact resume of the random streams -------------------------------------------------------------------
def run_draws(tmp_path, max_steps, rng: bool, ckpt_path=None) -> Toy:
    L.seed_everything(0)
    module = Toy()
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(tmp_path, "{step}", every_n_train_steps=2, save_top_k=-1)
    callbacks = [checkpoint, RNGState()] if rng else [checkpoint]
    trainer(tmp_path, max_steps, callbacks, val_check_interval=2).fit(
        module, loader(shuffle=True), loader(), ckpt_path=ckpt_path
    )
    return module


def test_a_resumed_run_makes_the_same_random_draws(tmp_path):
    # validation runs after steps 2, 4, 6, right after the checkpoints of those steps are written
    straight = run_draws(tmp_path / "straight", 7, rng=True)
    run_draws(tmp_path / "cut", 4, rng=True)
    resumed = run_draws(tmp_path / "cut", 7, rng=True, ckpt_path=tmp_path / "cut" / "step=4.ckpt")
    assert sorted(resumed.draws) == [4, 5, 6]
    for step in (4, 5, 6):
        assert resumed.draws[step] == straight.draws[step], step
    # without the callback the resumed run draws from the fresh seed: the comparison above can fail
    plain = run_draws(tmp_path / "plain", 7, rng=False, ckpt_path=tmp_path / "cut" / "step=4.ckpt")
    assert plain.draws[4] != straight.draws[4]


# ---- checkpoints under faults (issue 17) -----------------------------------------------------------------
def fit_with_last(tmp_path, max_steps, ckpt_path=None) -> None:
    """Toy training that writes ``ckpt/last.ckpt`` every 2 steps through ``AtomicCheckpointIO``."""
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(tmp_path / "ckpt", every_n_train_steps=2, save_last=True)
    trainer(tmp_path, max_steps, [checkpoint], plugins=[AtomicCheckpointIO()]).fit(
        Toy(), loader(), ckpt_path=ckpt_path
    )


def test_a_failed_checkpoint_write_keeps_the_previous_one_and_no_partial_file(tmp_path, monkeypatch):
    fit_with_last(tmp_path, 2)
    last = tmp_path / "ckpt" / "last.ckpt"

    def disk_full(checkpoint, path):  # half of the file is written, then the disk is full
        Path(path).write_bytes(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("speech.lit.callbacks.torch.save", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        fit_with_last(tmp_path, 4, ckpt_path=last)
    assert torch.load(last, weights_only=False)["global_step"] == 2  # the previous checkpoint, intact
    assert sorted(p.name for p in last.parent.iterdir() if p.suffix == ".tmp") == []
    monkeypatch.undo()
    fit_with_last(tmp_path, 4, ckpt_path="last")  # the rerun resumes from it
    assert torch.load(last, weights_only=False)["global_step"] == 4


def test_a_truncated_checkpoint_is_named_when_resumed_or_loaded(tmp_path):
    fit_with_last(tmp_path, 2)
    last = tmp_path / "ckpt" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # e.g. copied by hand, interrupted
    message = rf"^{re.escape(str(last))} is not a readable checkpoint, it is truncated or corrupt \("
    with pytest.raises(CheckpointError, match=message + r".*ckpt_path=<file> to resume from it"):
        fit_with_last(tmp_path, 4, ckpt_path="last")
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(last)


# ---- trainer and launcher configs -------------------------------------------------------------------------
def compose_train(*overrides: str, hydra_config: bool = False):
    register_resolvers()
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return compose(
            "entry/train",
            overrides=["experiment=tokenizer_tiny", *overrides],
            return_hydra_config=hydra_config,
        )


TRAINERS = sorted(p.stem for p in (CONFIGS / "trainer").glob("*.yaml"))


def test_every_trainer_config_is_tested():
    assert set(TRAINERS) == {"cpu", "gpu", "ddp", "fsdp", "slurm"}


def test_cpu_trainer_instantiates_with_the_default_callbacks():
    cfg = compose_train("trainer=cpu")
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    assert {type(c) for c in callbacks} >= {NonFiniteGuard, RNGState}
    assert cfg.callbacks.nan_guard.mode == "stop"
    built = instantiate(cfg.trainer, callbacks=callbacks, logger=False)
    assert isinstance(built, L.Trainer) and built.accumulate_grad_batches == 1
    assert built.gradient_clip_val == 1.0 and built.precision == "32-true"


@pytest.mark.parametrize("name", ["gpu", "ddp", "fsdp", "slurm"])
def test_gpu_trainer_configs_compose(name):
    cfg = compose_train(f"trainer={name}").trainer
    assert cfg.accelerator == "gpu" and cfg.precision == "bf16-mixed"
    assert cfg.use_distributed_sampler is False  # the Lhotse sampler shards per rank
    strategy = {"gpu": None, "ddp": "DDPStrategy", "fsdp": "FSDPStrategy", "slurm": "DDPStrategy"}[name]
    target = cfg.strategy._target_.rsplit(".", 1)[-1] if cfg.get("strategy") else None
    assert target == strategy
    on_cpu = compose_train(f"trainer={name}", "trainer.accelerator=cpu").trainer
    assert on_cpu.precision == "32-true"  # bf16 autocast is for GPUs (tests/lit/test_ddp.py runs ddp on CPU)


def test_ddp_looks_for_unused_parameters_where_the_stage_needs_it():
    assert compose_train("trainer=ddp").trainer.strategy.find_unused_parameters is False
    flow_vae = compose_train("trainer=ddp", "experiment=flow_vae_tiny").trainer.strategy
    assert flow_vae.find_unused_parameters is True  # its D and G updates leave each other's weights out
    assert instantiate(flow_vae)._ddp_kwargs["find_unused_parameters"] is True


def test_fsdp_on_the_cpu_is_refused_naming_the_accelerator(tmp_path):
    # torch's own FSDP has no CPU path in this torch (past Lightning's check too): revisit when this fails
    from torch.distributed.fsdp import FullyShardedDataParallel

    if not torch.cuda.is_available():
        torch.distributed.init_process_group(
            "gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1
        )
        try:
            with pytest.raises(RuntimeError, match="FSDP needs a non-CPU accelerator device"):
                FullyShardedDataParallel(nn.Linear(2, 2))
        finally:
            torch.distributed.destroy_process_group()
    # so Lightning's refusal is the message a user meets: FSDP is left to the GPU check
    cfg = compose_train("trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2").trainer
    with pytest.raises(
        Exception, match=r"The strategy `fsdp` requires a GPU accelerator, but received `accel"
    ):
        instantiate(cfg, logger=False)


def test_fsdp_wraps_the_blocks():
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    from speech.modules.dit import DiTBlock
    from speech.modules.transformer import TransformerBlock

    strategy = instantiate(compose_train("trainer=fsdp").trainer.strategy)
    policy = strategy.kwargs["auto_wrap_policy"]
    assert isinstance(policy, ModuleWrapPolicy) and {TransformerBlock, DiTBlock} <= policy._module_classes
    assert strategy._state_dict_type == "full"


def test_slurm_reads_the_allocation_and_requeues(monkeypatch):
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    cfg = compose_train("trainer=slurm").trainer
    assert (cfg.num_nodes, cfg.devices) == (1, 1)
    monkeypatch.setenv("SLURM_NNODES", "4")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "8")
    assert (cfg.num_nodes, cfg.devices) == (4, 8)
    plugin = instantiate(cfg.plugins[0])
    # the Requeue callback saves at a step boundary instead of Lightning's handler (test_multinode.py)
    assert isinstance(plugin, SLURMEnvironment) and not plugin.auto_requeue
    requeue = instantiate(compose_train("trainer=slurm").callbacks.requeue)
    assert isinstance(requeue, Requeue) and requeue.signum == signal.SIGUSR1


def test_submitit_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    launcher = compose_train("hydra/launcher=slurm", "trainer=slurm", hydra_config=True).hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == launcher.gpus_per_node == 8
    assert launcher.signal_delay_s > 0 and launcher.submitit_folder.endswith("tokenizer_tiny/submitit/%j")


def test_the_callbacks_run_under_bf16_autocast(tmp_path):
    from speech.lit.ema import EMA

    torch.manual_seed(0)
    ema, guard = EMA(decay=0.9), NonFiniteGuard(mode="skip")
    trainer_ = trainer(
        tmp_path, 3, [ema, guard, RNGState()], precision="bf16-mixed", enable_checkpointing=False
    )
    trainer_.fit(Toy(nan_at=1), loader())
    assert trainer_.global_step == 3 and guard.skipped == 1
    assert all(v.dtype == torch.float32 for v in ema.shadow.values()) and ema.num_updates == 3


# ---- plain progress lines ---------------------------------------------------------------------------------
def test_progress_log_prints_step_rate_loss_and_eta(tmp_path, capsys):
    trainer(tmp_path, 5, [ProgressLog(every_seconds=0, force=True)]).fit(Toy(), loader())
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["1/5", "2/5", "3/5", "4/5", "5/5"]
    assert all("steps/s" in line and "train/loss" in line and "ETA" in line for line in lines)


def test_progress_log_stays_quiet_on_a_terminal(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    trainer(tmp_path, 3, [ProgressLog(every_seconds=0)]).fit(Toy(), loader())
    assert not [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]


# ---- the final checkpoint ---------------------------------------------------------------------------------
def test_training_that_ends_between_intervals_still_writes_last(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    def checkpoints(final: bool):
        ckpt = ModelCheckpoint(dirpath=tmp_path / str(final), every_n_train_steps=4, save_last=True)
        callbacks = [ckpt, FinalCheckpoint()] if final else [ckpt]
        trainer(tmp_path, 7, callbacks).fit(Toy(), loader())
        return torch.load(tmp_path / str(final) / "last.ckpt", weights_only=False)["global_step"]

    assert checkpoints(final=False) == 4  # what Lightning alone leaves: steps 5-7 lost
    assert checkpoints(final=True) == 7


# ---- the training clock -----------------------------------------------------------------------------------
def test_the_training_clock_logs_minutes_and_continues_them_after_a_resume(tmp_path, monkeypatch):
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from speech.lit.callbacks import TrainingClock

    now = [1000.0]

    def tick():  # every call to the clock is 6 s later: minutes grow by 0.1 per call
        now[0] += 6.0
        return now[0]

    monkeypatch.setattr("speech.lit.callbacks.time.monotonic", tick)

    def fit(steps, ckpt_path=None):
        ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_last=True)
        logger = CSVLogger(tmp_path, name="csv")
        L.Trainer(accelerator="cpu", max_steps=steps, logger=logger, log_every_n_steps=1,
                  enable_progress_bar=False, enable_model_summary=False,
                  callbacks=[ckpt, TrainingClock()]).fit(Toy(), loader(), ckpt_path=ckpt_path)  # fmt: skip
        return Path(logger.log_dir) / "metrics.csv"

    first = fit(4)
    now[0] += 3600.0  # an hour between the kill and the resume does not count
    second = fit(6, ckpt_path=tmp_path / "ckpt" / "last.ckpt")

    def minutes(path):
        import csv

        rows = [r for r in csv.DictReader(path.open()) if r.get(TrainingClock.KEY)]
        return {int(r["step"]): float(r[TrainingClock.KEY]) for r in rows}

    before, after = minutes(first), minutes(second)
    assert sorted(before) == [0, 1, 2, 3] and sorted(after) == [4, 5]
    assert all(0 < before[s] < before[s + 1] for s in range(3))
    assert before[3] < after[4] < before[3] + 5  # continued, without the hour


# ---- save and stop on a signal (SLURM's time limit; the multi-process run: tests/lit/test_multinode.py) ----
class SignalAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGUSR1)


def test_sigusr1_saves_last_at_the_step_and_stops(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)  # no job to requeue
    ckpt = L.pytorch.callbacks.ModelCheckpoint(tmp_path / "ckpt", every_n_train_steps=100, save_last=True)
    trainer_ = trainer(tmp_path, 10, [Requeue(), SignalAt(3), ckpt, FinalCheckpoint()])
    before = signal.getsignal(signal.SIGUSR1)
    trainer_.fit(Toy(), loader())
    assert trainer_.global_step == 4  # the step under way when the signal came, then stop
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["global_step"] == 4
    assert "SIGUSR1 received: saved" in caplog.text and "requeued" not in caplog.text
    assert signal.getsignal(signal.SIGUSR1) is before  # put back after fit


def test_requeue_refuses_an_unknown_signal():
    with pytest.raises(ValueError, match="unknown signal 'SIGFOO': use a name such as 'SIGUSR1'"):
        Requeue(signal="SIGFOO")
