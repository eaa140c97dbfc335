"""Text normalization before synthesis and BPE: what a speaker would read aloud, written out.

This is the *front-end* normalizer (numbers become words, abbreviations are expanded, sentence punctuation
is kept because it carries prosody). It is not the WER scoring normalizer, which strips punctuation.

Rules apply in three layers:

1. language-independent: Unicode NFKC (full-width ASCII becomes half-width), straight quotes, one dash and
   one ellipsis, no control characters, collapsed whitespace;
2. per language: numbers to words (English by hand on top of num2words; de/es/it/fr/pt through num2words;
   Chinese numerals and Japanese hiragana readings by the small converters below, because the speech
   synthesizer's Japanese voice reads only kana), English abbreviations, ``&``;
3. layout: no space before ``, . ? ! ; :``; for zh/ja, CJK punctuation and no spaces between CJK characters.

Every rule maps its own output to itself, so ``normalize_text`` is idempotent.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from num2words import num2words

# Codes whose base is not simply the part before the first "-" or "_", or three-letter ISO 639-2/3 codes.
_LANGUAGE_ALIASES = {
    "cmn": "zh", "zho": "zh", "chi": "zh", "jpn": "ja", "eng": "en", "deu": "de", "ger": "de",
    "spa": "es", "ita": "it", "fra": "fr", "fre": "fr", "por": "pt",
}  # fmt: skip
_NUM2WORDS_LANGUAGES = ("en", "de", "es", "it", "fr", "pt")

# Digit strings this long, or with a leading zero ("007"), are read digit by digit.
_MAX_CARDINAL_DIGITS = 15
_MAX_CJK_NUMBER = 99_999_999

_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3000-\u303f\uff01-\uff60"
_CJK_SPACE = re.compile(rf"(?<=[{_CJK}]) (?=[{_CJK}])")

_SINGLE_QUOTES = re.compile("[\u2018\u2019\u201a\u201b\u2032\u2039\u203a]")
_DOUBLE_QUOTES = re.compile("[\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb]")
_HYPHENS = re.compile("[\u2010\u2011\u2212]")
# A dash is a figure/en/em dash, "--" or a hyphen standing alone; a run of them (with the hyphens and
# spaces around) becomes one " — ". A hyphen before a digit is left alone: it is a minus sign.
_DASH = r"(?:[\u2012-\u2015]|-{2,}|(?<!\S)-(?!\S))"
_DASHES = re.compile(rf"\s*(?:-\s*)*{_DASH}(?:\s*(?:[\u2012-\u2015]|-(?!\d)))*\s*")
_ELLIPSIS = re.compile(r"\.(?:\s?\.){2,}")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+(?=[,.?!;:])")
_PAUSE_MARKER = re.compile(r"(<#[^<>#]*#>)")

# A number once thousands separators are gone: digits, an optional decimal part and a minus sign where the
# "-" follows a space, an opening bracket or a CJK character (so "COVID-19" and "1-2" keep their hyphen).
_SIGN = rf"(?<![^\s(\[{{\"'={_CJK}])-"
_NUM = rf"(?:{_SIGN})?\d+(?:\.\d+)?"
_SCALES = "thousand|million|billion|trillion"


# ---------------------------------------------------------------------------------------------- languages
def base_language(code: str) -> str:
    """Maps a language code to its base: ``"en-US"``, ``"en_GB"`` -> ``"en"``; ``"cmn"``, ``"zh-CN"`` -> "zh".

    Raises:
        ValueError: ``code`` is not a non-empty string.
    """
    if not isinstance(code, str) or not code.strip():
        raise ValueError(f"language must be a non-empty code such as 'en', 'zh' or 'ja', got {code!r}")
    base = code.strip().lower().replace("_", "-").split("-")[0]
    return _LANGUAGE_ALIASES.get(base, base)


# ------------------------------------------------------------------------------------ Chinese numerals
def _check_cjk_range(n: int) -> None:
    if not 0 <= n <= _MAX_CJK_NUMBER:
        raise ValueError(f"can only read whole numbers from 0 to {_MAX_CJK_NUMBER:,}, got {n:,}")


_ZH_DIGITS = "零一二三四五六七八九"


def _zh_section(n: int) -> str:
    """0 < n < 10000 in Chinese numerals; one 零 stands for any run of inner zeros (105 -> 一百零五)."""
    out, pending_zero = [], False
    for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        digit = n // value % 10
        if digit == 0:
            pending_zero = bool(out)
            continue
        if pending_zero:
            out.append("零")
            pending_zero = False
        out.append(_ZH_DIGITS[digit] + unit)
    return "".join(out)


def zh_number(n: int) -> str:
    """Reads ``0 <= n <= 99,999,999`` in Chinese numerals: 10 -> 十, 2024 -> 二千零二十四.

    Raises:
        ValueError: ``n`` is out of range (longer digit strings are read digit by digit by the caller).
    """
    _check_cjk_range(n)
    if n == 0:
        return "零"
    high, low = divmod(n, 10_000)
    text = ""
    if high:
        text = _zh_section(high) + "万"
        if low and low < 1000:
            text += "零"
    if low:
        text += _zh_section(low)
    # 10..19 at the head of a number drop the 一: 十五, 十五万.
    return text[1:] if text.startswith("一十") else text


# ------------------------------------------------------------------------------ Japanese readings (kana)
_JA_DIGITS = ["ぜろ", "いち", "に", "さん", "よん", "ご", "ろく", "なな", "はち", "きゅう"]
_JA_HUNDREDS = {1: "ひゃく", 3: "さんびゃく", 6: "ろっぴゃく", 8: "はっぴゃく"}
_JA_THOUSANDS = {1: "せん", 3: "さんぜん", 8: "はっせん"}


def _ja_section(n: int) -> str:
    """0 < n < 10000 in hiragana with the usual sound changes (300 さんびゃく, 8000 はっせん)."""
    thousands, hundreds, tens, ones = n // 1000, n // 100 % 10, n // 10 % 10, n % 10
    out = ""
    if thousands:
        out += _JA_THOUSANDS.get(thousands, _JA_DIGITS[thousands] + "せん")
    if hundreds:
        out += _JA_HUNDREDS.get(hundreds, _JA_DIGITS[hundreds] + "ひゃく")
    if tens:
        out += ("" if tens == 1 else _JA_DIGITS[tens]) + "じゅう"
    if ones:
        out += _JA_DIGITS[ones]
    return out


def ja_number(n: int) -> str:
    """Reads ``0 <= n <= 99,999,999`` in hiragana: 300 -> さんびゃく, 10000 -> いちまん.

    Raises:
        ValueError: ``n`` is out of range (longer digit strings are read digit by digit by the caller).
    """
    _check_cjk_range(n)
    if n == 0:
        return "ぜろ"
    high, low = divmod(n, 10_000)
    text = ""
    if high:
        # 一千万 is read いっせんまん.
        text = ("いっせん" if high == 1000 else _ja_section(high)) + "まん"
    return text + (_ja_section(low) if low else "")


# ------------------------------------------------------------------------------------ number readings
_POINT = {"en": "point", "de": "Komma", "es": "coma", "it": "virgola", "fr": "virgule", "pt": "vírgula",
          "zh": "点", "ja": "てん"}  # fmt: skip
_MINUS = {"en": "minus", "de": "minus", "es": "menos", "it": "meno", "fr": "moins", "pt": "menos",
          "zh": "负", "ja": "まいなす"}  # fmt: skip
_PERCENT = {"en": "{} percent", "de": "{} Prozent", "es": "{} por ciento", "it": "{} per cento",
            "fr": "{} pour cent", "pt": "{} por cento", "zh": "百分之{}", "ja": "{}パーセント"}  # fmt: skip
_AND = {"en": "and", "de": "und", "es": "y", "it": "e", "fr": "et", "pt": "e", "zh": "和", "ja": "と"}
# Currency names for $ £ € ¥ in that order: (singular, plural) for spaced languages, one word for zh/ja.
_CURRENCY_SYMBOLS = "$£€¥"
_CURRENCY_NAMES = {
    "en": [("dollar", "dollars"), ("pound", "pounds"), ("euro", "euros"), ("yen", "yen")],
    "de": [("Dollar", "Dollar"), ("Pfund", "Pfund"), ("Euro", "Euro"), ("Yen", "Yen")],
    "es": [("dólar", "dólares"), ("libra", "libras"), ("euro", "euros"), ("yen", "yenes")],
    "it": [("dollaro", "dollari"), ("sterlina", "sterline"), ("euro", "euro"), ("yen", "yen")],
    "fr": [("dollar", "dollars"), ("livre", "livres"), ("euro", "euros"), ("yen", "yens")],
    "pt": [("dólar", "dólares"), ("libra", "libras"), ("euro", "euros"), ("iene", "ienes")],
    "zh": ["美元", "英镑", "欧元", "元"],
    "ja": ["ドル", "ポンド", "ユーロ", "えん"],
}
_CURRENCY = {lang: dict(zip(_CURRENCY_SYMBOLS, row, strict=True)) for lang, row in _CURRENCY_NAMES.items()}
# English sub-units for "$2.50" -> "two dollars and fifty cents".
_EN_SUBUNIT = {"$": ("cent", "cents"), "€": ("cent", "cents"), "£": ("penny", "pence")}


def _spaced(language: str) -> bool:
    return language not in ("zh", "ja")


def _cardinal(digits: str, language: str) -> str:
    """Reads an unsigned digit string; leading zeros and very long strings are read digit by digit."""
    n = int(digits)
    by_digit = (len(digits) > 1 and digits[0] == "0") or len(digits) > _MAX_CARDINAL_DIGITS
    if language in ("zh", "ja"):
        if by_digit or n > _MAX_CJK_NUMBER:
            return "".join(_ZH_DIGITS[int(d)] if language == "zh" else _JA_DIGITS[int(d)] for d in digits)
        return zh_number(n) if language == "zh" else ja_number(n)
    if by_digit:
        return " ".join(_cardinal(d, language) for d in digits)
    # num2words writes "one million, two hundred": the comma is not a pause.
    return num2words(n, lang=language).replace(",", "")


def _number(text: str, language: str) -> str:
    """Reads a signed decimal such as ``-3.05``: "minus three point zero five"."""
    sign, text = ("-", text[1:]) if text.startswith("-") else ("", text)
    whole, _, fraction = text.partition(".")
    words = [_MINUS[language]] if sign else []
    words.append(_cardinal(whole, language))
    if fraction:
        words.append(_POINT[language])
        words.extend(_cardinal(d, language) for d in fraction)
    return (" " if _spaced(language) else "").join(words)


def _sub(pattern: str, read: Callable[[re.Match], str], text: str, language: str) -> str:
    """``re.sub`` that keeps words apart from letters or digits they were glued to ("5kg" -> "five kg")."""

    def replace(match: re.Match) -> str:
        words = read(match)
        if not _spaced(language):
            return words
        before = match.string[match.start() - 1] if match.start() > 0 else " "
        after = match.string[match.end()] if match.end() < len(match.string) else " "
        return (" " if before.isalnum() else "") + words + (" " if after.isalnum() else "")

    return re.sub(pattern, replace, text)


def _canonical_numbers(text: str, language: str) -> str:
    """Removes thousands separators and makes "." the decimal mark, per the language's convention."""
    if language in ("de", "es", "it", "fr", "pt"):
        if language == "fr":
            text = re.sub(r"(?<![\d.,])\d{1,3}(?: \d{3})+(?!\d)", lambda m: m[0].replace(" ", ""), text)
        text = re.sub(r"(?<![\d.,])\d{1,3}(?:\.\d{3})+(?!\d|\.\d)", lambda m: m[0].replace(".", ""), text)
        return re.sub(r"(?<=\d),(?=\d)", ".", text)
    return re.sub(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?!\d|,\d)", lambda m: m[0].replace(",", ""), text)


