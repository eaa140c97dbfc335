"""Precomputed transcripts read from a file: score WER with any external ASR, or re-score without one.

Two formats, chosen by content (a first non-blank line that starts with ``{`` means JSONL):

- TSV, one ``utt<TAB>text`` per line (``utt<TAB>`` for an empty transcript; text may contain tabs);
- JSONL, one ``{"utt": ..., "text": ...}`` object per line.

The Seed-TTS runner looks ground-truth rows up as ``gt/<utt>`` (``/`` never occurs in a meta utt id),
so one file can hold both the generated and the ground-truth transcripts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from speech.metrics.asr.base import ASRBackend

#: Prefix of the ids under which the Seed-TTS runner asks for ground-truth transcripts.
GT_PREFIX = "gt/"
_GT_HINT = f" (ground-truth items are looked up as '{GT_PREFIX}<utt>'; ground_truth=false skips them)"


class TranscriptsASR(ASRBackend):
    """Returns stored transcripts by utterance id; the audio is ignored.

    Args:
        path: A TSV or JSONL transcripts file (see the module docstring).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a malformed line or an utterance id given twice (the message names ``file:line``).
    """

    name = "transcripts"
    languages = None

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"transcripts file not found: {self.path}")
        self.texts = self._read()

    def _read(self) -> dict[str, str]:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        first = next((line for line in lines if line.strip()), "")
        parse = self._parse_json if first.lstrip().startswith("{") else self._parse_tsv
        texts: dict[str, str] = {}
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{self.path}:{lineno}"
            utt, text = parse(line, where)
            if utt in texts:
                raise ValueError(f"{where}: utt {utt!r} appears twice")
            texts[utt] = text
        return texts

    @staticmethod
    def _parse_tsv(line: str, where: str) -> tuple[str, str]:
        if "\t" not in line:
            raise ValueError(f"{where}: expected 'utt<TAB>text', found no tab: {line!r}")
        utt, text = line.split("\t", 1)
        if not utt.strip():
            raise ValueError(f"{where}: empty utt id: {line!r}")
        return utt.strip(), text.strip()

    @staticmethod
    def _parse_json(line: str, where: str) -> tuple[str, str]:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not a JSON object ({err}): {line!r}") from err
        if (
            not isinstance(obj, dict)
            or not isinstance(obj.get("utt"), str)
            or not isinstance(obj.get("text"), str)
        ):
            raise ValueError(f'{where}: expected {{"utt": str, "text": str}}, found {line!r}')
        return obj["utt"].strip(), obj["text"].strip()

    def transcribe(
        self, wavs: Sequence[np.ndarray], *, language: str, utts: Sequence[str] | None = None
    ) -> list[str]:
        """Looks each utterance id up; ``wavs`` and ``language`` are ignored.

        Raises:
            ValueError: ``utts`` is missing or its length differs from ``wavs``.
            KeyError: an utterance has no transcript; the message names the file and the utt.
        """
        if utts is None or len(utts) != len(wavs):
            raise ValueError(f"{self.name} looks transcripts up by utterance id: pass one utt per waveform")
        missing = [u for u in utts if u not in self.texts]
        if missing:
            shown = ", ".join(repr(u) for u in missing[:5]) + (" ..." if len(missing) > 5 else "")
            hint = _GT_HINT if any(u.startswith(GT_PREFIX) for u in missing) else ""
            raise KeyError(f"{self.path}: no transcript for {len(missing)} utt(s): {shown}{hint}")
        return [self.texts[u] for u in utts]
