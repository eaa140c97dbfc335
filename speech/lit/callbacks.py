"""Training plumbing shared by every stage: config-carrying and atomic checkpoints, the NaN/inf guard and
the random states kept in checkpoints for exact resumes, the run's lineage (EMA: ``speech.lit.ema``)."""

from __future__ import annotations

import os
import random
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_warn

from speech.checkpoints import LINEAGE_KEY, CheckpointWriteError, readable


class ConfigInCheckpoint(L.Callback):
    """Stores the run's resolved config in every checkpoint under ``"config"``, so a checkpoint alone
    rebuilds its model (``speech.checkpoints``)."""

    def __init__(self, config: dict) -> None:
        self.config = config

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint["config"] = self.config


class RunLineage(L.Callback):
    """An id drawn when a training run starts from nothing and kept by every resume (Lightning stores a
    callback's ``state_dict`` in each checkpoint): checkpoints share it when one run wrote them. Feature
    caches record it, so a later stage can tell latents of a continued Flow-VAE from those of a new one
    (``speech.checkpoints.run_lineage``, ``ResumeCheck``)."""

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex

    @property
    def state_key(self) -> str:
        return LINEAGE_KEY

    def state_dict(self) -> dict[str, Any]:
        return {"id": self.id}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.id = state_dict.get("id", self.id)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes ``<path>.tmp`` and renames it over ``<path>``: a run killed mid-write (``kill -9``) leaves the
    previous checkpoint intact instead of a truncated file under the name ``last.ckpt``, and a write that
    fails (a full disk) removes its partial ``.tmp`` and raises ``CheckpointWriteError`` naming the file and
    the free space. Reading a truncated or corrupt checkpoint (one copied by hand, say) to resume raises
    ``CheckpointError`` naming the file (``speech.checkpoints.readable``).

    Args:
        resume_check: Called with ``(checkpoint, path)`` on every checkpoint read, before Lightning loads it
            (``speech.checkpoints.ResumeCheck``: refuses one whose weights do not fit the run's model).
    """

    def __init__(self, resume_check: Callable[[dict, Path], None] | None = None) -> None:
        super().__init__()
        self.resume_check = resume_check

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        if "://" in str(path):  # remote filesystems keep Lightning's own writer
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        try:
            torch.save(checkpoint, tmp)
        except BaseException as err:  # also KeyboardInterrupt: never leave the partial file behind
            tmp.unlink(missing_ok=True)
            if isinstance(err, (OSError, RuntimeError)):  # torch's writer reports a full disk as RuntimeError
                raise CheckpointWriteError(
                    f"writing the checkpoint {path} failed ({type(err).__name__}: {err}); the partial file "
                    f"is removed and the previous {path.name} (if any) is kept. "
                    f"{_free_space(path.parent)} free on its disk: is it full?"
                ) from err
            raise
        os.replace(tmp, path)

    def load_checkpoint(self, path, map_location=lambda storage, loc: storage, weights_only=None) -> dict:
        with readable(path):
            checkpoint = super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        if self.resume_check is not None:
            self.resume_check(checkpoint, Path(path))
        return checkpoint


def _free_space(folder: Path) -> str:
    """The free space on ``folder``'s disk, e.g. ``"1.2 GB"`` (``"unknown"`` when it cannot be read)."""
    try:
        return f"{shutil.disk_usage(folder).free / 1e9:.3g} GB"
    except OSError:
        return "unknown"


class NonFiniteLossError(RuntimeError):
    """A training loss was NaN or infinite (raised by ``NonFiniteGuard`` in ``"stop"`` mode)."""


def logged_step_terms(trainer: L.Trainer) -> dict[str, float]:
    """The values ``training_step`` logged at the current step (``self.log``), best effort: ``{}`` when
    Lightning's internals differ (they are private)."""
    try:
        results = trainer._results
        return {
            m.meta.name: float(m._forward_cache)
            for m in results.values()
            if m.meta.fx == "training_step" and m.meta.on_step and m._forward_cache is not None
        }
    except Exception:  # noqa: BLE001 - a message helper must never fail the run itself
        return {}


class NonFiniteGuard(L.Callback):
    """Stops the run on a NaN/inf training loss, or skips the optimizer update it would have made.

    Every loss passed to backward is checked (``on_before_backward``: each micro-batch of an accumulated
    update, and each ``manual_backward``). At the next optimizer step the decision is made, the same on every
    rank (any rank's bad loss counts):

    - ``"stop"``: raises ``NonFiniteLossError`` naming the global step, epoch, batch, the loss and the terms
      logged at that step. Works with automatic and manual optimization.
    - ``"skip"``: the step's gradients are dropped before the optimizer runs, so neither the weights nor the
      optimizer state change, and the buffers that forward passes update (a VQ codebook's EMA, BatchNorm
      statistics) are put back as they were before the step's first micro-batch; the global step and the LR
      schedule still advance. Counted in ``train/skipped_batches`` (kept across resumes). Automatic
      optimization only.

    Args:
        mode: ``"stop"`` or ``"skip"``.
        check_gradients: Also treat non-finite gradients (after a finite loss) as bad (one more device sync).

    Raises:
        ValueError: an unknown mode; at setup, ``"skip"`` with a manual-optimization module.
    """

    def __init__(self, mode: str = "stop", check_gradients: bool = False) -> None:
        if mode not in ("stop", "skip"):
            raise ValueError(f"unknown NonFiniteGuard mode {mode!r}: use 'stop' or 'skip'")
        self.mode, self.check_gradients = mode, check_gradients
        self.skipped = 0
        self._batch_idx = -1
        self._bad: str | None = None  # description of the first bad loss since the last optimizer step
        self._buffers: list[torch.Tensor] | None = None  # skip mode: the buffers before this optimizer step

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.mode == "skip" and not pl_module.automatic_optimization:
            raise ValueError(
                f"NonFiniteGuard(mode='skip') needs automatic optimization; {type(pl_module).__name__} steps "
                "its optimizers itself: use callbacks.nan_guard.mode=stop"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))

    def _describe(self, trainer: L.Trainer, what: str) -> str:
        terms = ", ".join(f"{k}={v:.4g}" for k, v in logged_step_terms(trainer).items())
        where = f"global step {trainer.global_step} (epoch {trainer.current_epoch}, batch {self._batch_idx})"
        return f"{what} at {where}" + (f"; logged terms: {terms}" if terms else "")

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx
    ) -> None:
        self._batch_idx = batch_idx
        if (
            self.mode == "skip" and batch_idx % trainer.accumulate_grad_batches == 0
        ):  # an update's first batch
            self._buffers = [b.detach().clone() for b in pl_module.buffers()]

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        if self._bad is None and not bool(torch.isfinite(loss.detach()).all()):
            self._bad = self._describe(trainer, f"non-finite loss {loss.detach().float().mean().item()}")

    def _gradients_bad(self, optimizer) -> bool:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        return bool(grads) and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        if self._bad is None and self.check_gradients and self._gradients_bad(optimizer):
            self._bad = self._describe(trainer, "non-finite gradients")
        bad = trainer.strategy.reduce_boolean_decision(self._bad is not None, all=False)
        what = self._bad or f"a non-finite loss on another rank at global step {trainer.global_step}"
        self._bad, buffers, self._buffers = None, self._buffers, None
        if not bad:
            return
        if self.mode == "stop":
            raise NonFiniteLossError(
                f"{what}. Stopping (callbacks.nan_guard.mode=stop); to skip such batches instead use "
                "callbacks.nan_guard.mode=skip, or lower the learning rate / check the data."
            )
        optimizer.zero_grad(set_to_none=True)  # the optimizer skips parameters without gradients
        if buffers is not None:  # a NaN batch has already poisoned e.g. a VQ codebook in its forward pass
            with torch.no_grad():
                for buffer, before in zip(pl_module.buffers(), buffers, strict=True):
                    buffer.copy_(before)
        self.skipped += 1
        rank_zero_warn(f"{what}: skipped this optimizer update ({self.skipped} skipped so far)")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx):
        if self._bad is not None and not pl_module.automatic_optimization:
            # manual optimization that stepped around Lightning's optimizer wrapper: stop here
            raise NonFiniteLossError(f"{self._bad}. Stopping (callbacks.nan_guard.mode=stop).")
        pl_module.log("train/skipped_batches", float(self.skipped), on_step=True, on_epoch=False)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class RNGState(L.Callback):
    """Saves the Python, NumPy, torch (and CUDA) random states in checkpoints and restores them on resume,
    so a resumed run makes the same random draws (dropout masks, crops, noise) as an uninterrupted one.

    The states are taken when a checkpoint is written (after a training step) and put back just before the
    first training batch after the restore, after the data loaders started (their iterator start draws
    seeds). Validation is kept out of the training stream: the states after the last training batch are
    put back at its end, so validating or not (or a resumed run's different validation schedule) never
    shifts training draws. Each rank stores its own states (gathered at save); a run resumed with another
    world size gets rank 0's. Data-loading randomness is the sampler's and workers' own (seeded; the
    sampler's position is in the DataModule's checkpoint state).
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None
        self._after_batch: dict[str, Any] | None = None
        self._validation: dict[str, Any] | None = None

    @staticmethod
    def capture() -> dict[str, Any]:
        """The current random states of this process."""
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        # plain types and tensors only: Lightning loads checkpoints with torch.load(weights_only=True)
        numpy = (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))
        state = {"python": random.getstate(), "numpy": numpy, "torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    @staticmethod
    def restore(state: dict[str, Any]) -> None:
        """Sets this process's random states (CUDA only when present in ``state`` and here)."""
        random.setstate(state["python"])
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            cuda = state["cuda"]
            if len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda)
            else:
                rank_zero_warn(
                    f"RNG states of {len(cuda)} CUDA devices saved, {torch.cuda.device_count()} here"
                )

    def state_dict(self) -> dict[str, Any]:
        state = self.capture()
        if _distributed():
            states: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(states, state)
            return {"ranks": states}
        return {"ranks": [state]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        ranks = state_dict["ranks"]
        rank, world = (
            (torch.distributed.get_rank(), torch.distributed.get_world_size()) if _distributed() else (0, 1)
        )
        if len(ranks) != world:
            rank_zero_warn(f"RNG states saved by {len(ranks)} ranks, resuming on {world}: all use rank 0's")
            rank = 0
        self._pending = ranks[rank]

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx
    ) -> None:
        if self._pending is not None:
            self.restore(self._pending)
            self._pending = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx):
        # validation starts its data loader (which draws a seed) before its first hook: remember the
        # training stream here instead (cheap: a few kB copied on the CPU)
        self._after_batch = self.capture()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation = self._after_batch if self._after_batch is not None else self.capture()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._validation is not None:
            self.restore(self._validation)
            self._validation = None


