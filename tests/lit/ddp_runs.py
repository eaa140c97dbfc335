"""Real multi-process runs of train.py for the distributed tests: each launch is a fresh ``python train.py``
process (Lightning starts the other local ranks itself), with the ``DDPProbe`` callback recording what every
rank saw."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "train.py"
TWO_PROCESSES = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
TIMEOUT = 300  # a hung collective fails the test instead of the CI job


def probe(out: Path, **options) -> list[str]:
    """The overrides that add ``ddp_probe.DDPProbe(out, **options)`` to a run's callbacks."""
    args = ["+callbacks.probe._target_=ddp_probe.DDPProbe", f"+callbacks.probe.out={out}"]
    return args + [f"+callbacks.probe.{k}={v}" for k, v in options.items()]


def environment(**extra: str) -> dict[str, str]:
    """This process's environment, plus ``tests/lit`` on the path (the probe), one thread per rank, whole
    Hydra errors, and ``extra``."""
    launcher = ("SLURM_", "MASTER_", "NODE_RANK", "WORLD_SIZE", "RANK", "LOCAL_RANK", "GROUP_RANK")
    env = {k: v for k, v in os.environ.items() if not k.startswith(launcher)}  # a test runs its own world
    paths = [str(ROOT / "tests" / "lit"), env.get("PYTHONPATH", "")]
    env.update(PYTHONPATH=os.pathsep.join(p for p in paths if p), OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="1")
    env.update(extra)
    return env


def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python train.py *args`` in its own process group (so that a kill reaches its ranks), output to
    ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, str(TRAIN), *args], cwd=ROOT, env=env or environment(), stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def finish(process: subprocess.Popen, log: Path, expect: int | None = 0) -> int:
    """Waits for ``process``; its return code, which must be ``expect`` (unless ``None``)."""
    try:
        code = process.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        raise AssertionError(f"train.py hung; its output:\n{tail(log)}") from None
    assert expect is None or code == expect, f"train.py exited {code}; its output:\n{tail(log)}"
    return code


def train(args: list[str], log: Path, env: dict[str, str] | None = None, expect: int | None = 0) -> int:
    """``python train.py *args``, waited for."""
    return finish(start(args, log, env), log, expect)


def tail(log: Path, lines: int = 60) -> str:
    return "\n".join(Path(log).read_text(errors="replace").splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
