"""Save, stop and requeue on a signal: what a SLURM job does when its time limit nears.

``sbatch --signal=SIGUSR1@90`` signals the job 90 s before its limit. Lightning's own SLURM handler writes a
checkpoint inside the signal handler, wherever each rank happens to be (under DDP its collectives can meet
the step's all-reduce), names it ``hpc_ckpt_<n>.ckpt`` (which ``ckpt_path=last`` does not read) and goes on
training. ``Requeue`` instead only notes the signal; at the next step boundary every rank agrees (a signal
seen by any rank counts), ``last.ckpt`` is written as at a checkpoint interval, rank 0 asks SLURM to requeue
the job (``scontrol requeue $SLURM_JOB_ID``), and the run stops cleanly. The requeued job runs the same
command, which resumes from ``last.ckpt`` exactly (``ckpt_path=last``).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
from pathlib import Path

import lightning as L

log = logging.getLogger(__name__)


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` takes: ``<array job>_<task>`` in a job array, else ``SLURM_JOB_ID``."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array is not None:
        return f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


class Requeue(L.Callback):
    """On ``signal``: at the next step boundary writes ``last.ckpt``, requeues the SLURM job (when there is
    one and ``requeue`` is on) and stops training.

    Under DDP the ranks agree once per step (one small all-reduce).

    Args:
        signal: The signal's name (``"SIGUSR1"``, as in ``sbatch --signal=SIGUSR1@90``).
        requeue: Run ``scontrol requeue <job id>`` after the checkpoint (inside a SLURM job only).

    Raises:
        ValueError: an unknown signal name.
    """

    def __init__(self, signal: str = "SIGUSR1", requeue: bool = True) -> None:
        self.signum = _signal(signal)
        self.requeue = requeue
        self.received = False
        self._previous = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(self.signum, self._note)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore()

    def _restore(self) -> None:
        if self._previous is not None:
            signal.signal(self.signum, self._previous)
            self._previous = None

    def _note(self, signum, frame) -> None:
        self.received = True  # only a flag: the work waits for a step boundary every rank reaches

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not trainer.strategy.reduce_boolean_decision(self.received, all=False):
            return
        cb = trainer.checkpoint_callback
        if cb is None or cb.dirpath is None:
            name = signal.Signals(self.signum).name
            raise RuntimeError(f"{name} received, but no checkpoint callback to save the run with")
        last = Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}"
        trainer.save_checkpoint(last)  # every rank: the dump is collective, rank 0 writes
        cb._last_global_step_saved = trainer.global_step  # FinalCheckpoint need not write it again
        job = slurm_job_id()
        if trainer.is_global_zero and self.requeue and job is not None:
            _scontrol_requeue(job)
        if trainer.is_global_zero:
            log.warning(
                "%s received: saved %s at global step %d and stopped%s",
                signal.Signals(self.signum).name, last, trainer.global_step,
                f"; requeued SLURM job {job}" if job and self.requeue else "",
            )  # fmt: skip
        trainer.should_stop = True


def _signal(name: str) -> int:
    try:
        return int(getattr(signal.Signals, name))
    except AttributeError:
        raise ValueError(f"unknown signal {name!r}: use a name such as 'SIGUSR1'") from None


def _scontrol_requeue(job: str) -> None:
    if not re.fullmatch(r"[0-9_]+", job):
        raise ValueError(f"not a SLURM job id: {job!r}")
    result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if result.returncode != 0:
        log.warning("scontrol requeue %s failed (%d): %s", job, result.returncode, result.stderr.strip())
