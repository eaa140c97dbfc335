"""The GPU check (issue 15, docs/gpu_check.md): what to measure the first time a GPU is at hand. A benchmark,
not a test (argparse, like the other scripts of scripts/bench/); ``scripts/gpu_check.sh`` runs it after the
CUDA-marked tests.

    python scripts/bench/gpu_check.py --out logs/gpu_check
    python scripts/bench/gpu_check.py --device cpu --quick --out /tmp/gpu_check    # toy sizes, every section

Each section (``gpu_check_sections.py``, which says what each measures and how FLOPs are counted) runs in a
process of its own under a time limit, so a crash, a CUDA error or a hang is written into the report and the
other sections still run; a section records each number as soon as it has it, so one stopped at its limit
keeps what it measured. The sections that measure the two goals run first, in case the time budget runs out.
The report, ``report.json`` and ``report.md`` in ``--out``, holds the environment, the goals as measured and
every section's status, error and numbers; ``sections.log`` holds their output.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
SECTIONS_SCRIPT = Path(__file__).resolve().with_name("gpu_check_sections.py")
SECTIONS = ["train_tokenizer", "train_flow_vae", "train_ar", "train_flow_matching", "ar_mfu", "ddp", "fsdp",
            "ar_decode", "fm_rtf", "stream"]  # fmt: skip
# section -> time limit in seconds
LIMITS = {"ar_decode": 150, "ar_mfu": 90, "train_ar": 45, "train_flow_matching": 40, "train_tokenizer": 40,
          "train_flow_vae": 45, "ddp": 45, "fsdp": 60, "fm_rtf": 30, "stream": 45}  # fmt: skip
GOAL_DECODE_RATIO, GOAL_MFU_PERCENT = 5.0, 40.0  # issue 15: AR decoding at batch 1 vs HF; AR training MFU
RUN_ORDER = ["ar_decode", "ar_mfu", "train_ar", "stream", "fm_rtf", "train_flow_matching", "train_tokenizer",
             "train_flow_vae", "ddp", "fsdp"]  # fmt: skip  # the goals first, in case the budget runs out
MIN_SECTION_S = 10  # a section is not started with less time left than this


def run_section(cmd: list[str], limit: float, log: Path) -> dict:
    """Runs one section's process (and any it starts) under ``limit`` seconds; its output goes to ``log``.

    Returns ``status`` ("ok", "failed", "timed out"), ``seconds``, ``error`` (the last line of the output,
    a Python traceback's exception) and ``output_tail``."""
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                    filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})  # fmt: skip
        try:
            rc = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # DDP ranks too
            proc.wait()
            rc = None
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    status = "ok" if rc == 0 else "timed out" if rc is None else "failed"
    error = None
    if rc is None:
        error = f"stopped at its time limit of {limit:.0f} s"
    elif rc:
        error = lines[-1] if lines else f"exit status {rc}, no output"
    return {"status": status, "seconds": round(time.perf_counter() - start, 1), "limit_s": round(limit),
            "error": error, "output_tail": lines[-25:] if rc != 0 else []}  # fmt: skip


