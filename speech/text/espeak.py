"""espeak-ng's IPA through its C library (``libespeak-ng``, installed with the ``espeak-ng`` package).

One clause takes about 0.05 ms in the library against about 12 ms for an ``espeak-ng --ipa`` process (the
process loads its voice data each time), so the phoneme front-end can convert transcripts on the fly in
DataLoader workers, whatever the corpus's size. The library keeps one voice at a time and is not
thread-safe: calls take a lock, and a forked process (a DataLoader worker) initializes its own copy.

Calls ``espeak_TextToPhonemes`` (espeak-ng >= 1.49), which returns one clause per call; the clauses of
one call are joined by spaces and espeak-ng's language-switch marks such as ``(en)`` dropped.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import threading

LIBRARY = "espeak-ng"
_SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT: synthesize nothing unless asked, no audio device
_DONT_EXIT = 0x8000  # espeakINITIALIZE_DONT_EXIT: report errors instead of exiting the process
_UTF8 = 1  # espeakCHARS_UTF8
_IPA = 0x02  # phonememode bit 1: IPA instead of espeak-ng's ASCII phoneme names
_TIE = 0x80  # phonememode bit 7: bits 8-23 hold a character that joins the letters of one phoneme
_LANGUAGE_FLAG = re.compile(r"\([a-z]{2,3}(?:-[a-z0-9]+)*\)")
_SPACES = re.compile(r"\s+")


class PhonemizerError(RuntimeError):
    """libespeak-ng is missing, failed to start or has no such voice."""


def available() -> bool:
    """Whether libespeak-ng can be found (tests skip without it)."""
    return ctypes.util.find_library(LIBRARY) is not None


class _Library:
    """The loaded library of one process and the voice it holds."""

    def __init__(self) -> None:
        path = ctypes.util.find_library(LIBRARY)
        if path is None:
            raise PhonemizerError(
                f"lib{LIBRARY} not found: the phoneme front-end needs it (apt-get install espeak-ng; "
                "scripts/system_packages.txt lists what the project needs)"
            )
        lib = ctypes.cdll.LoadLibrary(path)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        if lib.espeak_Initialize(_SYNCHRONOUS, 0, None, _DONT_EXIT) <= 0:
            raise PhonemizerError(f"lib{LIBRARY} ({path}) did not start: is its espeak-ng-data installed?")
        self.lib, self.voice, self.pid = lib, None, os.getpid()

    def ipa(self, words: str, voice: str, tie: str | None) -> str:
        if voice != self.voice:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise PhonemizerError(f"lib{LIBRARY} has no voice {voice!r} (espeak-ng --voices lists them)")
            self.voice = voice
        mode = _IPA | ((_TIE | ord(tie) << 8) if tie else 0)
        text = ctypes.c_char_p(words.encode("utf-8"))
        clauses = []
        while text.value:  # the library moves the pointer past each clause it converts, NULL at the end
            clause = self.lib.espeak_TextToPhonemes(ctypes.byref(text), _UTF8, mode)
            clauses.append(clause.decode("utf-8", errors="replace") if clause else "")
        return _SPACES.sub(" ", _LANGUAGE_FLAG.sub("", " ".join(clauses))).strip()


_lock = threading.Lock()
_library: _Library | None = None


def espeak_ipa(words: str, voice: str, tie: str | None = None) -> str:
    """espeak-ng's IPA of ``words`` in the espeak-ng ``voice`` (e.g. ``"en-us"``), on one line, without
    language-switch marks; ``tie`` (one character, e.g. ``"^"``) joins the letters of a multi-letter
    phoneme.

    Raises:
        PhonemizerError: libespeak-ng is missing or failed to start, or ``voice`` is unknown.
    """
    global _library
    with _lock:
        if _library is None or _library.pid != os.getpid():
            _library = _Library()
        return _library.ipa(words, voice, tie)
