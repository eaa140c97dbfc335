from __future__ import annotations

import re

import pytest

from speech.text.pauses import Pause, PauseMarkerError, TextSegment, parse_pauses

ALLOWED = re.escape("x between 0.01 and 99.99 seconds with at most two decimals")


def test_markers_split_text_into_segments_and_pauses() -> None:
    assert parse_pauses("Hi <#1#> there <#2.25#> 你好") == [
        TextSegment("Hi"),
        Pause(1.0),
        TextSegment("there"),
        Pause(2.25),
        TextSegment("你好"),
    ]


def test_markers_need_no_spaces_around_them() -> None:
    assert parse_pauses("Hi<#0.5#>there") == [TextSegment("Hi"), Pause(0.5), TextSegment("there")]


@pytest.mark.parametrize(("marker", "seconds"), [("0.01", 0.01), ("99.99", 99.99), ("5", 5.0), ("07.5", 7.5)])
def test_range_limits_are_accepted(marker: str, seconds: float) -> None:
    assert parse_pauses(f"a <#{marker}#> b")[1] == Pause(seconds)


def test_text_without_markers_is_one_stripped_segment() -> None:
    assert parse_pauses("  no markers here. ") == [TextSegment("no markers here.")]


def test_kana_and_digits_count_as_speakable() -> None:
    assert parse_pauses("ー<#1#>5") == [TextSegment("ー"), Pause(1.0), TextSegment("5")]


@pytest.mark.parametrize("text", ["", "   \n"])
def test_empty_text_is_rejected(text: str) -> None:
    with pytest.raises(ValueError, match=r"text is empty: nothing to speak"):
        parse_pauses(text)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a <#abc#> b", r"pause marker '<#abc#>' at character 2 does not hold a number of seconds"),
        ("a <##> b", r"pause marker '<##>' at character 2 does not hold a number of seconds"),
        ("a <#.5#> b", r"pause marker '<#\.5#>' at character 2 does not hold a number of seconds"),
        ("a <#1.#> b", r"pause marker '<#1\.#>' at character 2 does not hold a number of seconds"),
        ("a <#1.234#> b", r"pause marker '<#1\.234#>' at character 2 has more than two decimals"),
        ("a <#0#> b", r"pause marker '<#0#>' at character 2 is out of range"),
        ("a <#0.00#> b", r"pause marker '<#0\.00#>' at character 2 is out of range"),
        ("ab <#100#> b", r"pause marker '<#100#>' at character 3 is out of range"),
        ("a <# 1 #> b", r"pause marker '<# 1 #>' at character 2 has spaces inside"),
        ("a <#-1#> b", r"pause marker '<#-1#>' at character 2 has a sign"),
        ("a <#+1#> b", r"pause marker '<#\+1#>' at character 2 has a sign"),
        ("a <#1.5 b", r"unclosed pause marker '<#1\.5' at character 2"),
        ("a <#1.5<#2#> b", r"unclosed pause marker '<#1\.5' at character 2"),
        ("a <#1#> b <# c", r"unclosed pause marker '<#' at character 10"),
        ("a #> b", r"stray '#>' at character 2 without an opening '<#'"),
        (
            "a <#1#><#2#> b",
            r"two pause markers in a row, '<#1#>' at character 2 and '<#2#>' at character 7, "
            r"with nothing to speak between them",
        ),
        (
            "a <#1#> , <#2#> b",
            r"two pause markers in a row, '<#1#>' at character 2 and '<#2#>' at character 10",
        ),
        ("<#1#> a", r"pause marker '<#1#>' at character 0 starts the text"),
        ("  <#1#> a", r"pause marker '<#1#>' at character 2 starts the text"),
        ("a <#1#>", r"pause marker '<#1#>' at character 2 ends the text"),
        ("... <#1#> a", r"pause marker '<#1#>' at character 4 follows '\.\.\.', which has nothing to speak"),
        (
            "a <#1#> !!",
            r"pause marker '<#1#>' at character 2 is followed by '!!', which has nothing to speak",
        ),
    ],
)
def test_malformed_or_misplaced_markers_are_explained(text: str, problem: str) -> None:
    with pytest.raises(PauseMarkerError, match=rf"^{problem}.*; a pause marker is <#x#> with {ALLOWED}"):
        parse_pauses(text)


def test_marker_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match=ALLOWED):
        parse_pauses("a <#0#> b")
