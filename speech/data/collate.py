"""Grouping cuts into batches by duration, for offline passes over a corpus (padding them is
``speech.tensors.pad_sequences``)."""

from __future__ import annotations

from collections.abc import Sequence


def duration_batches(cuts: Sequence, max_duration: float) -> list[list]:
    """Cuts sorted by duration and packed greedily into batches of at most ``max_duration`` seconds (a longer
    cut gets a batch of its own); sorting keeps padding small. For offline passes such as cache encoding."""
    batches, current, total = [], [], 0.0
    for cut in sorted(cuts, key=lambda c: c.duration):
        if current and total + cut.duration > max_duration:
            batches.append(current)
            current, total = [], 0.0
        current.append(cut)
        total += cut.duration
    return batches + ([current] if current else [])
