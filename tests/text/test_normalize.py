from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from speech.text.normalize import base_language, ja_number, normalize_text, zh_number


@pytest.mark.parametrize(
    ("code", "base"),
    [
        ("en", "en"), ("en-us", "en"), ("en-US", "en"), ("en_GB", "en"), ("EN", "en"), ("eng", "en"),
        ("zh", "zh"), ("cmn", "zh"), ("zh-cn", "zh"), ("zh_TW", "zh"), ("ja", "ja"), ("jpn", "ja"),
        ("de", "de"), ("de-AT", "de"), ("es", "es"), ("it", "it"), ("fr-CA", "fr"), ("pt-BR", "pt"),
        ("ko", "ko"),
    ],
)  # fmt: skip
def test_base_language(code: str, base: str) -> None:
    assert base_language(code) == base


@pytest.mark.parametrize("code", ["", "  ", None, 5])
def test_bad_language_is_rejected_with_a_clear_message(code: object) -> None:
    with pytest.raises(ValueError, match=r"language must be a non-empty code such as 'en'"):
        base_language(code)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"language must be a non-empty code"):
        normalize_text("hello", code)  # type: ignore[arg-type]


def test_text_must_be_a_string() -> None:
    with pytest.raises(TypeError, match=r"text must be a str, got bytes"):
        normalize_text(b"hello", "en")  # type: ignore[arg-type]


LANGUAGE_INDEPENDENT = [
    ("Ｈｅｌｌｏ　ｗｏｒｌｄ！", "Hello world!"),
    ("“Hi,” she said, ‘really’", "\"Hi,\" she said, 'really'"),
    ("«Bonjour»", '"Bonjour"'),
    ("wait… what. . . no....", "wait... what... no..."),
    ("a—b – c -- d - e", "a — b — c — d — e"),
    ("a — — b -– c", "a — b — c"),
    ("well‐known, −5", "well-known, -5"),
    ("a\u200bb\x07c\td\n\ne\u00ad", "abc d e"),
    ("  many   spaces \n here  ", "many spaces here"),
    ("Hello , world !", "Hello, world!"),
    ("x <#1.5#> y", "x <#1.5#> y"),
]


@pytest.mark.parametrize(("text", "expected"), LANGUAGE_INDEPENDENT)
def test_language_independent_rules_for_an_unknown_language(text: str, expected: str) -> None:
    assert normalize_text(text, "xx") == expected


def test_unknown_language_keeps_digits_and_ampersand() -> None:
    assert normalize_text("숫자 5 & “따옴표”", "ko") == '숫자 5 & "따옴표"'


ENGLISH = [
    ("Mrs. and Mr. Jones met Dr. Who", "Missus and Mister Jones met Doctor Who"),
    ("Prof. X, Jr. at St. Paul's on Main St.", "Professor X, Junior at Saint Paul's on Main Street"),
    ("e.g. this & that vs. them, approx. 5", "for example this and that versus them, approximately five"),
    ("i.e. apples, etc. and pears", "that is apples, et cetera and pears"),
    ("apples, etc.", "apples, et cetera."),
    ("No. 5 and #2", "number five and number two"),
    ("I have 3 cats and 21 dogs", "I have three cats and twenty-one dogs"),
    ("0 and 100 and 12345", "zero and one hundred and twelve thousand three hundred and forty-five"),
    ("1,000 and 1,000,000", "one thousand and one million"),
    ("1,000, 2,000 and 3", "one thousand, two thousand and three"),
    ("It is 3.5 or 3.05", "It is three point five or three point zero five"),
    ("-5 and (-4) and x=-3", "minus five and (minus four) and x=minus three"),
    ("It rose 2.5% to -0.75.", "It rose two point five percent to minus zero point seven five."),
    ("23% of them", "twenty-three percent of them"),
    ("the 1st, 2nd, 3rd, 4TH and 23rd", "the first, second, third, fourth and twenty-third"),
    ("In 1984 and 1900 and 2024", "In nineteen eighty-four and nineteen hundred and twenty twenty-four"),
    (
        "in 2005, not 1066 or 3000",
        "in two thousand and five, not one thousand and sixty-six or three thousand",
    ),
    ("the 1980s and the '90s", "the nineteen eighties and the nineties"),
    ("$5 and $1 and $0.50", "five dollars and one dollar and fifty cents"),
    ("€2.50 and £3.20", "two euros and fifty cents and three pounds and twenty pence"),
    ("$1.01 and ¥500 and 5$", "one dollar and one cent and five hundred yen and five dollars"),
    ("$5 million and $1.5 billion", "five million dollars and one point five billion dollars"),
    ("-$5", "minus five dollars"),
    ("at 3:30 or 3:05 or 12:00", "at three thirty or three oh five or twelve o'clock"),
    ("at 15:00 or 23:45", "at fifteen hundred or twenty-three forty-five"),
    ("Call at 5pm. Then at 7 AM.", "Call at five p m. Then at seven a m."),
    ("at 5 p.m. Then", "at five p m. Then"),
    ("at 3:30 p.m. and", "at three thirty p m and"),
    ("Call 007", "Call zero zero seven"),
    ("5Mr. Smith", "five Mister Smith"),
    ("5kg (10%)", "five kg (ten percent)"),
    ("COVID-19 and mp3", "COVID-nineteen and mp three"),
    ("ＡＢＣ１２３", "ABC one hundred and twenty-three"),
]


