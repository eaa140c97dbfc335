"""The espeak-ng phoneme front-end of the text BPE (``speech.text.phonemes``, ``TextBPE(phonemes=...)``)."""

from __future__ import annotations

import json

import pytest

from speech.text import espeak
from speech.text.bpe import TextBPE
from speech.text.espeak import PhonemizerError
from speech.text.phonemes import PHONEMIZER, bpe_input, check_phonemes, ipa

needs_espeak = pytest.mark.skipif(
    not espeak.available(), reason="needs libespeak-ng (scripts/system_packages.txt)"
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
    monkeypatch.setattr(espeak.ctypes.util, "find_library", lambda name: None)
    monkeypatch.setattr(espeak, "_library", None)
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
def test_a_clause_that_starts_with_a_hyphen_is_read():
    # an espeak-ng process took such a clause for an option and said nothing
    sounds = ipa("- mi venderanno al macellaio.", "it")
    assert sounds.startswith("m") and sounds.endswith(".") and len(sounds) > 20
