"""The speech synthesizers in Debian, called through their command-line programs.

- espeak-ng: ``espeak-ng -v <language voice>+<variant> -w out.wav`` (22.05 kHz). Note ``-q`` suppresses
  the wav file too, so it is not used; ``-w`` alone never plays audio.
- flite: ``flite -voice <voice> -f text.txt -o out.wav`` (16 kHz; kal16, awb, rms, slt are built in).
- festival: ``text2wave -eval (voice_<name>) text.txt -o out.wav`` (16 kHz diphones, 32 kHz HTS); the
  text file is written in ISO-8859-1, which is what festival's Italian voices expect.
- kokoro: Kokoro-82M in-process (``kokoro.py``, the optional ``natural`` extra), on phonemes from
  ``espeak-ng --ipa`` (24 kHz).

Every call returns mono float32 audio and its sample rate, or raises ``EngineError`` with a one-line reason
(the caller skips that sentence). A missing program raises ``EngineNotFoundError`` naming the Debian package
to install (both in ``programs.py``, with the programs' packages).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from speech.data.synthetic import kokoro as kokoro_engine
from speech.data.synthetic.kokoro import KokoroVoice
from speech.data.synthetic.programs import ESPEAK_LANGUAGES, PROGRAMS, EngineError, require, run_program


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
        run_program(cmd, engine)
        return _read(out, engine)


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
