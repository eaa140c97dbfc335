"""Utterances of a Seed-TTS-eval style ``meta.lst``: its prompts and, when given, its ground truths.

Each line ``utt|prompt_text|prompt_wav|target_text[|gt_wav]`` (see :mod:`speech.data.meta_list`) holds up
to two transcribed recordings of one voice: the prompt and the ground-truth reading of the target text.
Seed-TTS-eval names no speakers, so each line gets one, ``spk-<utt>``, named after the first line that
uses its prompt wav; lines that share a prompt wav share that speaker, and the prompt is listed once.
Ids are ``prompt-<utt>`` (``utt`` of the first line with that prompt) and ``gt-<utt>``, so they cannot
collide even where a prompt clip of one line is the target clip of another.
"""

from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path

from speech.data.meta_list import MetaEntry, read_meta_list
from speech.data.records import Utterance
from speech.data.rejects import RejectLog

log = logging.getLogger(__name__)


def load_seedtts_meta(
    meta_path: str | Path, *, language: str, rejects: RejectLog | None = None
) -> list[Utterance]:
    """Lists the prompt and ground-truth utterances of a ``meta.lst``.

    Args:
        meta_path: The meta file; relative audio paths are resolved against its folder.
        language: Language code of every utterance (``en``, ``zh`` ...).
        rejects: Collects malformed lines, repeated utts, missing audio files, empty prompt texts and
            repeated prompt wavs whose text differs from the first one's. When ``None`` a private log
            is used and its summary is logged as one warning.

    Returns:
        Utterances sorted by id, whole files.

    Raises:
        ValueError: ``language`` is empty.
        FileNotFoundError: ``meta_path`` does not exist.
    """
    if not language:
        raise ValueError("language must be a language code such as 'en', got an empty string")
    own_log = rejects is None
    rejects = RejectLog() if rejects is None else rejects
    entries = read_meta_list(meta_path, rejects=rejects)
    prompts: dict[Path, MetaEntry] = {}  # first line of each prompt wav
    utterances: list[Utterance | None] = []  # None where the recording was rejected
    for entry in entries:
        first = prompts.setdefault(Path(os.path.normpath(entry.prompt_wav)), entry)
        make = partial(_utterance, speaker=f"spk-{first.utt}", language=language, rejects=rejects)
        if first is entry:
            utterances.append(make(f"prompt-{entry.utt}", entry.prompt_wav, entry.prompt_text))
        elif _clean(entry.prompt_text) != _clean(first.prompt_text):
            detail = f"{entry.utt}: {entry.prompt_text!r}, first read by {first.utt}: {first.prompt_text!r}"
            rejects.add(entry.prompt_wav, "conflicting_prompt_text", detail)
        if entry.gt_wav is not None:
            utterances.append(make(f"gt-{entry.utt}", entry.gt_wav, entry.target_text))
    if own_log and rejects:
        log.warning("meta list %s: %s", meta_path, rejects.summary())
    return sorted((u for u in utterances if u is not None), key=lambda u: u.id)


def _utterance(
    utt_id: str, audio: Path, text: str, speaker: str, language: str, rejects: RejectLog
) -> Utterance | None:
    if not audio.is_file():
        rejects.add(audio, "missing_audio", f"{utt_id}: {audio} not found")
        return None
    text = _clean(text)
    if not text:
        rejects.add(audio, "empty_transcript", f"{utt_id}: the transcript is empty")
        return None
    return Utterance(id=utt_id, audio_path=audio, text=text, speaker=speaker, language=language)


def _clean(text: str) -> str:
    return " ".join(text.split())
