"""The Seed-TTS-eval WER normalizer: punctuation, apostrophes, case, and per-character zh/ja."""

import string

import pytest

from speech.text.wer_norm import REMOVED_PUNCTUATION, ZHON_HANZI_PUNCTUATION, normalize_for_wer


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Hello, World!", "hello world"),
        ("Don't stop; it's fine.", "don't stop it's fine"),
        ("Don’t stop", "dont stop"),  # U+2019 is in the zhon set: deleted, as in the protocol
        ('well-known (really) "quoted"', "wellknown really quoted"),
        ("He paid $1,250.50 in 2024", "he paid 125050 in 2024"),  # numbers are not spelled out
        ("  spaced\tout \n text  ", "spaced out text"),
        (
            "Ｈｅｌｌｏ，ｗｏｒｌｄ！",
            "ｈｅｌｌｏｗｏｒｌｄ",
        ),  # full-width punctuation goes, full-width letters stay
        ("...", ""),
    ],
)
def test_english(text, expected):
    assert normalize_for_wer(text, "en") == expected
    assert normalize_for_wer(text, "en-US") == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("你好，世界！", "你 好 世 界"),
        ("「他说：“好的。”」", "他 说 好 的"),
        ("今天是2024年", "今 天 是 2 0 2 4 年"),
        ("我用 GPU 训练", "我 用 G P U 训 练"),  # English inside zh: letters, case kept
        ("《红楼梦》…… 第一回", "红 楼 梦 第 一 回"),
    ],
)
def test_chinese_is_per_character(text, expected):
    assert normalize_for_wer(text, "zh") == expected
    assert normalize_for_wer(text, "cmn") == expected


def test_japanese_is_per_character_like_chinese():
    assert normalize_for_wer("こんにちは、世界。", "ja") == "こ ん に ち は 世 界"
    assert normalize_for_wer("ＡＩです！", "ja") == "Ａ Ｉ で す"


def test_other_languages_are_scored_like_english():
    assert normalize_for_wer("Guten Tag, Welt!", "de") == "guten tag welt"


def test_punctuation_set_matches_the_protocol():
    assert "'" not in REMOVED_PUNCTUATION
    assert set(string.punctuation) - {"'"} <= set(REMOVED_PUNCTUATION)
    assert set("，。！？、；：「」『』（）《》【】…—·～") <= set(ZHON_HANZI_PUNCTUATION)
    assert len(set(ZHON_HANZI_PUNCTUATION)) == len(ZHON_HANZI_PUNCTUATION) == 82


def test_idempotent():
    for text, lang in [("Don't, stop!  Now.", "en"), ("你好，GPU！", "zh")]:
        once = normalize_for_wer(text, lang)
        assert normalize_for_wer(once, lang) == once
