"""Multi-node training proven on one machine (issue 15): two "nodes" of one process each, started the way a
launcher starts them (``NODE_RANK``, ``MASTER_ADDR`` from the environment), complete a run; the SLURM trainer
under the variables ``srun`` sets for 2 nodes x 1 task derives the world and the ranks, and SIGUSR1 (what
``sbatch --signal=SIGUSR1@90`` sends) makes it write ``last.ckpt``, requeue the job (a fake ``scontrol``)
and exit, so that the requeued job resumes from it. Every rank is a real ``python train.py`` process."""

import os
import signal
import time

import pytest
from ddp_probe import read
from ddp_runs import environment, finish, free_port, probe, start, tail
from tiny_tokenizer import tokenizer_command

from speech.checkpoints import load_checkpoint

CPU_DDP = ["trainer.accelerator=cpu", "trainer.enable_progress_bar=false"]


def trained(events: list[dict]) -> dict[int, dict]:
    return {e["step"]: e for e in events if e["event"] == "trained"}


def setup(events: list[dict]) -> dict:
    return next(e for e in events if e["event"] == "setup")


def test_two_nodes_of_one_process_each_complete_a_run(shared_prepared, tmp_path):
    args = [*tokenizer_command(shared_prepared, tmp_path / "logs", "trainer.max_steps=2"), "trainer=ddp",
            *CPU_DDP, "trainer.devices=1", "trainer.num_nodes=2", *probe(tmp_path / "probe")]  # fmt: skip
    port = str(free_port())
    nodes = [
        start(
            args,
            tmp_path / f"node{n}.log",
            environment(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, NODE_RANK=str(n)),
        )  # fmt: skip
        for n in (0, 1)
    ]
    for n, node in enumerate(nodes):
        finish(node, tmp_path / f"node{n}.log")
    events = read(tmp_path / "probe")
    for rank in (0, 1):
        world = setup(events[rank])
        assert (world["node_rank"], world["local_rank"], world["world_size"]) == (rank, 0, 2)
        assert world["environment"] == "LightningEnvironment" and world["backend"] == "gloo"
    assert trained(events[0]).keys() == trained(events[1]).keys() == {1, 2}
    assert all(trained(events[0])[s]["weights"] == trained(events[1])[s]["weights"] for s in (1, 2))
    assert {e["rank"] for r in (0, 1) for e in events[r] if e["event"] == "save"} == {0}
    assert load_checkpoint(tmp_path / "logs/tokenizer_tiny/checkpoints/last.ckpt")["global_step"] == 2


JOB = "4242"


@pytest.fixture
def fake_slurm(tmp_path):
    """A ``scontrol`` on PATH that records its arguments, and the environment of SLURM task ``rank`` of a
    2 nodes x 1 task allocation."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol.calls"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    port = str(free_port())

    def task(rank: int) -> dict[str, str]:
        return environment(
            PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", MASTER_PORT=port, SLURM_JOB_ID=JOB,
            SLURM_JOB_NAME="ar_base", SLURM_NNODES="2", SLURM_NTASKS="2", SLURM_NTASKS_PER_NODE="1",
            SLURM_NODELIST="127.0.0.1", SLURM_PROCID=str(rank), SLURM_LOCALID="0", SLURM_NODEID=str(rank),
        )  # fmt: skip

    return task, calls


def wait_for(condition, seconds: float = 240.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.2)


def test_slurm_tasks_find_their_ranks_and_sigusr1_saves_requeues_and_a_rerun_resumes(
    shared_prepared, tmp_path, fake_slurm
):
    task, calls = fake_slurm
    common = [*tokenizer_command(shared_prepared, tmp_path / "logs", "trainer.max_steps=8"), "trainer=slurm",
              *CPU_DDP]  # fmt: skip
    first = tmp_path / "first"
    tasks = [
        start([*common, *probe(first, step_seconds=0.5)], tmp_path / f"task{r}.log", task(r)) for r in (0, 1)
    ]

    def both_trained_a_step() -> bool:
        logs = [first / f"rank{r}.jsonl" for r in (0, 1)]
        return all(p.is_file() and '"event": "trained"' in p.read_text() for p in logs)

    wait_for(both_trained_a_step)
    for t in tasks:  # SLURM signals every task of the job
        os.kill(t.pid, signal.SIGUSR1)
    for r, t in enumerate(tasks):
        finish(t, tmp_path / f"task{r}.log")  # exits 0, well before max_steps
    events = read(first)
    for rank in (0, 1):
        world = setup(events[rank])
        assert world["environment"] == "SLURMEnvironment" and world["world_size"] == 2
        assert (world["node_rank"], world["local_rank"]) == (rank, 0) and world["backend"] == "gloo"
    stopped = max(trained(events[0]))
    assert stopped == max(trained(events[1])) < 8
    last = tmp_path / "logs/tokenizer_tiny/checkpoints/last.ckpt"
    assert load_checkpoint(last)["global_step"] == stopped
    assert calls.read_text().splitlines() == [f"requeue {JOB}"]  # once, by rank 0
    assert f"SIGUSR1 received: saved {last} at global step {stopped}" in (tmp_path / "task0.log").read_text()

    again = tmp_path / "again"  # the requeued job: the same command
    tasks = [start([*common, *probe(again)], tmp_path / f"again{r}.log", task(r)) for r in (0, 1)]
    for r, t in enumerate(tasks):
        finish(t, tmp_path / f"again{r}.log")
    resumed = read(again)
    for rank in (0, 1):
        steps = [e["step"] for e in resumed[rank] if e["event"] == "batch"]
        assert steps == list(range(stopped, 8)), tail(tmp_path / f"again{rank}.log")
    assert load_checkpoint(last)["global_step"] == 8