class ProgressLog(L.Callback):
    """A plain progress line (step, loss, steps/s, ETA) every ``every_seconds``, for output that is not a
    terminal (SLURM logs, ``> run.log``), where the interactive progress bar shows nothing.

    Args:
        every_seconds: Minimum time between lines.
        force: Also print when stdout is a terminal (then it interleaves with the progress bar).
    """

    def __init__(self, every_seconds: float = 30.0, force: bool = False) -> None:
        self.every_seconds, self.force = every_seconds, force
        self._last = self._start = None
        self._start_step = 0

    def on_train_start(self, trainer, pl_module) -> None:
        self._last = self._start = time.monotonic()
        self._start_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not trainer.is_global_zero or (sys.stdout.isatty() and not self.force):
            return
        now = time.monotonic()
        if now - self._last < self.every_seconds:
            return
        self._last = now
        step, done = trainer.global_step, trainer.global_step - self._start_step
        rate = done / max(now - self._start, 1e-9)
        line = f"step {step}/{trainer.max_steps if trainer.max_steps > 0 else '?'}  {rate:.2f} steps/s"
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            line += f"  train/loss {float(loss):.4f}"
        if trainer.max_steps > 0 and rate > 0:
            line += f"  ETA {int((trainer.max_steps - step) / rate)} s"
        print(line, flush=True)


