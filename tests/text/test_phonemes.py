"""The espeak-ng phoneme front-end of the text BPE (``speech.text.phonemes``, ``TextBPE(phonemes=...)``)."""

from __future__ import annotations

import json
import shutil

import pytest

from speech.text import phonemes
from speech.text.bpe import TextBPE
from speech.text.phonemes import PHONEMIZER, PhonemizerError, bpe_input, check_phonemes, ipa

needs_espeak = pytest.mark.skipif(
    shutil.which(PHONEMIZER) is None, reason="needs espeak-ng (scripts/system_packages.txt)"
)
TEXTS = ["the cat sat on the mat.", "then the dog, the cat, the bird.", "Guten Morgen, Welt.", "你好世界。"]
LANGUAGES = ["en", "en-US", "de", "zh"]


@needs_espeak
def test_english_becomes_ipa_with_its_clause_punctuation():
    sounds = ipa("the cat, the dog.", "en")
    assert "ð" in sounds and "k" in sounds and "the" not in sounds
    assert sounds.count(",") == 1 and sounds.endswith(".")


@needs_espeak
def test_only_the_converted_languages_change():
    assert bpe_input("the cat", "en-GB", PHONEMIZER) != "the cat"
    assert bpe_input("你好世界", "zh", PHONEMIZER) == "你好世界"  # characters already name syllables
    assert bpe_input("the cat", "en", None) == "the cat"


def test_a_phoneme_bpe_needs_the_language():
    with pytest.raises(ValueError, match="needs the text's language"):
        bpe_input("the cat", None, PHONEMIZER)


def test_unknown_front_ends_are_refused():
    with pytest.raises(ValueError, match="null .* or 'espeak-ng', got 'festival'"):
        check_phonemes("festival")
    with pytest.raises(ValueError, match="espeak-ng"):
        TextBPE.train(TEXTS, 300, languages=LANGUAGES, phonemes="festival")


def test_a_missing_espeak_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(phonemes.shutil, "which", lambda name: None)
    ipa.cache_clear()
    with pytest.raises(PhonemizerError, match="apt-get install espeak-ng"):
        ipa("a sentence nobody phonemized before", "en")


@needs_espeak
def test_a_phoneme_bpe_encodes_ipa_and_keeps_its_setting_through_files_and_checkpoints(tmp_path):
    bpe = TextBPE.train(TEXTS * 3, 300, languages=LANGUAGES * 3, phonemes=PHONEMIZER)
    assert bpe.phonemes == PHONEMIZER
    ids = bpe.encode("the cat sat.", "en")
    assert bpe.decode(ids) == ipa("the cat sat.", "en")
    assert bpe.decode(bpe.encode("你好", "zh")) == "你好"
    for copy in (TextBPE.from_str(bpe.to_str()), TextBPE.load(bpe.save(tmp_path / "bpe.json"))):
        assert copy.phonemes == PHONEMIZER and copy.encode("the cat sat.", "en") == ids
    with pytest.raises(ValueError, match="language"):
        bpe.encode("the cat sat.")


def test_a_spelled_bpe_keeps_the_plain_huggingface_format(tmp_path):
    bpe = TextBPE.train(TEXTS * 3, 300)
    assert bpe.phonemes is None and "model" in json.loads(bpe.to_str())
    assert "model" in json.loads(bpe.save(tmp_path / "bpe.json").read_text())
    assert TextBPE.load(tmp_path / "bpe.json").encode("the cat") == bpe.encode("the cat", "en")


def test_training_needs_a_language_per_text():
    with pytest.raises(ValueError, match="languages"):
        TextBPE.train(TEXTS, 300, phonemes=PHONEMIZER)
    with pytest.raises(ValueError, match="4 texts but 3 languages"):
        TextBPE.train(TEXTS, 300, languages=LANGUAGES[:3], phonemes=PHONEMIZER)


@needs_espeak
def test_warming_converts_ahead_so_encoding_runs_no_espeak(monkeypatch):
    bpe = TextBPE.train(TEXTS * 3, 300, languages=LANGUAGES * 3, phonemes=PHONEMIZER)
    ahead = ["a sentence converted ahead", "another one converted ahead"]
    bpe.warm(ahead, ["en", "en"])

    def no_espeak(*args, **kwargs):
        raise AssertionError("espeak-ng ran for a warmed text")

    monkeypatch.setattr(phonemes, "run_program", no_espeak)
    assert [bpe.decode(bpe.encode(text, "en")) for text in ahead] == [ipa(text, "en") for text in ahead]
    with pytest.raises(AssertionError, match="espeak-ng ran"):
        bpe.encode("a sentence nobody warmed", "en")