def _currency(text: str, language: str) -> str:
    names = _CURRENCY[language]
    symbols = re.escape(_CURRENCY_SYMBOLS)

    def read(amount: str, symbol: str, scale: str | None = None) -> str:
        if language == "en":
            return _en_money(amount, symbol, scale)
        if not _spaced(language):
            return _number(amount, language) + names[symbol]
        singular, plural = names[symbol]
        return f"{_number(amount, language)} {singular if amount == '1' else plural}"

    scale = rf"(?:\s?({_SCALES})\b)?" if language == "en" else "()"
    symbol_first = rf"({_SIGN})?([{symbols}])\s?(\d+(?:\.\d+)?){scale}"
    text = _sub(symbol_first, lambda m: read((m[1] or "") + m[3], m[2], m[4]), text, language)
    return _sub(rf"({_NUM})\s?([{symbols}])", lambda m: read(m[1], m[2]), text, language)


def _percent(text: str, language: str) -> str:
    template = _PERCENT[language]
    return _sub(rf"({_NUM})\s?%", lambda m: template.format(_number(m[1], language)), text, language)


# -------------------------------------------------------------------------------------------- English
_EN_ABBREVIATIONS = [
    (r"\bMrs\.", "Missus"), (r"\bMr\.", "Mister"), (r"\bMs\.", "Miz"), (r"\bDr\.", "Doctor"),
    (r"\bProf\.", "Professor"), (r"\bJr\.", "Junior"), (r"\bSr\.", "Senior"), (r"\bMt\.", "Mount"),
    (r"\bSt\.(?=\s+[A-Z])", "Saint"), (r"\bSt\.", "Street"), (r"\bvs\.?(?=\s)", "versus"),
    (r"\be\.g\.(?=\W|$)", "for example"), (r"\bi\.e\.(?=\W|$)", "that is"),
    (r"\bapprox\.", "approximately"),
]  # fmt: skip


