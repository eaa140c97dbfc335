"""A test callback that train.py runs load by name (``+callbacks.probe._target_=ddp_probe.DDPProbe``, with
``tests/lit`` on ``PYTHONPATH``): every rank appends what it saw to ``<out>/rank<r>.jsonl``, one JSON line
per event, flushed at once so that a killed run leaves its lines behind. It can also break a run: kill the
whole process group at a step (``kill -9`` of every rank) or put NaN into one rank's batch."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch


def digest(tensors) -> str:
    """A short hash of the bytes of some tensors (equal iff bit-identical)."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def rng_digest() -> str:
    """A hash of this process's Python, NumPy and torch random states."""
    state = repr(random.getstate()) + repr(np.random.get_state()[1].tolist())
    return hashlib.sha256(state.encode() + torch.get_rng_state().numpy().tobytes()).hexdigest()[:16]


class DDPProbe(L.Callback):
    """Records per rank: the run's world (backend, world size, checkpoint writer), each training batch (global
    step, epoch, cut ids, random states at its start), the loss and a digest of the weights after it, the cut
    ids of each validation batch, and every checkpoint write.

    Args:
        out: Folder of the ``rank<r>.jsonl`` files.
        kill_at_step: Rank 0 SIGKILLs its process group at the start of this global step.
        nan_at_step: Put NaN into the audio of the batch of this global step, on rank ``nan_rank`` only.
        nan_rank: See ``nan_at_step``.
        step_seconds: Sleep this long in every training batch (time for a test to send a signal mid-run).
    """

    def __init__(self, out: str, kill_at_step: int | None = None, nan_at_step: int | None = None,
                 nan_rank: int = 1, step_seconds: float = 0.0) -> None:  # fmt: skip
        self.out, self.step_seconds = Path(out), step_seconds
        self.kill_at_step, self.nan_at_step, self.nan_rank = kill_at_step, nan_at_step, nan_rank
        self._file = None

    def _write(self, trainer: L.Trainer, **event) -> None:
        if self._file is None:
            self.out.mkdir(parents=True, exist_ok=True)
            self._file = open(self.out / f"rank{trainer.global_rank}.jsonl", "a")  # noqa: SIM115
        self._file.write(json.dumps({"rank": trainer.global_rank, **event}) + "\n")
        self._file.flush()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        strategy, io = trainer.strategy, trainer.strategy.checkpoint_io
        backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else None
        self._write(trainer, event="setup", world_size=trainer.world_size, backend=backend,
                    strategy=type(strategy).__name__, checkpoint_io=type(io).__name__,
                    node_rank=trainer.node_rank, local_rank=trainer.local_rank,
                    environment=type(strategy.cluster_environment).__name__,
                    precision=trainer.precision)  # fmt: skip
        save = io.save_checkpoint

        def recorded_save(checkpoint, path, storage_options=None):
            self._write(trainer, event="save", path=str(path), step=checkpoint["global_step"])
            return save(checkpoint, path, storage_options)

        io.save_checkpoint = recorded_save

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self.kill_at_step and trainer.global_rank == 0:
            os.killpg(os.getpgid(0), signal.SIGKILL)
        if step == self.nan_at_step and trainer.global_rank == self.nan_rank:
            batch["audio"].mul_(float("nan"))
        time.sleep(self.step_seconds)
        self._write(trainer, event="batch", step=step, epoch=trainer.current_epoch, batch_idx=batch_idx,
                    ids=list(batch["ids"]), rng=rng_digest())  # fmt: skip

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._write(trainer, event="val_batch", step=trainer.global_step, ids=list(batch["ids"]))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else None  # manual optimization: {}
        loss = trainer.callback_metrics.get("train/loss") if loss is None else loss
        self._write(trainer, event="trained", step=trainer.global_step,
                    loss=None if loss is None else float(loss),
                    weights=digest(pl_module.parameters()))  # fmt: skip


def read(out: Path) -> dict[int, list[dict]]:
    """The events of each rank, by rank."""
    return {
        int(p.stem.removeprefix("rank")): [json.loads(line) for line in p.read_text().splitlines()]
        for p in sorted(Path(out).glob("rank*.jsonl"))
    }
