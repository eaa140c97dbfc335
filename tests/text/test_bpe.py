from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from speech.text.bpe import MIN_VOCAB_SIZE, PAD_ID, TextTokenizer

CORPUS = [
    "the quick brown fox jumps over the lazy dog.",
    "she sells sea shells by the sea shore, then the tide comes in.",
    "there is the thing that they think they threw.",
    "Grüße aus Köln, schöne Äpfel und Bäume.",
    "你好世界，今天天气很好。",
    "こんにちは、せかい。きょうはいいてんきです。",
] * 4


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return TextTokenizer.train(CORPUS, 320)


def test_special_tokens_come_first(tokenizer: TextTokenizer) -> None:
    assert (PAD_ID, tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 0, 1, 2)


def test_vocab_holds_bytes_specials_and_merges(tokenizer: TextTokenizer) -> None:
    assert MIN_VOCAB_SIZE == 259
    assert tokenizer.vocab_size == len(tokenizer) == 320


@pytest.mark.parametrize(
    "text",
    [
        "the quick brown fox",
        "Grüße  aus\tKöln\n",
        "Straße, Übermut, öde",
        "你好世界，今天天气很好。",
        "こんにちは、せかい。カタカナ",
        "unseen words: Zyxwv 🎉 and ünïcödé",
        " leading and trailing spaces ",
    ],
)
def test_decode_inverts_encode(tokenizer: TextTokenizer, text: str) -> None:
    ids = tokenizer.encode(text)
    assert all(isinstance(i, int) and 0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.decode(ids) == text


def test_encode_adds_no_special_tokens_and_decode_drops_them(tokenizer: TextTokenizer) -> None:
    ids = tokenizer.encode("the sea")
    assert not {tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id} & set(ids)
    assert tokenizer.decode([tokenizer.bos_id, *ids, tokenizer.eos_id, tokenizer.pad_id]) == "the sea"


def test_merges_compress_english(tokenizer: TextTokenizer) -> None:
    text = "the sea shells there"
    assert len(tokenizer.encode(text)) < len(text.encode("utf-8")) // 2
    # " the" occurs in every English line, so training merged it into one token.
    assert len(tokenizer.encode(" the")) == 1


def test_untrained_byte_level_has_one_token_per_byte() -> None:
    # min_frequency higher than any pair count: no merges, only bytes.
    plain = TextTokenizer.train(CORPUS, 320, min_frequency=1000)
    assert plain.vocab_size == MIN_VOCAB_SIZE
    assert len(plain.encode("Köln")) == len("Köln".encode()) == 5


def test_training_is_deterministic(tmp_path: Path, tokenizer: TextTokenizer) -> None:
    again = TextTokenizer.train(iter(CORPUS), 320)
    first = json.loads(tokenizer.save(tmp_path / "a.json").read_text(encoding="utf-8"))["model"]
    second = json.loads(again.save(tmp_path / "b.json").read_text(encoding="utf-8"))["model"]
    assert first["vocab"] == second["vocab"]
    assert first["merges"] == second["merges"]


def test_save_creates_folders_and_load_round_trips(tmp_path: Path, tokenizer: TextTokenizer) -> None:
    path = tokenizer.save(tmp_path / "deep" / "er" / "tokenizer.json")
    assert path == tmp_path / "deep" / "er" / "tokenizer.json" and path.is_file()
    loaded = TextTokenizer.load(path)
    text = "Grüße, 你好, こんにちは, the sea"
    assert loaded.encode(text) == tokenizer.encode(text)
    assert (loaded.vocab_size, loaded.bos_id, loaded.eos_id) == (320, 1, 2)


def test_vocab_size_below_the_minimum_is_rejected() -> None:
    with pytest.raises(
        ValueError, match=r"vocab_size must be at least 259 \(256 byte tokens \+ 3 special tokens\), got 258"
    ):
        TextTokenizer.train(CORPUS, 258)


@pytest.mark.parametrize("texts", [[], ["", ""]])
def test_training_without_text_is_rejected(texts: list[str]) -> None:
    with pytest.raises(ValueError, match=r"no text to train the tokenizer on"):
        TextTokenizer.train(texts, 300)


def test_load_missing_file_says_how_to_create_it(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "tokenizer.json"
    with pytest.raises(
        FileNotFoundError,
        match=rf"{re.escape(str(path))}: text tokenizer not found; run scripts/prepare_data.py",
    ):
        TextTokenizer.load(path)


def test_load_corrupt_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: not a valid tokenizer file"):
        TextTokenizer.load(path)


def test_load_tokenizer_without_our_special_tokens_names_it(tmp_path: Path, tokenizer: TextTokenizer) -> None:
    path = tokenizer.save(tmp_path / "tokenizer.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != "<eos>"]
    del data["model"]["vocab"]["<eos>"]
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(
        ValueError, match=rf"{re.escape(str(path))}: tokenizer lacks the special tokens \['<eos>'\]"
    ):
        TextTokenizer.load(path)


def test_string_round_trip_for_checkpoints(tokenizer: TextTokenizer) -> None:
    loaded = TextTokenizer.from_str(tokenizer.to_str())
    text = "Grüße, 你好, こんにちは, the sea"
    assert loaded.encode(text) == tokenizer.encode(text) and loaded.vocab_size == tokenizer.vocab_size
    with pytest.raises(ValueError, match="not a valid tokenizer JSON string"):
        TextTokenizer.from_str("{not json")