def _en_money(amount: str, symbol: str, scale: str | None) -> str:
    singular, plural = _CURRENCY["en"][symbol]
    sign, amount = ("minus ", amount[1:]) if amount.startswith("-") else ("", amount)
    whole, _, cents = amount.partition(".")
    if scale or (cents and (len(cents) != 2 or symbol not in _EN_SUBUNIT)):
        scale_word = f" {scale}" if scale else ""
        return f"{sign}{_number(amount, 'en')}{scale_word} {plural}"
    parts = []
    if int(whole) or not cents or not int(cents):
        parts.append(f"{_cardinal(whole, 'en')} {singular if whole == '1' else plural}")
    if cents and int(cents):
        sub_singular, sub_plural = _EN_SUBUNIT[symbol]
        parts.append(f"{_cardinal(cents.lstrip('0'), 'en')} {sub_singular if cents == '01' else sub_plural}")
    return sign + " and ".join(parts)


def _en_time(match: re.Match) -> str:
    hour, minute, meridiem = int(match[1]), match[2], match[3]
    words = num2words(hour)
    if minute and minute != "00":
        words += " oh " + num2words(int(minute)) if minute[0] == "0" else " " + num2words(int(minute))
    elif minute and not meridiem:
        words += " o'clock" if 1 <= hour <= 12 else " hundred"
    if meridiem:
        words += f" {meridiem[0].lower()} m"
        # "p.m." swallowed a full stop; keep it where it also ends the sentence.
        rest = match.string[match.end() :]
        if match[0].endswith(".") and (not rest.strip() or re.match(r"\s+[A-Z]", rest)):
            words += "."
    return words