@pytest.mark.parametrize(("text", "expected"), ENGLISH)
def test_english(text: str, expected: str) -> None:
    assert normalize_text(text, "en") == expected


def test_english_region_codes_share_the_rules() -> None:
    assert (
        normalize_text("Version 2.0", "en-US")
        == normalize_text("Version 2.0", "en_GB")
        == "Version two point zero"
    )


NUM2WORDS_LANGUAGES = [
    (
        "de",
        "Es kostet 1.234,5 € & 20%.",
        "Es kostet eintausendzweihundertvierunddreißig Komma fünf Euro und zwanzig Prozent.",
    ),
    ("de", "Am 3. Mai und im 20. Jahrhundert", "Am dritten Mai und im zwanzigsten Jahrhundert"),
    ("de", "der 1. FC", "der erste FC"),
    ("de", "Er ist 30. Dann", "Er ist dreißig. Dann"),
    ("de", "-5 Grad und 3,14", "minus fünf Grad und drei Komma eins vier"),
    (
        "es",
        "el 1º y la 2ª, 15,5% y 1.000 $",
        "el primero y la segunda, quince coma cinco por ciento y mil dólares",
    ),
    ("es", "la 21ª vez & más", "la vigésima primera vez y más"),
    (
        "it",
        "Il 2º giorno costa 3,05 € & 7%.",
        "Il secondo giorno costa tre virgola zero cinque euro e sette per cento.",
    ),
    ("fr", "Le 1er et la 1re, 2e, 3ème", "Le premier et la première, deuxième, troisième"),
    ("fr", "2 000 euros, 12,5 % & 10 €", "deux mille euros, douze virgule cinq pour cent et dix euros"),
    (
        "pt",
        "1ª vez, 2.500,75 € e 1º",
        "primeira vez, dois mil e quinhentos vírgula sete cinco euros e primeiro",
    ),
]


@pytest.mark.parametrize(("language", "text", "expected"), NUM2WORDS_LANGUAGES)
def test_num2words_languages(language: str, text: str, expected: str) -> None:
    assert normalize_text(text, language) == expected


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "零"), (7, "七"), (10, "十"), (15, "十五"), (20, "二十"), (105, "一百零五"), (110, "一百一十"),
        (1000, "一千"), (1001, "一千零一"), (2024, "二千零二十四"), (10000, "一万"), (10010, "一万零一十"),
        (100000, "十万"), (150000, "十五万"), (1010000, "一百零一万"), (10001000, "一千万一千"),
        (99999999, "九千九百九十九万九千九百九十九"),
    ],
)  # fmt: skip
def test_zh_number(n: int, expected: str) -> None:
    assert zh_number(n) == expected


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "ぜろ"), (4, "よん"), (10, "じゅう"), (11, "じゅういち"), (20, "にじゅう"), (100, "ひゃく"),
        (300, "さんびゃく"), (600, "ろっぴゃく"), (800, "はっぴゃく"), (1000, "せん"), (3000, "さんぜん"),
        (6000, "ろくせん"), (8000, "はっせん"), (10000, "いちまん"), (1000000, "ひゃくまん"),
        (10000000, "いっせんまん"),
        (12345678, "せんにひゃくさんじゅうよんまんごせんろっぴゃくななじゅうはち"),
    ],
)  # fmt: skip
def test_ja_number(n: int, expected: str) -> None:
    assert ja_number(n) == expected


