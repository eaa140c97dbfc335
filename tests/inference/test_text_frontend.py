"""split_text's long-text cuts: segments within max_tokens, cut at sentences, clauses, words, characters."""

import re

import pytest
from tiny_pipeline import make_bpe

from speech.inference.text_frontend import Segment, _Chunk, _pack, encode_text, leading_text, split_text
from speech.text import espeak
from speech.text.bpe import TextBPE
from speech.text.normalize import normalize_text
from speech.text.pauses import Pause
from speech.text.phonemes import PHONEMIZER, ipa

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "In 1990 the old mill by the river closed its doors!",
    "Did anyone in the village notice?",
    "Only the baker, who rose at four, saw the lights go out.",
    "Now the wheel turns again for the tourists; they pay $5 to watch it.",
    "Nobody remembers the miller's name.",
]
PARAGRAPH = " ".join(SENTENCES)
LONG_SENTENCE = (
    "After the long winter the farmers of the valley came down to the market, carrying baskets of apples "
    "and pears, jars of honey from the hills, wheels of cheese wrapped in cloth, and stories of the storm."
)
CHINESE = "今天天气很好。我们去公园散步吧！公园里有很多人在跑步和跳舞。明天我们还想再来一次。"


@pytest.fixture(scope="module")
def bpe() -> TextBPE:
    return make_bpe()


def lengths(parts: list) -> list[int]:
    return [len(p.tokens) for p in parts]


def token_count(text: str, language: str, bpe: TextBPE) -> int:
    return len(encode_text(text, language, bpe).tokens)


@pytest.mark.parametrize("max_tokens", [None, 10_000])
def test_text_that_fits_is_one_segment(bpe: TextBPE, max_tokens: int | None) -> None:
    parts = split_text(PARAGRAPH, "en", bpe, max_tokens=max_tokens)
    assert parts == [encode_text(PARAGRAPH, "en", bpe)]


def test_without_max_tokens_long_pieces_stay_whole(bpe: TextBPE) -> None:
    text = f"{PARAGRAPH} {PARAGRAPH}<#1#>{PARAGRAPH}"
    parts = split_text(text, "en", bpe)
    assert [type(p) for p in parts] == [Segment, Pause, Segment]


def test_paragraph_is_cut_at_sentence_ends_and_sentences_are_packed(bpe: TextBPE) -> None:
    longest = max(token_count(s, "en", bpe) for s in SENTENCES)
    max_tokens = longest + 30
    parts = split_text(PARAGRAPH, "en", bpe, max_tokens=max_tokens)
    assert len(parts) > 1 and all(isinstance(p, Segment) for p in parts)
    assert max(lengths(parts)) <= max_tokens
    # Every cut is at a sentence end, nothing is lost or repeated, and some segment packs two sentences.
    assert all(p.text[-1] in ".!?;" for p in parts)
    assert " ".join(p.text for p in parts) == normalize_text(PARAGRAPH, "en")
    assert len(parts) < len(SENTENCES)


def test_abbreviation_full_stop_is_not_a_sentence_end(bpe: TextBPE) -> None:
    sentence = "Yesterday Dr. Smith and Mr. Jones met at the station."
    max_tokens = token_count(sentence, "en", bpe)
    parts = split_text(f"They talked. {sentence} Then they left.", "en", bpe, max_tokens=max_tokens)
    assert [p.text for p in parts] == ["They talked.", normalize_text(sentence, "en"), "Then they left."]


def test_long_sentence_is_cut_at_commas(bpe: TextBPE) -> None:
    clauses = re.split(r"(?<=,) ", LONG_SENTENCE)
    max_tokens = max(token_count(c, "en", bpe) for c in clauses) + 5
    assert token_count(LONG_SENTENCE, "en", bpe) > max_tokens
    parts = split_text(LONG_SENTENCE, "en", bpe, max_tokens=max_tokens)
    assert len(parts) > 1 and max(lengths(parts)) <= max_tokens
    assert all(p.text.endswith(",") for p in parts[:-1])
    assert " ".join(p.text for p in parts) == normalize_text(LONG_SENTENCE, "en")


def test_long_clause_is_cut_between_words(bpe: TextBPE) -> None:
    words = LONG_SENTENCE.split()
    max_tokens = max(token_count(w, "en", bpe) for w in words) + 4
    parts = split_text(LONG_SENTENCE, "en", bpe, max_tokens=max_tokens)
    assert max(lengths(parts)) <= max_tokens
    assert [w for p in parts for w in p.text.split()] == normalize_text(LONG_SENTENCE, "en").split()
    # Commas still win over word boundaries: each clause ends a segment.
    assert sum(p.text.endswith(",") for p in parts) == LONG_SENTENCE.count(",")


def test_word_longer_than_the_limit_stays_whole(bpe: TextBPE) -> None:
    parts = split_text("Supercalifragilisticexpialidocious is a word.", "en", bpe, max_tokens=8)
    assert parts[0].text == "Supercalifragilisticexpialidocious"
    assert len(parts[0].tokens) > 8
    assert max(lengths(parts[1:])) <= 8


def test_chinese_is_cut_at_full_stops(bpe: TextBPE) -> None:
    sentences = re.findall(r".+?[。！]", CHINESE)
    max_tokens = max(token_count(s, "zh", bpe) for s in sentences)
    parts = split_text(CHINESE, "zh", bpe, max_tokens=max_tokens)
    assert [p.text for p in parts] == sentences
    assert max(lengths(parts)) <= max_tokens