def _en_year_or_cardinal(digits: str) -> str:
    """Four-digit numbers 1100..2099 are read as years ("nineteen eighty-four"); others as cardinals."""
    if len(digits) == 4 and digits[0] != "0" and 1100 <= int(digits) <= 2099:
        return num2words(int(digits), to="year")
    return _cardinal(digits, "en")


def _en_number(match: re.Match) -> str:
    number = match[0]
    return _number(number, "en") if "." in number or "-" in number else _en_year_or_cardinal(number)


def _plural(words: str) -> str:
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


def _english(text: str) -> str:
    text = re.sub(r"\bNo\.(?=\s*\d)", "number", text)
    text = re.sub(r"#(?=\d)", "number ", text)
    text = _english_numbers(text)
    # After the numbers, which may have put spaces before an abbreviation ("5Mr." -> "five Mr.").
    for pattern, expansion in _EN_ABBREVIATIONS:
        text = re.sub(pattern, expansion, text)
    text = re.sub(r"\betc\.(?=(\s*$)|\s+[A-Z])", "et cetera.", text)
    return re.sub(r"\betc\.", "et cetera", text)


def _english_numbers(text: str) -> str:
    text = _canonical_numbers(text, "en")
    text = _currency(text, "en")
    meridiem = r"(?:\s?([aApP])(?:\.[mM]\.|[mM]\b))"
    text = _sub(rf"\b([01]?\d|2[0-3]):([0-5]\d)(?!:?\d){meridiem}?", _en_time, text, "en")
    text = _sub(rf"\b(1[0-2]|[1-9])(){meridiem}", _en_time, text, "en")
    text = _percent(text, "en")
    text = _sub(r"\b(\d+)(?i:st|nd|rd|th)\b", lambda m: num2words(int(m[1]), to="ordinal"), text, "en")
    text = _sub(r"(?:'|\b)(\d{3}0|[1-9]0)s\b", lambda m: _plural(_en_year_or_cardinal(m[1])), text, "en")
    return _sub(_NUM, _en_number, text, "en")


