"""Runs a repository script (train.py, scripts/*.py, eval/*.py) in the test process, as the command line
``python <script> <overrides...>`` would, so tests exercise the real entry points."""

import runpy
import sys


def run_script(script, *args: str) -> dict:
    """``python script *args`` in this process; returns the script's globals. ``sys.argv`` is restored."""
    saved = sys.argv
    sys.argv = [str(script), *args]
    try:
        return runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = saved
