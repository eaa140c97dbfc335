"""Runs a pipeline's commands as a dependency graph on a fixed number of CPU slots.

Each ``Task`` is a command, the tasks it needs first and the slots (threads) it uses. It runs with
``OMP_NUM_THREADS`` set to its slots and writes everything it prints to ``<log_dir>/<name>.log``. Whenever
slots are free, ready tasks start in list order, so a core that one branch of the graph leaves idle is
picked up by another branch (the tiny pipeline's tokenizer lane and Flow-VAE lane do not wait for each
other). A failure stops new starts, lets the running tasks finish, and raises ``TaskFailed`` with the tail
of the failed task's log. Every ``report_every`` seconds the runner prints the latest progress line of each
running task, so a long run shows signs of life in a plain log.

Used by ``scripts/run_tiny.py`` (the main job) and ``scripts/jobs/run_emotion_tiny.py`` (:func:`run_job`).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

# Lines worth showing from a task's log: Lightning's ProgressLog lines and tqdm rates.
PROGRESS = re.compile(r"^step [0-9]+/|it/s|wav/s|cut/s|utt/s")


@dataclass(frozen=True)
class Task:
    """One command of the graph.

    Args:
        name: Unique; also the log file's name.
        command: ``argv``, or a callable returning it when the task starts (for arguments that exist only
            after earlier tasks ran, such as a checkpoint's hash).
        after: Names of the tasks that must succeed first.
        threads: CPU slots it occupies (its ``OMP_NUM_THREADS``).
        done_if: The task is skipped when this file already exists, or when this callable (asked when the
            task is ready to start) returns why it is done; ``None`` from it: not done.
    """

    name: str
    command: Sequence[str] | Callable[[], Sequence[str]]
    after: tuple[str, ...] = ()
    threads: int = 1
    done_if: Path | Callable[[], str | None] | None = None

    def done(self) -> str | None:
        """Why the task need not run (``None``: it must)."""
        if callable(self.done_if):
            return self.done_if()
        return f"{self.done_if} exists" if self.done_if is not None and self.done_if.exists() else None


@dataclass
class TaskTime:
    """When a task started (seconds after the run began), how long it ran and how it ended
    (``ok``, ``skipped`` or ``failed``)."""

    name: str
    start: float
    seconds: float
    status: str


class TaskFailed(RuntimeError):
    """A task exited with a nonzero status; ``times`` holds every task that ran."""

    def __init__(self, message: str, times: list[TaskTime]) -> None:
        super().__init__(message)
        self.times = times


def check_graph(tasks: Sequence[Task], slots: int) -> None:
    """Raises ``ValueError`` for duplicate names, unknown or cyclic dependencies and tasks needing more
    threads than there are slots."""
    if slots < 1:
        raise ValueError(f"slots must be >= 1, got {slots}")
    names = [t.name for t in tasks]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"task names must be unique, repeated: {dupes}")
    for task in tasks:
        if unknown := sorted(set(task.after) - set(names)):
            raise ValueError(f"task {task.name!r} runs after unknown tasks {unknown}; known: {names}")
        if not 1 <= task.threads <= slots:
            raise ValueError(f"task {task.name!r} wants {task.threads} threads; allowed: 1..{slots} (slots)")
    resolved: set[str] = set()
    remaining = list(tasks)
    while remaining:
        ready = [t for t in remaining if set(t.after) <= resolved]
        if not ready:
            raise ValueError(f"tasks wait on each other in a cycle: {sorted(t.name for t in remaining)}")
        resolved |= {t.name for t in ready}
        remaining = [t for t in remaining if t.name not in resolved]


def latest_progress(log: Path, pattern: re.Pattern = PROGRESS) -> str:
    """The last line of ``log`` matching ``pattern`` (carriage-return progress bars split too), or ``""``."""
    try:
        with log.open("rb") as f:
            f.seek(max(0, log.stat().st_size - 65536))
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    lines = [line.strip() for line in re.split(r"[\r\n]", text) if pattern.search(line)]
    return lines[-1] if lines else ""


def _tail(log: Path, n: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log.exists() else ""


def _clock(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


def run_tasks(
    tasks: Sequence[Task],
    *,
    slots: int,
    log_dir: str | Path,
    report_every: float = 30.0,
    poll: float = 0.2,
    echo: Callable[[str], None] = print,
) -> list[TaskTime]:
    """Runs ``tasks`` (see the module docstring) and returns their ``TaskTime``s in the order they ended.

    Raises:
        ValueError: the graph is invalid (``check_graph``).
        TaskFailed: a task failed; the tasks that needed it never started.
    """
    check_graph(tasks, slots)
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    pending, running, times = list(tasks), {}, []
    done: set[str] = set()
    asked: set[str] = set()  # ready tasks whose done() said they must run
    failed: str | None = None
    last_report = start
    try:
        while pending or running:
            if failed is None:
                free = slots - sum(task.threads for task, _, _ in running.values())
                for task in [t for t in pending if set(t.after) <= done]:
                    now = time.monotonic() - start
                    if task.name not in asked and (reason := task.done()) is not None:
                        pending.remove(task)
                        done.add(task.name)
                        times.append(TaskTime(task.name, now, 0.0, "skipped"))
                        echo(f"[{_clock(now)}] {task.name}: skipped ({reason})")
                        continue
                    asked.add(task.name)  # asked once, when ready: what it depends on is done by then
                    if task.threads <= free:
                        pending.remove(task)
                        running[task.name] = (task, _launch(task, log_dir), time.monotonic())
                        free -= task.threads
                        echo(f"[{_clock(now)}] {task.name}: started, {task.threads} thread(s), "
                             f"log {log_dir / task.name}.log")  # fmt: skip
            if not running:
                break  # everything ran, or a failure left only tasks that needed it
            time.sleep(poll)
            for name, (_, proc, began) in list(running.items()):
                if (rc := proc.poll()) is None:
                    continue
                del running[name]
                now = time.monotonic()
                status = "ok" if rc == 0 else "failed"
                times.append(TaskTime(name, began - start, now - began, status))
                echo(f"[{_clock(now - start)}] {name}: {status} after {_clock(now - began)}"
                     + ("" if rc == 0 else f" (exit {rc})"))  # fmt: skip
                if rc == 0:
                    done.add(name)
                elif failed is None:
                    failed = name
            if running and time.monotonic() - last_report >= report_every:
                last_report = time.monotonic()
                for name in running:
                    line = latest_progress(log_dir / f"{name}.log") or "(no progress line yet)"
                    echo(f"   {name:<16} {line[:110]}")
    except BaseException:
        for _, proc, _ in running.values():  # Ctrl-C or an error here: take the children down too
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        raise
    if failed is not None:
        log = log_dir / f"{failed}.log"
        never = sorted(t.name for t in pending)
        raise TaskFailed(f"task {failed!r} failed (log {log}); not started: {never}\n{_tail(log)}", times)
    return times


def _launch(task: Task, log_dir: Path) -> subprocess.Popen:
    command = task.command() if callable(task.command) else task.command
    env = {**os.environ, "OMP_NUM_THREADS": str(task.threads)}
    with (log_dir / f"{task.name}.log").open("w") as log:
        log.write("$ " + " ".join(map(str, command)) + "\n")
        log.flush()
        return subprocess.Popen(list(map(str, command)), stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # fmt: skip


def timings_markdown(times: Sequence[TaskTime], total: float) -> str:
    """A markdown table of the tasks' start offsets and wall times, in start order, with the total."""
    lines = ["| task | started at | wall time | status |", "|---|---:|---:|---|"]
    for t in sorted(times, key=lambda t: t.start):
        lines.append(f"| {t.name} | {_clock(t.start)} | {_clock(t.seconds)} | {t.status} |")
    lines.append(f"| **total** | | **{_clock(total)}** | |")
    return "\n".join(lines) + "\n"


RERUN_HINT = (
    "Fix what the log above names and run the same command again: finished tasks are kept, a stage that "
    "stopped resumes from its last checkpoint, and the other tasks continue where they were."
)


def run_job(
    tasks: Sequence[Task], *, slots: int, log_dir: str | Path, echo: Callable[[str], None] = print
) -> str | None:
    """Runs a job's graph (:func:`run_tasks`) and writes ``<log_dir>/timings.md`` whether it succeeds or not.

    Returns:
        The timing table, or ``None`` when a task failed (after printing why to stderr).
    """
    began = time.monotonic()
    try:
        times = run_tasks(tasks, slots=slots, log_dir=log_dir, echo=echo)
    except TaskFailed as err:
        print(f"FAILED: {err}", file=sys.stderr)
        print(RERUN_HINT, file=sys.stderr)
        (Path(log_dir) / "timings.md").write_text(timings_markdown(err.times, time.monotonic() - began))
        return None
    timing = timings_markdown(times, time.monotonic() - began)
    (Path(log_dir) / "timings.md").write_text(timing)
    return timing