@pytest.mark.parametrize("reader", [zh_number, ja_number])
@pytest.mark.parametrize("n", [-1, 100_000_000])
def test_cjk_readers_reject_numbers_out_of_range(reader: Callable[[int], str], n: int) -> None:
    with pytest.raises(ValueError, match=rf"can only read whole numbers from 0 to 99,999,999, got {n:,}"):
        reader(n)


CHINESE = [
    ("今天是2024年5月1日，涨了15%。", "今天是二零二四年五月一日，涨了百分之十五。"),
    ("气温-3.5度", "气温负三点五度"),
    ("我有 105 个 苹果, 下午3:05到10:00...", "我有一百零五个苹果，下午三点零五分到十点……"),
    ("第1名得了$100，第2名得了€50.", "第一名得了一百美元，第二名得了五十欧元。"),
    ("花了¥3.14 。你好 ？", "花了三点一四元。你好？"),
    ("你好?!", "你好？！"),
    ("你好——世界“引号”", '你好—世界"引号"'),
    ("123456789", "一二三四五六七八九"),
    ("Hello, world. 你好.", "Hello, world. 你好。"),
    ("你好<#1#>世界", "你好<#1#>世界"),
]


@pytest.mark.parametrize(("text", "expected"), CHINESE)
def test_chinese(text: str, expected: str) -> None:
    assert normalize_text(text, "zh") == expected
    assert normalize_text(text, "cmn") == expected


JAPANESE = [
    ("300円と600と800", "さんびゃくえんとろっぴゃくとはっぴゃく"),
    ("3:30に1.5と10%です, はい.", "さんじさんじゅっぷんにいちてんごとじゅうパーセントです、はい。"),
    ("4:10と9:01と0:00", "よじじゅっぷんとくじいっぷんとれいじ"),
    ("リンゴが3こ、 みかんが 4こ です .", "リンゴがさんこ、みかんがよんこです。"),
    ("$5と€2", "ごドルとにユーロ"),
    ("こんにちは 世界 !", "こんにちは世界！"),
]


@pytest.mark.parametrize(("text", "expected"), JAPANESE)
def test_japanese_numbers_become_kana(text: str, expected: str) -> None:
    assert normalize_text(text, "ja") == expected


IDEMPOTENCE_CASES = (
    [("xx", text) for text, _ in LANGUAGE_INDEPENDENT]
    + [("en", text) for text, _ in ENGLISH]
    + [(language, text) for language, text, _ in NUM2WORDS_LANGUAGES]
    + [("zh", text) for text, _ in CHINESE]
    + [("ja", text) for text, _ in JAPANESE]
    + [(language, text) for language in ("en", "de", "zh", "ja") for text, _ in LANGUAGE_INDEPENDENT]
    + [
        ("zh", "他说“你好”……然后走了，（真的）！"),
        ("ja", "「こんにちは」……。ＡＢＣ，１２３"),
        ("fr", "Quoi ? « Oui » !"),
    ]
)


@pytest.mark.parametrize(("language", "text"), IDEMPOTENCE_CASES)
def test_normalize_is_idempotent(language: str, text: str) -> None:
    once = normalize_text(text, language)
    assert normalize_text(once, language) == once


def test_normalize_is_idempotent_on_random_mixtures() -> None:
    pieces = list("0123456789.,:-%$£€¥&'\"“”—–…!?;() abXZ年你好こんにちは円。、，？！") + [
        "1st", "3:30", "p.m.", "Mr.", "etc.", "1,000", "1.000", "1 000", "2ª", "1º", "3e", "<#1#>", "\u200b",
        "\n", "½", "－", "５", "1980s", "'90s",
    ]  # fmt: skip
    rng = random.Random(0)
    for _ in range(300):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 25)))
        for language in ("en", "de", "es", "it", "fr", "pt", "zh", "ja", "ko"):
            once = normalize_text(text, language)
            assert normalize_text(once, language) == once, (language, text)
