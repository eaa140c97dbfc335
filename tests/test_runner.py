"""speech.runner: dependencies, CPU slots, failures, lazy commands and skipped tasks."""

import sys

import pytest

from speech.runner import Task, TaskFailed, check_graph, latest_progress, run_job, run_tasks, timings_markdown

STAMP = "import os, sys, time; t = time.time(); time.sleep({sleep}); open(sys.argv[1], 'w').write(f'{{t}} {{time.time()}} ' + os.environ['OMP_NUM_THREADS'])"  # noqa: E501


def stamped(tmp_path, name, sleep=0.3, **kw):
    """A task that records (start, end, OMP_NUM_THREADS) in ``<tmp_path>/<name>.stamp``."""
    stamp = tmp_path / f"{name}.stamp"
    return Task(name, [sys.executable, "-c", STAMP.format(sleep=sleep), str(stamp)], **kw)


def read(tmp_path, name):
    start, end, threads = (tmp_path / f"{name}.stamp").read_text().split()
    return float(start), float(end), int(threads)


def test_dependencies_slots_and_threads(tmp_path):
    graph = [
        stamped(tmp_path, "a"),
        stamped(tmp_path, "b"),
        stamped(tmp_path, "c", after=("a",)),
        stamped(tmp_path, "wide", threads=2, after=("a", "b")),
    ]
    times = run_tasks(graph, slots=2, log_dir=tmp_path / "logs", echo=lambda _: None)
    assert sorted(t.name for t in times) == ["a", "b", "c", "wide"] and {t.status for t in times} == {"ok"}
    a, b, c, wide = (read(tmp_path, n) for n in ("a", "b", "c", "wide"))
    assert c[0] >= a[1] and wide[0] >= max(a[1], b[1])  # after its dependencies
    assert abs(a[0] - b[0]) < 0.25  # independent tasks share the two slots
    assert wide[0] >= c[1] or wide[1] <= c[0]  # the 2-thread task never overlaps another
    assert (a[2], wide[2]) == (1, 2)  # OMP_NUM_THREADS = its slots
    assert (tmp_path / "logs" / "a.log").read_text().startswith("$ ")


def test_a_failure_stops_what_needs_it_and_names_the_log(tmp_path):
    bad = Task("bad", [sys.executable, "-c", "print('boom'); raise SystemExit(3)"])
    graph = [bad, stamped(tmp_path, "other", sleep=0.5), stamped(tmp_path, "child", after=("bad",))]
    with pytest.raises(TaskFailed, match=r"task 'bad' failed .*bad\.log.*not started: \['child'\]") as err:
        run_tasks(graph, slots=2, log_dir=tmp_path, echo=lambda _: None)
    assert "boom" in str(err.value)  # the log's tail
    assert (tmp_path / "other.stamp").exists() and not (tmp_path / "child.stamp").exists()
    assert {t.name: t.status for t in err.value.times} == {"bad": "failed", "other": "ok"}


def test_run_job_writes_the_timings_either_way(tmp_path, capsys):
    timing = run_job([stamped(tmp_path, "a", sleep=0)], slots=1, log_dir=tmp_path, echo=lambda _: None)
    assert "| a |" in timing and "| ok |" in timing and (tmp_path / "timings.md").read_text() == timing
    bad = Task("bad", [sys.executable, "-c", "raise SystemExit(3)"])
    assert run_job([bad], slots=1, log_dir=tmp_path, echo=lambda _: None) is None
    assert (
        "| bad |" in (tmp_path / "timings.md").read_text()
        and "| failed |" in (tmp_path / "timings.md").read_text()
    )
    err = capsys.readouterr().err
    assert "FAILED: task 'bad' failed" in err and "run the same command again" in err


def test_lazy_command_and_done_if(tmp_path):
    made = tmp_path / "made.txt"
    first = Task("make", [sys.executable, "-c", f"open({str(made)!r}, 'w').write('hello')"])
    # the command is built when the task starts, so it can read what "make" wrote
    check = lambda: [sys.executable, "-c", f"assert {made.read_text()!r} == 'hello'"]  # noqa: E731
    lazy = Task("lazy", check, after=("make",))
    skipped = Task("skip", [sys.executable, "-c", "raise SystemExit(1)"], done_if=made, after=("make",))
    times = run_tasks([first, lazy, skipped], slots=1, log_dir=tmp_path, echo=lambda _: None)
    assert {t.name: t.status for t in times} == {"make": "ok", "lazy": "ok", "skip": "skipped"}
    table = timings_markdown(times, 1.0)
    assert "| lazy |" in table and "| skip | 0:00 | 0:00 | skipped |" in table


def test_a_callable_done_if_is_asked_once_when_the_task_is_ready(tmp_path):
    """It may be costly (run_tiny hashes checkpoints in it): asked when the task's inputs are done, not
    at every poll while the task waits for a slot; its reason is what the job prints."""
    asked: list[str] = []

    def never_done() -> str | None:
        asked.append("wait")
        return None

    def done_before() -> str | None:
        asked.append("skip")
        return "scored before"

    lines: list[str] = []
    slow = Task("slow", [sys.executable, "-c", "import time; time.sleep(1.0)"])
    waits = Task("waits", [sys.executable, "-c", "pass"], done_if=never_done)  # one slot: waits for "slow"
    fails = [sys.executable, "-c", "raise SystemExit(1)"]
    skipped = Task("skip", fails, done_if=done_before, after=("slow",))
    times = run_tasks([slow, waits, skipped], slots=1, log_dir=tmp_path, echo=lines.append, poll=0.05)
    assert {t.name: t.status for t in times} == {"slow": "ok", "waits": "ok", "skip": "skipped"}
    assert sorted(asked) == ["skip", "wait"]
    assert any(line.endswith("skip: skipped (scored before)") for line in lines)


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        ([Task("a", ["x"]), Task("a", ["y"])], "unique, repeated: \\['a'\\]"),
        ([Task("a", ["x"], after=("nope",))], "unknown tasks \\['nope'\\]"),
        ([Task("a", ["x"], threads=3)], "wants 3 threads; allowed: 1..2"),
        ([Task("a", ["x"], after=("b",)), Task("b", ["x"], after=("a",))], "cycle: \\['a', 'b'\\]"),
    ],
)
def test_invalid_graphs(graph, message):
    with pytest.raises(ValueError, match=message):
        check_graph(graph, 2)


def test_latest_progress_reads_progress_bars_and_step_lines(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("hello\nstep 10/100  3.0 steps/s\nencode: 5%| 3/60 [00:01, 2.9it/s]\r 10%| 6/60 2.8it/s\r")
    assert latest_progress(log) == "10%| 6/60 2.8it/s"
    assert latest_progress(tmp_path / "missing.log") == ""
