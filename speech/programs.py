"""Running an external program (a synthesizer, a phonemizer) with a time limit and one-line errors."""

from __future__ import annotations

import subprocess


def run_program(cmd: list[str], what: str, timeout_s: float, error: type[Exception] = RuntimeError) -> bytes:
    """Runs ``cmd`` without standard input and returns its stdout.

    Raises:
        error: it timed out or failed; the message starts with ``what`` and gives the first line of its
            stderr.
    """
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as err:
        raise error(f"{what}: timed out after {timeout_s} s") from err
    if proc.returncode != 0:
        raise error(f"{what}: exit status {proc.returncode}: {_first_line(proc.stderr)}")
    return proc.stdout


def _first_line(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", errors="replace").splitlines() if line.strip()]
    return lines[0][:200] if lines else "no message"