# ------------------------------------------------------------------------------- de / es / it / fr / pt
def _feminine(words: str) -> str:
    return " ".join(w[:-1] + "a" if w.endswith("o") else w for w in words.split())


_DE_MONTHS = {"januar", "februar", "märz", "april", "mai", "juni", "juli", "august", "september", "oktober",
              "november", "dezember"}  # fmt: skip
_DE_ARTICLES_N = {"am", "im", "vom", "zum", "zur", "beim", "dem", "den", "des", "einem", "einen", "einer"}
_DE_ARTICLES = {"der", "die", "das", "ein", "eine", "jeder", "jede", "jedes"}


def _german_ordinal(match: re.Match) -> str:
    """Reads "am 3. Mai" as "am dritten Mai"; "Er ist 30. Dann" keeps its cardinal and full stop.

    A number with a full stop is an ordinal after an article or before a month or a lower-case word;
    the article decides the ending, as far as a cheap rule can.
    """
    before = re.search(r"(\w+)\s+$", match.string[: match.start()])
    after = re.match(r"\s+(\w+)", match.string[match.end() :])
    previous = before[1].lower() if before else ""
    following = after[1] if after else ""
    if previous in _DE_ARTICLES_N | _DE_ARTICLES or following.lower() in _DE_MONTHS or following.islower():
        return num2words(int(match[1]), lang="de", to="ordinal") + ("n" if previous in _DE_ARTICLES_N else "")
    return _cardinal(match[1], "de") + "."


def _ordinals(text: str, language: str) -> str:
    def ordinal(n: str) -> str:
        return num2words(int(n), lang=language, to="ordinal")

    if language == "de":
        return _sub(r"(?<![\d.,])(\d{1,3})\.(?=\s+\w)", _german_ordinal, text, language)
    if language == "fr":
        feminine = r"\b(\d+)(?:re|ère)\b"
        text = _sub(feminine, lambda m: "première" if m[1] == "1" else ordinal(m[1]), text, language)
        return _sub(r"\b(\d+)(?:er|e|ème|eme)\b", lambda m: ordinal(m[1]), text, language)
    # es/it/pt: "1º"/"1ª" (NFKC has made them "1o"/"1a"), also written "1.º".
    text = _sub(r"\b(\d+)\.?o\b", lambda m: ordinal(m[1]), text, language)
    return _sub(r"\b(\d+)\.?a\b", lambda m: _feminine(ordinal(m[1])), text, language)


def _num2words_language(text: str, language: str) -> str:
    text = _canonical_numbers(text, language)
    text = _currency(text, language)
    text = _percent(text, language)
    text = _ordinals(text, language)
    return _sub(_NUM, lambda m: _number(m[0], language), text, language)


# ----------------------------------------------------------------------------------- Chinese, Japanese
_JA_HOURS = {4: "よじ", 7: "しちじ", 9: "くじ", 0: "れいじ"}
# The minute counter changes with the last digit: いっぷん, にふん, さんぷん, ..., じゅっぷん.
_JA_MINUTE_ENDINGS = ["じゅっぷん", "いっぷん", "にふん", "さんぷん", "よんぷん", "ごふん", "ろっぷん",
                      "ななふん", "はっぷん", "きゅうふん"]  # fmt: skip


def _ja_minutes(minute: int) -> str:
    tens, ones = divmod(minute, 10)
    if ones:
        return (ja_number(tens * 10) if tens else "") + _JA_MINUTE_ENDINGS[ones]
    return ("" if tens == 1 else _JA_DIGITS[tens]) + _JA_MINUTE_ENDINGS[0]


