"""Pause markers ``<#x#>`` (Speech-02 API): "Hello<#1.5#>world" speaks "Hello", waits 1.5 s, speaks "world".

``x`` is a number of seconds between 0.01 and 99.99 with at most two decimals. A marker sits between two
pieces of speakable text: not at the start or the end, not next to another marker, not next to text with
nothing to speak (a segment needs at least one letter, digit, CJK character or kana).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MIN_PAUSE_SECONDS = 0.01
MAX_PAUSE_SECONDS = 99.99
_ALLOWED = (
    "a pause marker is <#x#> with x between 0.01 and 99.99 seconds with at most two decimals "
    "(for example <#0.5#> or <#2#>), placed between two pieces of speakable text"
)
_FRAGMENT = re.compile(r"<#|#>")
_SECONDS = re.compile(r"\d+(?:\.\d+)?")
# At most this much of an unclosed marker is quoted in the error message.
_QUOTE_CHARS = 20


@dataclass(frozen=True)
class TextSegment:
    """Text to speak, stripped of surrounding whitespace."""

    text: str


@dataclass(frozen=True)
class Pause:
    """Silence of ``seconds`` between two text segments."""

    seconds: float


@dataclass(frozen=True)
class _Marker:
    start: int
    end: int
    seconds: float

    def quote(self, text: str) -> str:
        return _quote(text, self.start, self.end)


def _quote(text: str, start: int, end: int) -> str:
    return f"'{text[start:end]}' at character {start}"


class PauseMarkerError(ValueError):
    """A malformed or misplaced ``<#x#>`` marker; the message quotes it and gives its character position."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"{problem}; {_ALLOWED}")


def _seconds(value: str, where: str) -> float:
    """Validates the ``x`` of one marker (``where`` quotes it for the message)."""
    if any(ch.isspace() for ch in value):
        raise PauseMarkerError(f"pause marker {where} has spaces inside")
    if value.startswith(("+", "-")):
        raise PauseMarkerError(f"pause marker {where} has a sign")
    if not _SECONDS.fullmatch(value):
        raise PauseMarkerError(f"pause marker {where} does not hold a number of seconds")
    if len(value.partition(".")[2]) > 2:
        raise PauseMarkerError(f"pause marker {where} has more than two decimals")
    seconds = float(value)
    if not MIN_PAUSE_SECONDS <= seconds <= MAX_PAUSE_SECONDS:
        raise PauseMarkerError(f"pause marker {where} is out of range")
    return seconds


def _markers(text: str) -> list[_Marker]:
    """Finds every ``<#...#>`` in order; stray ``#>`` and unclosed ``<#`` are errors."""
    markers, fragments = [], _FRAGMENT.finditer(text)
    for opening in fragments:
        if opening[0] == "#>":
            raise PauseMarkerError(f"stray '#>' at character {opening.start()} without an opening '<#'")
        closing = next(fragments, None)
        if closing is None or closing[0] == "<#":
            stop = closing.start() if closing else len(text)
            fragment = text[opening.start() : stop].split(maxsplit=1)[0][:_QUOTE_CHARS]
            raise PauseMarkerError(f"unclosed pause marker '{fragment}' at character {opening.start()}")
        where = _quote(text, opening.start(), closing.end())
        seconds = _seconds(text[opening.end() : closing.start()], where)
        markers.append(_Marker(opening.start(), closing.end(), seconds))
    return markers


def speakable(text: str) -> bool:
    """Whether ``text`` has anything to say: a letter of any script, a digit, a CJK ideograph or kana."""
    return any(ch.isalnum() for ch in text)


def _check_neighbours(text: str, markers: list[_Marker]) -> None:
    """Each marker needs speakable text on both sides."""
    for k, marker in enumerate(markers):
        previous = markers[k - 1] if k > 0 else None
        between = text[previous.end if previous else 0 : marker.start]
        if speakable(between):
            continue
        if previous is not None:
            raise PauseMarkerError(
                f"two pause markers in a row, {previous.quote(text)} and {marker.quote(text)}, with nothing "
                "to speak between them; merge them into one marker or put text between them"
            )
        raise PauseMarkerError(
            f"pause marker {marker.quote(text)} {_unspeakable(between, 'starts', 'follows')}"
        )
    last = markers[-1]
    after = text[last.end :]
    if not speakable(after):
        raise PauseMarkerError(
            f"pause marker {last.quote(text)} {_unspeakable(after, 'ends', 'is followed by')}"
        )


def _unspeakable(neighbour: str, edge: str, side: str) -> str:
    """Says why ``neighbour``, the text before or after a marker, cannot stand next to it."""
    if not neighbour.strip():
        return f"{edge} the text"
    return f"{side} {neighbour.strip()!r}, which has nothing to speak"


def parse_pauses(text: str) -> list[TextSegment | Pause]:
    """Splits ``text`` at its ``<#x#>`` markers.

    Example: ``parse_pauses("Hi<#0.5#>there")`` -> ``[TextSegment("Hi"), Pause(0.5), TextSegment("there")]``.

    Args:
        text: Text with zero or more pause markers.

    Returns:
        Text segments (stripped) alternating with pauses, starting and ending with a segment. Text without
        markers gives ``[TextSegment(text.strip())]``.

    Raises:
        ValueError: ``text`` is empty or only whitespace.
        PauseMarkerError: a marker is malformed or misplaced; the message quotes it and its position.
    """
    if not text.strip():
        raise ValueError("text is empty: nothing to speak")
    markers = _markers(text)
    if not markers:
        return [TextSegment(text.strip())]
    _check_neighbours(text, markers)
    parts: list[TextSegment | Pause] = []
    start = 0
    for marker in markers:
        parts += [TextSegment(text[start : marker.start].strip()), Pause(marker.seconds)]
        start = marker.end
    parts.append(TextSegment(text[start:].strip()))
    return parts
