"""Audio answered as a URL (``output_format: url``, a clone's demo): kept ``ttl_s`` seconds, then deleted.

Files are named by a random 128-bit id, which is what makes their URL private (as MiniMax's signed URLs);
expired files are swept whenever one is written or asked for, and one asked for after its time is gone even
if the sweep has not run.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path

NAME = re.compile(r"[0-9a-f]{32}\.(mp3|wav|flac|pcm)")
MEDIA_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav", "flac": "audio/flac", "pcm": "audio/L16"}


class AudioFiles:
    """A folder of answered audio with an expiry.

    Args:
        root: The folder (created if missing).
        ttl_s: Seconds a file is served (MiniMax: 24 hours).
    """

    def __init__(self, root: str | Path, ttl_s: float = 24 * 3600) -> None:
        self.root, self.ttl_s = Path(root), ttl_s
        self.root.mkdir(parents=True, exist_ok=True)

    def put(self, data: bytes, fmt: str) -> str:
        """Stores ``data``; returns its file name."""
        self.sweep()
        name = f"{secrets.token_hex(16)}.{fmt}"
        tmp = self.root / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self.root / name)
        return name

    def read(self, name: str) -> bytes | None:
        """The bytes of a stored, unexpired file, or ``None`` (also for a name that is not one of ours).

        The file is read whole before anything is answered, so a sweep that deletes it a moment later (its
        time ran out, another request swept) cannot cut an answer whose length was already sent.
        """
        if not NAME.fullmatch(name):
            return None
        self.sweep()
        try:
            return (self.root / name).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None

    def sweep(self) -> None:
        """Deletes the files older than ``ttl_s``."""
        oldest = time.time() - self.ttl_s
        for path in self.root.iterdir():
            try:
                if path.stat().st_mtime < oldest:
                    path.unlink()
            except FileNotFoundError:  # swept by a concurrent request
                pass
