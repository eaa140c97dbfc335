"""speech.programs.run_program: stdout back, or one-line errors of the caller's type."""

import sys

import pytest

from speech.programs import run_program


class Failed(RuntimeError):
    pass


def test_stdout_comes_back_and_failures_raise_the_callers_error_with_the_first_stderr_line():
    assert run_program([sys.executable, "-c", "print('ok')"], "echo", 10, Failed) == b"ok\n"
    loud = "import sys; sys.stderr.write('\\n  first line\\nsecond\\n'); sys.exit(3)"
    with pytest.raises(Failed, match=r"^loud: exit status 3: first line$"):
        run_program([sys.executable, "-c", loud], "loud", 10, Failed)
    with pytest.raises(Failed, match=r"^slow: timed out after 0.5 s$"):
        run_program([sys.executable, "-c", "import time; time.sleep(5)"], "slow", 0.5, Failed)
