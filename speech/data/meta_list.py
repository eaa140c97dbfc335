"""Seed-TTS-eval ``meta.lst`` files: the test-set format and the batch-inference input.

One line per test item, fields separated by ``|``::

    utt|prompt_text|prompt_wav|target_text[|gt_wav]

Audio paths are relative to the directory of the meta file (as in Seed-TTS-eval, e.g.
``prompt-wavs/xxx.wav``); absolute paths are kept as they are. Generated audio for ``utt`` is expected
at ``<output_dir>/<utt>.wav``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from speech.data.rejects import RejectLog


class MetaListError(ValueError):
    """A malformed ``meta.lst`` line; the message names the file and the line number."""


@dataclass(frozen=True)
class MetaEntry:
    """One ``meta.lst`` line with its audio paths resolved against the meta file's directory."""

    utt: str
    prompt_text: str
    prompt_wav: Path
    target_text: str
    gt_wav: Path | None = None


def _resolve(base: Path, field: str) -> Path:
    path = Path(field)
    return path if path.is_absolute() else base / path


def parse_meta_line(line: str, base: Path, where: str) -> MetaEntry:
    """Parses one line; ``where`` (``file:line``) goes into the error message."""
    fields = [f.strip() for f in line.rstrip("\n").split("|")]
    if len(fields) not in (4, 5):
        raise MetaListError(
            f"{where}: expected 4 or 5 '|'-separated fields "
            f"(utt|prompt_text|prompt_wav|target_text[|gt_wav]), found {len(fields)}: {line.strip()!r}"
        )
    utt, prompt_text, prompt_wav, target_text = fields[:4]
    for name, value in (("utt", utt), ("prompt_wav", prompt_wav), ("target_text", target_text)):
        if not value:
            raise MetaListError(f"{where}: field '{name}' is empty: {line.strip()!r}")
    if "/" in utt or utt in (".", ".."):
        raise MetaListError(f"{where}: utt {utt!r} must be a plain file stem (it names <out_dir>/<utt>.wav)")
    gt = fields[4] if len(fields) == 5 and fields[4] else None
    return MetaEntry(
        utt=utt,
        prompt_text=prompt_text,
        prompt_wav=_resolve(base, prompt_wav),
        target_text=target_text,
        gt_wav=_resolve(base, gt) if gt else None,
    )


def read_meta_list(path: str | Path, *, rejects: RejectLog | None = None) -> list[MetaEntry]:
    """Reads a ``meta.lst``.

    Args:
        path: The meta file.
        rejects: When given, malformed lines and repeated utterance ids are logged there and skipped;
            when ``None`` the first one raises :class:`MetaListError`.

    Returns:
        The entries in file order (blank lines ignored).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"meta list not found: {path}")
    entries: list[MetaEntry] = []
    seen: set[str] = set()
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            entry = parse_meta_line(line, path.parent, where)
            if entry.utt in seen:
                raise MetaListError(f"{where}: utt {entry.utt!r} appears twice")
        except MetaListError as err:
            if rejects is None:
                raise
            rejects.add(where, "bad_meta_line", str(err))
            continue
        seen.add(entry.utt)
        entries.append(entry)
    return entries


def write_meta_list(path: str | Path, entries: list[MetaEntry]) -> Path:
    """Writes entries with audio paths relative to the meta file's directory where possible."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()

    def rel(p: Path) -> str:
        p = Path(p).resolve()
        try:
            return os.path.relpath(p, base)
        except ValueError:  # different drive on Windows
            return str(p)

    with path.open("w", encoding="utf-8") as f:
        for e in entries:
            for name, text in (
                ("utt", e.utt),
                ("prompt_text", e.prompt_text),
                ("target_text", e.target_text),
            ):
                if "|" in text or "\n" in text:
                    raise MetaListError(f"{name} of {e.utt!r} contains '|' or a newline: {text!r}")
            fields = [e.utt, e.prompt_text, rel(e.prompt_wav), e.target_text]
            if e.gt_wav is not None:
                fields.append(rel(e.gt_wav))
            f.write("|".join(fields) + "\n")
    return path