def test_chinese_sentence_is_cut_between_characters(bpe: TextBPE) -> None:
    parts = split_text(CHINESE, "zh", bpe, max_tokens=10)
    assert max(lengths(parts)) <= 10
    assert "".join(p.text for p in parts) == normalize_text(CHINESE, "zh")
    # Full stops stay with the character before them, never start a segment.
    assert not any(p.text[0] in "。！" for p in parts)
    assert "吧！" in [p.text[-2:] for p in parts]


def test_pauses_stay_at_their_markers_and_both_sides_are_cut(bpe: TextBPE) -> None:
    max_tokens = max(token_count(s, "en", bpe) for s in SENTENCES)
    parts = split_text(f"{PARAGRAPH}<#1.5#>{LONG_SENTENCE}", "en", bpe, max_tokens=max_tokens)
    pause = next(i for i, p in enumerate(parts) if isinstance(p, Pause))
    before, after = parts[:pause], parts[pause + 1 :]
    assert parts[pause] == Pause(1.5)
    assert len(before) > 1 and len(after) > 1
    assert all(isinstance(p, Segment) for p in before + after)
    assert max(lengths(before + after)) <= max_tokens
    assert " ".join(p.text for p in before) == normalize_text(PARAGRAPH, "en")
    assert " ".join(p.text for p in after) == normalize_text(LONG_SENTENCE, "en")


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("... Hello there, my friend. ... !!! Goodbye now, my friend. —", "en"),
        ("「你好」。……我们走吧！", "zh"),
    ],
)
def test_punctuation_only_pieces_join_a_neighbour(bpe: TextBPE, text: str, language: str) -> None:
    parts = split_text(text, language, bpe, max_tokens=4)
    assert all(any(ch.isalnum() for ch in p.text) for p in parts)
    joiner = " " if language == "en" else ""
    assert joiner.join(p.text for p in parts) == normalize_text(text, language)


@pytest.mark.parametrize("max_tokens", [0, -3, 2.5, True, "64"])
def test_invalid_max_tokens_is_rejected(bpe: TextBPE, max_tokens) -> None:
    with pytest.raises(ValueError, match=r"max_tokens must be None \(no cutting\) or an int >= 1"):
        split_text("Hello there.", "en", bpe, max_tokens=max_tokens)


@pytest.mark.parametrize(("text", "language"), [(PARAGRAPH, "en"), (CHINESE, "zh"), (LONG_SENTENCE, "en")])
def test_ten_thousand_characters_split_within_the_limit(bpe: TextBPE, text: str, language: str) -> None:
    long_text = (text + ("\n" if language == "en" else "")) * (10_000 // len(text) + 1)
    parts = split_text(long_text[:10_000], language, bpe, max_tokens=120)
    assert len(parts) > 10 and max(lengths(parts)) <= 120


def test_limit_holds_with_a_bpe_that_merges_across_words() -> None:
    merging = TextBPE.train([normalize_text(PARAGRAPH + " " + LONG_SENTENCE, "en")] * 5, 600, min_frequency=1)
    text = f"{PARAGRAPH} {LONG_SENTENCE}"
    for max_tokens in (6, 15, 40):
        parts = split_text(text, "en", merging, max_tokens=max_tokens)
        assert max(lengths(parts)) <= max_tokens
        assert " ".join(p.text for p in parts) == normalize_text(text, "en")


def test_pack_drops_chunks_when_the_joined_text_is_longer_than_their_sum(bpe: TextBPE) -> None:
    # Lengths that understate the real ones: packed by their sum all would fit, encoded together they do not.
    chunks = [_Chunk(f"{word} ", 1, True) for word in ("apple", "berry", "cherry", "damson")]
    segments = _pack(chunks, "en", bpe, max_tokens=12)
    assert max(lengths(segments)) <= 12
    assert " ".join(s.text for s in segments) == "apple berry cherry damson"
    assert len(segments) > 1


def test_leading_text_keeps_whole_words_within_the_share_and_the_tokens(bpe):
    text = "alpha beta gamma delta epsilon zeta eta theta"
    half = leading_text(text, 0.5, "en", bpe, max_tokens=100)
    assert half.text == "alpha beta gamma delta" and len("alpha beta gamma delta") <= 0.5 * len(text)
    few = leading_text(text, 0.5, "en", bpe, max_tokens=len(encode_text("alpha beta", "en", bpe).tokens))
    assert few.text == "alpha beta"
    # At least the first word with something to speak, whatever the share.
    assert leading_text("... alpha beta", 0.0, "en", bpe, max_tokens=0).text == "... alpha"
    assert leading_text(CHINESE, 0.1, "zh", bpe, max_tokens=100).text == normalize_text(CHINESE[:4], "zh")
    with pytest.raises(ValueError, match="has nothing to speak"):
        leading_text("?!", 0.5, "en", bpe, max_tokens=10)


@pytest.mark.skipif(not espeak.available(), reason="needs libespeak-ng (apt-get install espeak-ng)")
def test_a_bpe_that_reads_phonemes_gets_the_ipa_of_each_segment_and_cuts_by_its_length():
    bpe = TextBPE.train(SENTENCES * 3, 300, languages=["en"] * 18, phonemes=PHONEMIZER)
    parts = split_text(PARAGRAPH, "en", bpe, max_tokens=40)
    assert len(parts) > 1 and max(lengths(parts)) <= 40
    for part in parts:
        assert bpe.decode(part.tokens) == ipa(part.text, "en")
