"""Bookkeeping for data that was skipped: a count per reason and one line per item in a log."""

from __future__ import annotations

from collections import Counter
from pathlib import Path


class RejectLog:
    """Collects skipped items so that bad data is reported, never a crash.

    Each rejection is one ``(item, reason)`` pair; ``reason`` is a short category such as
    ``"unreadable"`` or ``"too_short"``, ``detail`` a human-readable explanation.
    """

    def __init__(self) -> None:
        self.entries: list[tuple[str, str, str]] = []

    def add(self, item: str | Path, reason: str, detail: str = "") -> None:
        self.entries.append((str(item), reason, detail))

    def __len__(self) -> int:
        return len(self.entries)

    def counts(self) -> dict[str, int]:
        """Number of rejected items per reason, most frequent first."""
        return dict(Counter(reason for _, reason, _ in self.entries).most_common())

    def write(self, path: str | Path) -> Path:
        """Writes one ``item<TAB>reason<TAB>detail`` line per rejection."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for item, reason, detail in self.entries:
                f.write(f"{item}\t{reason}\t{detail}\n")
        return path

    def summary(self) -> str:
        if not self.entries:
            return "no items skipped"
        parts = ", ".join(f"{n} {reason}" for reason, n in self.counts().items())
        return f"{len(self.entries)} items skipped ({parts})"
