"""espeak-ng's IPA through libespeak-ng (``speech.text.espeak``)."""

from __future__ import annotations

import multiprocessing
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from speech.text import espeak
from speech.text.espeak import PhonemizerError, espeak_ipa

pytestmark = pytest.mark.skipif(
    not espeak.available(), reason="needs libespeak-ng (scripts/system_packages.txt)"
)
CLAUSES = [("the quick brown fox jumps over the lazy dog", "en-us"), ("guten Morgen meine Freunde", "de"),
           ("buenos días a todos", "es"), ("buongiorno a tutti", "it")]  # fmt: skip


def test_english_is_ipa_on_one_line():
    sounds = espeak_ipa("Mr. Smith went to Washington", "en-us")  # two clauses for espeak-ng: "Mr." ends one
    assert "\n" not in sounds and "  " not in sounds
    assert "θ" in sounds and "ˈ" in sounds and "Smith" not in sounds


def test_a_tie_joins_the_letters_of_one_phoneme():
    assert "a^ɪ" in espeak_ipa("my eyes", "en-us", tie="^")
    assert "^" not in espeak_ipa("my eyes", "en-us")


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs the espeak-ng program")
def test_it_says_what_the_espeak_ng_program_says():
    for words, voice in CLAUSES:
        cmd = ["espeak-ng", "-q", "-b", "1", "--ipa", "-v", voice, words]
        program = subprocess.run(cmd, capture_output=True, check=True).stdout.decode()
        assert espeak_ipa(words, voice) == " ".join(program.split())


def test_threads_each_get_their_own_voice():
    alone = [espeak_ipa(words, voice) for words, voice in CLAUSES]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda clause: espeak_ipa(*clause), CLAUSES * 25))
    assert together == alone * 25


def _child(queue):
    queue.put(espeak_ipa(*CLAUSES[1]))


def test_a_forked_process_starts_its_own_library():
    parent = espeak_ipa(*CLAUSES[1])
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child, args=(queue,))
    child.start()
    assert queue.get(timeout=30) == parent
    child.join(timeout=30)
    assert child.exitcode == 0


def test_an_unknown_voice_is_named():
    with pytest.raises(PhonemizerError, match="no voice 'xx-nowhere'"):
        espeak_ipa("hello", "xx-nowhere")
    assert espeak_ipa("hello", "en-us").startswith("h")  # the library still works after the refusal