class TrainingClock(L.Callback):
    """Logs ``time/train_minutes``: wall-clock minutes spent in this run's training so far, validation
    included, carried across resumes in the checkpoint (the time between a kill and its resume does not
    count). Learning curves against compute time read it (``eval/learning_curves.py``)."""

    KEY = "time/train_minutes"

    def __init__(self) -> None:
        self.minutes = 0.0  # before this launch
        self._start: float | None = None

    def elapsed(self) -> float:
        """Minutes of training so far, this launch included."""
        now = 0.0 if self._start is None else (time.monotonic() - self._start) / 60
        return self.minutes + now

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        pl_module.log(self.KEY, self.elapsed(), on_step=True, on_epoch=False, batch_size=1)

    def state_dict(self) -> dict[str, Any]:
        return {"minutes": self.elapsed()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.minutes = float(state_dict.get("minutes", 0.0))


class FinalCheckpoint(L.Callback):
    """Writes ``last.ckpt`` when training ends between two checkpoint intervals (``max_steps`` not a
    multiple of ``every_n_train_steps``), so the steps after the last interval are never lost and the next
    stage reads the finished model."""

    def on_train_end(self, trainer, pl_module) -> None:
        cb = trainer.checkpoint_callback
        if cb is None or cb.dirpath is None or not cb.save_last:
            return
        if getattr(cb, "_last_global_step_saved", None) == trainer.global_step:
            return
        trainer.save_checkpoint(Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}")
