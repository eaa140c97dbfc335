from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from speech.text.bpe import MIN_VOCAB_SIZE, PAD_ID, TextBPE

CORPUS = [
    "the quick brown fox jumps over the lazy dog.",
    "she sells sea shells by the sea shore, then the tide comes in.",
    "there is the thing that they think they threw.",
    "Grüße aus Köln, schöne Äpfel und Bäume.",
    "你好世界，今天天气很好。",
    "こんにちは、せかい。きょうはいいてんきです。",
] * 4


@pytest.fixture(scope="module")
def bpe() -> TextBPE:
    return TextBPE.train(CORPUS, 320)


def test_special_tokens_come_first(bpe: TextBPE) -> None:
    assert (PAD_ID, bpe.pad_id, bpe.bos_id, bpe.eos_id) == (0, 0, 1, 2)


def test_vocab_holds_bytes_specials_and_merges(bpe: TextBPE) -> None:
    assert MIN_VOCAB_SIZE == 259
    assert bpe.vocab_size == len(bpe) == 320


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
def test_decode_inverts_encode(bpe: TextBPE, text: str) -> None:
    ids = bpe.encode(text)
    assert all(isinstance(i, int) and 0 <= i < bpe.vocab_size for i in ids)
    assert bpe.decode(ids) == text


def test_encode_adds_no_special_tokens_and_decode_drops_them(bpe: TextBPE) -> None:
    ids = bpe.encode("the sea")
    assert not {bpe.pad_id, bpe.bos_id, bpe.eos_id} & set(ids)
    assert bpe.decode([bpe.bos_id, *ids, bpe.eos_id, bpe.pad_id]) == "the sea"


def test_merges_compress_english(bpe: TextBPE) -> None:
    text = "the sea shells there"
    assert len(bpe.encode(text)) < len(text.encode("utf-8")) // 2
    # " the" occurs in every English line, so training merged it into one token.
    assert len(bpe.encode(" the")) == 1


def test_untrained_byte_level_has_one_token_per_byte() -> None:
    # min_frequency higher than any pair count: no merges, only bytes.
    plain = TextBPE.train(CORPUS, 320, min_frequency=1000)
    assert plain.vocab_size == MIN_VOCAB_SIZE
    assert len(plain.encode("Köln")) == len("Köln".encode()) == 5


def test_training_is_deterministic(tmp_path: Path, bpe: TextBPE) -> None:
    again = TextBPE.train(iter(CORPUS), 320)
    first = json.loads(bpe.save(tmp_path / "a.json").read_text(encoding="utf-8"))["model"]
    second = json.loads(again.save(tmp_path / "b.json").read_text(encoding="utf-8"))["model"]
    assert first["vocab"] == second["vocab"]
    assert first["merges"] == second["merges"]


def test_save_creates_folders_and_load_round_trips(tmp_path: Path, bpe: TextBPE) -> None:
    path = bpe.save(tmp_path / "deep" / "er" / "bpe.json")
    assert path == tmp_path / "deep" / "er" / "bpe.json" and path.is_file()
    loaded = TextBPE.load(path)
    text = "Grüße, 你好, こんにちは, the sea"
    assert loaded.encode(text) == bpe.encode(text)
    assert (loaded.vocab_size, loaded.bos_id, loaded.eos_id) == (320, 1, 2)


def test_vocab_size_below_the_minimum_is_rejected() -> None:
    with pytest.raises(
        ValueError, match=r"vocab_size must be at least 259 \(256 byte tokens \+ 3 special tokens\), got 258"
    ):
        TextBPE.train(CORPUS, 258)


@pytest.mark.parametrize("texts", [[], ["", ""]])
def test_training_without_text_is_rejected(texts: list[str]) -> None:
    with pytest.raises(ValueError, match=r"no text to train the BPE on"):
        TextBPE.train(texts, 300)


def test_load_missing_file_says_how_to_create_it(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "bpe.json"
    with pytest.raises(
        FileNotFoundError,
        match=rf"{re.escape(str(path))}: text BPE not found; run scripts/prepare_data.py",
    ):
        TextBPE.load(path)


def test_load_corrupt_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "bpe.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: not a valid BPE file"):
        TextBPE.load(path)


def test_load_bpe_without_our_special_tokens_names_it(tmp_path: Path, bpe: TextBPE) -> None:
    path = bpe.save(tmp_path / "bpe.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != "<eos>"]
    del data["model"]["vocab"]["<eos>"]
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(
        ValueError, match=rf"{re.escape(str(path))}: text BPE lacks the special tokens \['<eos>'\]"
    ):
        TextBPE.load(path)


def test_string_round_trip_for_checkpoints(bpe: TextBPE) -> None:
    loaded = TextBPE.from_str(bpe.to_str())
    text = "Grüße, 你好, こんにちは, the sea"
    assert loaded.encode(text) == bpe.encode(text) and loaded.vocab_size == bpe.vocab_size
    with pytest.raises(ValueError, match="not a valid BPE JSON string"):
        TextBPE.from_str("{not json")
