"""Voices: system voices from the config, cloned voices in a SQLite store with a folder of reference audio.

Layout under the store root: ``store.sqlite`` (tables ``files`` and ``voices``), ``files/<file_id>.<ext>``
(uploads), ``voices/<voice_id>.wav`` (a cloned voice's reference, decoded once to mono 16-bit wav) and
``voices/<voice_id>.<model id>.pt`` (its speaker vectors and one-shot prompt for the checkpoints of a served
model, ``speech.serve.features``). A clone writes its files under temporary names, renames them into place,
then inserts its row in one transaction: a crash before the insert leaves no voice (files without a row are
swept at the next start), and a voice that is listed always has its audio and features. A voice_id is
checked against MiniMax's rules before anything touches the disk, so no id can name a path outside
``voices/``.
"""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from speech.inference import audio_output
from speech.serve.decoding import decode_audio
from speech.serve.errors import VOICE_EXISTS, ApiError

# MiniMax: 8-256 characters, a letter first, letters, digits, '-' and '_', not ending in '-' or '_'.
VOICE_ID = re.compile(r"[A-Za-z][A-Za-z0-9_-]{6,254}[A-Za-z0-9]")
UPLOAD_SUFFIXES = (".mp3", ".m4a", ".wav")
PURPOSES = ("voice_clone", "prompt_audio")

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    file_id INTEGER PRIMARY KEY, filename TEXT NOT NULL, bytes INTEGER NOT NULL, created_at INTEGER NOT NULL,
    purpose TEXT NOT NULL, suffix TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS voices (
    voice_id TEXT PRIMARY KEY, file_id INTEGER, transcript TEXT, description TEXT,
    created_time INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class Voice:
    """What a request needs of a voice: its reference wav and, for one-shot, its transcript."""

    voice_id: str
    reference: Path
    transcript: str | None = None
    name: str | None = None
    description: str = ""
    language: str | None = None
    created_time: int | None = None  # cloned voices: seconds since the epoch


# Given a clone's wav (a temporary file) and whether it is one-shot: the files to store beside it, by the
# suffix after ``<voice_id>.`` (its features per served checkpoint), and what to do once the voice exists.
VoiceFiles = Callable[[Path, bool], tuple[dict[str, bytes], Callable[[Path], None]]]


@dataclass(frozen=True)
class UploadLimits:
    """What an upload for cloning may be (MiniMax: at most 20 MB, 10 s to 5 min, mp3/m4a/wav)."""

    max_bytes: int = 20 * 1024 * 1024
    min_seconds: float = 10.0
    max_seconds: float = 300.0


def check_voice_id(voice_id, field: str = "voice_id") -> str:
    """``voice_id`` if it follows MiniMax's rules, else a 2013 ``ApiError`` naming them."""
    if not isinstance(voice_id, str) or not VOICE_ID.fullmatch(voice_id):
        raise ApiError.invalid(
            field,
            f"must be 8-256 characters: a letter first, then letters, digits, '-' or '_', not ending in '-' "
            f"or '_'; got {voice_id!r}",
        )
    return voice_id


class VoiceStore:
    """System voices (read-only, from the config) and cloned voices (persisted under ``root``).

    Args:
        root: The store folder (created if missing).
        system: ``voice_id -> Voice`` of the system voices.
        limits: What an upload may be.
    """

    def __init__(self, root: str | Path, system: dict[str, Voice], limits: UploadLimits = UploadLimits()):
        self.root, self.system, self.limits = Path(root), dict(system), limits
        for sub in ("files", "voices"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # One writer at a time, and the connection used by one thread at a time.
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.root / "store.sqlite", check_same_thread=False, isolation_level=None)
        self._db.executescript(SCHEMA)
        self._sweep()

    def close(self) -> None:
        self._db.close()

    def _sweep(self) -> None:
        """Removes what a crash may have left: temporary files and files of voices with no row."""
        listed = {row[0] for row in self._db.execute("SELECT voice_id FROM voices")}
        for path in (self.root / "voices").iterdir():
            if path.suffix == ".tmp" or path.name.split(".")[0] not in listed:  # no voice_id holds a dot
                path.unlink(missing_ok=True)
        for path in (self.root / "files").glob("*.tmp"):
            path.unlink(missing_ok=True)

    # ---------------------------------------------------------------------------------------------- files
    def upload(self, filename: str, data: bytes, purpose: str) -> dict:
        """Stores an upload after checking its purpose, size, suffix and length; returns its entry."""
        if purpose not in PURPOSES:
            raise ApiError.invalid("purpose", f"must be one of {list(PURPOSES)}, got {purpose!r}")
        suffix = Path(filename or "").suffix.lower()
        if suffix not in UPLOAD_SUFFIXES:
            raise ApiError.invalid("file", f"must be one of {list(UPLOAD_SUFFIXES)}, got {filename!r}")
        if len(data) > self.limits.max_bytes:
            raise ApiError.invalid("file", f"must be at most {self.limits.max_bytes} bytes, got {len(data)}")
        self._decode(data, suffix, "file")
        file_id, created = secrets.randbelow(2**53 - 1) + 1, int(time.time())
        path = self.root / "files" / f"{file_id}{suffix}"
        _write_atomic(path, data)
        with self._lock:
            self._db.execute(
                "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?)",
                (file_id, Path(filename).name, len(data), created, purpose, suffix),
            )
        return self.file(file_id)

    def file(self, file_id) -> dict:
        """The ``file`` entry of an upload, or a 2013 ``ApiError``."""
        if isinstance(file_id, str) and file_id.isdigit():
            file_id = int(file_id)
        if isinstance(file_id, bool) or not isinstance(file_id, int):
            raise ApiError.invalid("file_id", f"must be an integer, got {file_id!r}")
        with self._lock:
            row = self._db.execute(
                "SELECT file_id, bytes, created_at, filename, purpose FROM files WHERE file_id = ?",
                (file_id,),
            ).fetchone()
        if row is None:
            raise ApiError.invalid("file_id", f"no uploaded file {file_id}")
        return dict(zip(("file_id", "bytes", "created_at", "filename", "purpose"), row, strict=True))

    def upload_path(self, file_id) -> Path:
        """Where upload ``file_id`` is stored."""
        entry = self.file(file_id)
        with self._lock:
            row = self._db.execute(
                "SELECT suffix FROM files WHERE file_id = ?", (entry["file_id"],)
            ).fetchone()
        return self.root / "files" / f"{entry['file_id']}{row[0]}"

    def _decode(self, data: bytes, suffix: str, field: str):
        """Decodes an upload and checks its length: ``(wav (t,), rate)`` or a 2013 ``ApiError``."""
        lo, hi = self.limits.min_seconds, self.limits.max_seconds
        wav, rate = decode_audio(data, suffix, field, max_seconds=hi)
        seconds = wav.shape[0] / rate
        if not lo <= seconds <= hi:
            raise ApiError.invalid(field, f"must hold {lo:g} s to {hi:g} s of audio, got {seconds:.2f} s")
        return wav, rate

    # --------------------------------------------------------------------------------------------- voices
    def clone(
        self, file_id, voice_id, transcript: str | None = None, description: str = "",
        files: VoiceFiles | None = None,
    ) -> Voice:  # fmt: skip
        """Registers ``voice_id`` with the audio of upload ``file_id``.

        The wav and the files ``files`` makes of it (the voice's features) are in place before the row.

        Raises:
            ApiError: 2013 for a bad id or file, 2039 when the voice_id is taken.
        """
        check_voice_id(voice_id)
        if transcript is not None and (not isinstance(transcript, str) or not transcript.strip()):
            raise ApiError.invalid("transcript", f"must be a non-empty string, got {transcript!r}")
        entry = self.file(file_id)
        path = self.upload_path(entry["file_id"])
        wav, rate = self._decode(path.read_bytes(), path.suffix, "file_id")
        self._check_free(voice_id)
        voices, row = self.root / "voices", (voice_id, entry["file_id"], transcript, description)
        final, tmp = voices / f"{voice_id}.wav", voices / f"{voice_id}.{secrets.token_hex(8)}.wav.tmp"
        try:
            _write_atomic(tmp, audio_output.encode(wav, rate, "wav"), rename=False)
            extra, done = files(tmp, transcript is not None) if files else ({}, lambda _: None)
            with self._lock:
                self._check_free(voice_id)
                written = [final] + [voices / f"{voice_id}.{name}" for name in extra]
                try:
                    for name, data in extra.items():
                        _write_atomic(voices / f"{voice_id}.{name}", data)
                    os.replace(tmp, final)
                    with self._transaction():
                        insert = "INSERT INTO voices VALUES (?, ?, ?, ?, ?)"
                        self._db.execute(insert, (*row, int(time.time())))
                except BaseException:
                    for written_path in written:
                        written_path.unlink(missing_ok=True)
                    raise
        finally:
            tmp.unlink(missing_ok=True)
        done(final)
        return self.voice(voice_id)

    def _check_free(self, voice_id: str) -> None:
        with self._lock:
            if voice_id in self.system or self._row(voice_id) is not None:
                raise ApiError(VOICE_EXISTS, f"voice_id {voice_id!r} already exists", "voice_id")

    def owns(self, path: Path) -> bool:
        """Whether ``path`` is a cloned voice's reference wav in this store."""
        return path.parent == self.root / "voices" and path.suffix == ".wav"

    def add_voice_file(self, voice_id: str, name: str, data: bytes) -> bool:
        """Stores ``voices/<voice_id>.<name>`` (features for other checkpoints) if the voice still exists."""
        with self._lock:
            if self._row(voice_id) is None:
                return False
            _write_atomic(self.root / "voices" / f"{voice_id}.{name}", data)
            return True

    def delete(self, voice_id) -> None:
        """Deletes a cloned voice (system voices cannot be deleted)."""
        check_voice_id(voice_id)
        if voice_id in self.system:
            raise ApiError.invalid("voice_id", f"{voice_id!r} is a system voice; only clones can be deleted")
        with self._lock:
            with self._transaction():
                deleted = self._db.execute("DELETE FROM voices WHERE voice_id = ?", (voice_id,)).rowcount
            if not deleted:
                raise ApiError.invalid("voice_id", f"no cloned voice {voice_id!r}")
            for path in (self.root / "voices").glob(f"{voice_id}.*"):  # the id holds no glob character
                if path.suffix != ".tmp":  # a clone of the same id under way keeps its files
                    path.unlink(missing_ok=True)

    def voice(self, voice_id, field: str = "voice_id") -> Voice:
        """A system or cloned voice, or a 2013 ``ApiError`` naming the field."""
        if isinstance(voice_id, str) and voice_id in self.system:
            return self.system[voice_id]
        check_voice_id(voice_id, field)
        row = self._row(voice_id)
        if row is None:
            raise ApiError.invalid(
                field, f"unknown voice {voice_id!r}; POST /v1/get_voice lists the voices of this server"
            )
        _, transcript, description, created = row
        return Voice(voice_id, self.root / "voices" / f"{voice_id}.wav", transcript, None, description or "",
                     None, created)  # fmt: skip

    def cloned(self) -> list[Voice]:
        with self._lock:
            rows = self._db.execute("SELECT voice_id FROM voices ORDER BY created_time, voice_id").fetchall()
        return [self.voice(row[0]) for row in rows]

    def _row(self, voice_id: str):
        with self._lock:
            return self._db.execute(
                "SELECT voice_id, transcript, description, created_time FROM voices WHERE voice_id = ?",
                (voice_id,),
            ).fetchone()

    def _transaction(self):
        return _Transaction(self._db)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on an error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, *_):
        self.db.execute("ROLLBACK" if kind else "COMMIT")
        return False


def _write_atomic(path: Path, data: bytes, rename: bool = True) -> None:
    """Writes ``data`` to ``path`` through ``<path>.tmp`` and a rename, synced: never a half file
    (``rename=False``: ``path`` is itself a temporary name, written in place)."""
    tmp = path.with_name(path.name + ".tmp") if rename else path
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if rename:
        os.replace(tmp, path)