def _cjk_time(match: re.Match, language: str) -> str:
    hour, minute = int(match[1]), int(match[2])
    if language == "zh":
        minutes = "" if minute == 0 else ("零" if minute < 10 else "") + zh_number(minute) + "分"
        return zh_number(hour) + "点" + minutes
    hours = _JA_HOURS.get(hour, ja_number(hour) + "じ")
    return hours + (_ja_minutes(minute) if minute else "")


def _cjk_numbers(text: str, language: str) -> str:
    text = _canonical_numbers(text, language)
    if language == "ja":
        text = re.sub(r"(\d)\s?円", r"\1¥", text)
    text = _currency(text, language)
    text = _percent(text, language)
    text = re.sub(r"(?<!\d)([01]?\d|2[0-3]):([0-5]\d)(?!:?\d)", lambda m: _cjk_time(m, language), text)
    if language == "zh":
        # Years are read digit by digit: 2024年 -> 二零二四年.
        text = re.sub(r"(\d{4})(?=年)", lambda m: "".join(_ZH_DIGITS[int(d)] for d in m[1]), text)
    return re.sub(_NUM, lambda m: _number(m[0], language), text)


def _cjk_punctuation(text: str, language: str) -> str:
    text = _ELLIPSIS.sub("……", text)
    full_width = str.maketrans(",.?!:;", ("、" if language == "ja" else "，") + "。？！：；")
    text = re.sub(rf"(?<=[{_CJK}])[,.?!:;]+", lambda m: m[0].translate(full_width), text)
    text = re.sub(r"\s*—\s*", "—", text)
    return _CJK_SPACE.sub("", text)


# ------------------------------------------------------------------------------------------ the pipeline
def _language_independent(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).replace("\u2044", "/")
    # Line breaks and tabs are whitespace; every other control or format character goes.
    text = "".join(
        " " if ch.isspace() else ch for ch in text if ch.isspace() or unicodedata.category(ch)[0] != "C"
    )
    text = _SINGLE_QUOTES.sub("'", text)
    text = _DOUBLE_QUOTES.sub('"', text)
    text = _HYPHENS.sub("-", text)
    text = _DASHES.sub(" — ", text)
    text = _ELLIPSIS.sub("...", text)
    return " ".join(text.split())


def _normalize_piece(text: str, lang: str) -> str:
    text = _language_independent(text)
    if lang in _AND:
        text = re.sub(r"\s*&\s*", f" {_AND[lang]} ", text)
    if lang == "en":
        text = _english(text)
    elif lang in _NUM2WORDS_LANGUAGES:
        text = _num2words_language(text, lang)
    elif lang in ("zh", "ja"):
        text = _cjk_numbers(text, lang)
    # Again: inserted words can leave a lone "-" or a doubled space behind.
    text = _SPACE_BEFORE_PUNCT.sub("", _language_independent(text))
    if lang in ("zh", "ja"):
        text = _cjk_punctuation(text, lang)
    return text


def normalize_text(text: str, language: str) -> str:
    """Normalizes ``text`` in ``language`` for synthesis and tokenization.

    Examples: ``"Dr. Smith paid $5 in 1984."`` (en) -> ``"Doctor Smith paid five dollars in nineteen
    eighty-four."``; ``"2024年有10%"`` (zh) -> ``"二零二四年有百分之十"``;
    ``"300円"`` (ja) -> ``"さんびゃくえん"``.

    Args:
        text: Raw text, any script.
        language: A language code such as ``"en"``, ``"en-US"``, ``"cmn"``, ``"zh-CN"``, ``"ja"``, ``"de"``.
            Languages without rules here get only the language-independent ones.

    Returns:
        The normalized text; ``normalize_text(normalize_text(x, l), l) == normalize_text(x, l)``. Pause
        markers ``<#x#>`` are kept as they are.

    Raises:
        ValueError: ``language`` is empty or not a string.
        TypeError: ``text`` is not a string.
    """
    lang = base_language(language)
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    # Pause markers (<#1.5#>, validated in speech.text.pauses) pass through untouched.
    parts = _PAUSE_MARKER.split(text)
    pieces = [part if i % 2 else _normalize_piece(part, lang) for i, part in enumerate(parts)]
    return (" " if _spaced(lang) else "").join(piece for piece in pieces if piece)
