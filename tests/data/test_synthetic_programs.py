"""The synthetic corpus's program runner: stdout back, or one-line EngineErrors."""

import sys

import pytest

from speech.data.synthetic.programs import EngineError, run_program


def test_stdout_comes_back_and_failures_raise_engine_errors_with_the_first_stderr_line():
    assert run_program([sys.executable, "-c", "print('ok')"], "echo", 10) == b"ok\n"
    loud = "import sys; sys.stderr.write('\\n  first line\\nsecond\\n'); sys.exit(3)"
    with pytest.raises(EngineError, match=r"^loud: exit status 3: first line$"):
        run_program([sys.executable, "-c", loud], "loud", 10)
    with pytest.raises(EngineError, match=r"^slow: timed out after 0.5 s$"):
        run_program([sys.executable, "-c", "import time; time.sleep(5)"], "slow", 0.5)