def run_all(args) -> dict:
    """Every chosen section in its own process within the budget; returns the report."""
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget
    sections = {}
    combined = args.out / "sections.log"
    combined.write_text("")
    with tempfile.TemporaryDirectory() as tmp:
        for name in [s for s in RUN_ORDER if s in args.sections]:
            left = deadline - time.monotonic()
            if left < MIN_SECTION_S:
                sections[name] = {"status": "skipped", "error": "the check's time budget was spent"}
                continue
            record, log = Path(tmp) / f"{name}.json", Path(tmp) / f"{name}.log"
            cmd = [sys.executable, str(SECTIONS_SCRIPT), name, "--record", str(record), "--device",
                   args.device.type] + (["--quick"] if args.quick else [])  # fmt: skip
            print(f"[gpu_check] {name} (limit {min(LIMITS[name], left):.0f} s)", flush=True)
            sections[name] = run_section(cmd, min(LIMITS[name], left), log)
            sections[name]["results"] = json.loads(record.read_text()) if record.is_file() else {}
            with combined.open("a") as out:
                out.write(
                    f"===== {name}: {sections[name]['status']} =====\n{log.read_text(errors='replace')}\n"
                )
            print(
                f"[gpu_check] {name}: {sections[name]['status']} in {sections[name]['seconds']} s", flush=True
            )
    if args.tests_log is not None:
        sections["cuda_tests"] = cuda_tests(args.tests_log, args.tests_rc)
    order = ["cuda_tests", *SECTIONS]
    report = {"environment": environment(args.device),
              "mode": "quick (toy sizes)" if args.quick else "full", "goals": goals(sections),
              "sections": {k: sections[k] for k in order if k in sections}}  # fmt: skip
    (args.out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    (args.out / "report.md").write_text(markdown(report))
    return report


def cuda_tests(log: Path, rc: int | None) -> dict:
    """The ``pytest -m gpu`` runs of scripts/gpu_check.sh: their exit status and summary lines."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    summaries = [
        m.strip("= ")
        for m in re.findall(r"^=*\s*\d+ (?:passed|failed|skipped|deselected|error).*$", text, re.M)
    ]
    status = {0: "ok", 5: "ok"}.get(rc, "timed out" if rc in (124, 137) else "failed")
    lines = text.strip().splitlines()
    error = None if status == "ok" else (lines[-1] if lines else f"exit status {rc}, no output")
    return {"status": status, "error": error,
            "results": {"exit_status": rc, "summary": "; ".join(summaries) or "no summary line"}}  # fmt: skip


def environment(device: torch.device) -> dict:
    """Versions, the device and the commit the numbers belong to."""
    from importlib.metadata import PackageNotFoundError, version

    def package(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    cuda = device.type == "cuda"
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "commit": commit.stdout.strip() or "?",
            "python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
            "device": torch.cuda.get_device_name(device) if cuda else "cpu",
            "device_count": torch.cuda.device_count() if cuda else 1,
            "transformers": package("transformers"), "lightning": package("lightning")}  # fmt: skip


def goals(sections: dict) -> list[dict]:
    """The issue's two goals, as measured (None where a section did not get that far)."""
    ratio = sections.get("ar_decode", {}).get("results", {}).get("batch_1_ratio_vs_hf")
    mfu = sections.get("ar_mfu", {}).get("results", {}).get("best_mfu_percent")
    return [
        {"goal": "AR decoding at batch 1, ours / HF LlamaForCausalLM.generate (default cache)",
         "target": f">= {GOAL_DECODE_RATIO:g}x", "measured": ratio,
         "met": None if ratio is None else ratio >= GOAL_DECODE_RATIO},
        {"goal": "AR training MFU, base size (best of eager and compiled)",
         "target": f">= {GOAL_MFU_PERCENT:g} %", "measured": mfu,
         "met": None if mfu is None else mfu >= GOAL_MFU_PERCENT},
    ]  # fmt: skip


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def markdown(report: dict) -> str:
    """The report as markdown: environment, goals, then one table per section."""
    env = report["environment"]
    setup = ", ".join(f"{k} {fmt(v)}" for k, v in env.items() if k != "date")
    lines = [f"# GPU check, {env['date']}", "", f"Mode: {report['mode']}. {setup}.", "", "## Goals", "",
             "| goal | target | measured | met |", "| --- | --- | ---: | --- |"]  # fmt: skip
    lines += [
        f"| {g['goal']} | {g['target']} | {fmt(g['measured'])} | {fmt(g['met'])} |" for g in report["goals"]
    ]
    for name, section in report["sections"].items():
        took = f" in {section['seconds']} s (limit {section['limit_s']} s)" if "seconds" in section else ""
        lines += ["", f"## {name}", "", f"Status: **{section['status']}**{took}."]
        if section.get("error"):
            lines += ["", f"Error: `{section['error']}`"]
        rows = flatten(section.get("results", {}))
        if rows:
            lines += ["", "| measure | value |", "| --- | ---: |"] + [f"| {k} | {fmt(v)} |" for k, v in rows]
    return "\n".join(lines) + "\n"


def flatten(results: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for key, value in results.items():
        if isinstance(value, dict):
            rows += flatten(value, f"{prefix}{key} / ")
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_out = Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "logs" / "gpu_check"
    parser.add_argument("--out", type=Path, default=default_out, help="report folder (default $OUT, else "
                        "logs/gpu_check)")  # fmt: skip
    parser.add_argument(
        "--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--quick", action="store_true", help="toy sizes (the tiny experiments)")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for all sections together")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=SECTIONS)
    parser.add_argument("--tests-log", type=Path, help="log of the CUDA-marked tests (scripts/gpu_check.sh)")
    parser.add_argument("--tests-rc", type=int, help="their exit status")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here; on a CPU run the toy sizes with "
                     "--device cpu --quick")  # fmt: skip
    if args.device == "cpu" and not args.quick:
        parser.error("--device cpu runs the toy sizes only (the base models would take hours): add --quick")
    args.device = torch.device(args.device)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    report = run_all(args)
    for name, section in report["sections"].items():
        print(f"{name:22s} {section['status']:10s} {section.get('error') or ''}")
    for goal in report["goals"]:
        print(
            f"goal: {goal['goal']}: {fmt(goal['measured'])} (target {goal['target']}, met {fmt(goal['met'])})"
        )
    print(f"report: {args.out / 'report.md'}")


if __name__ == "__main__":
    main()
