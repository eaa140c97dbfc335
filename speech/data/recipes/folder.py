"""A folder of audio files with one transcript each: the layout to use for your own recordings.

::

    <root>/<speaker>/<name>.wav      (or .flac ...)
    <root>/<speaker>/<name>.txt      the transcript of <name>.wav, UTF-8, any line breaks

Folders may nest to any depth; the speaker is the audio file's parent folder (or one fixed id for the
whole folder). Hidden files and folders (``.git``, macOS ``._*`` files) are ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from speech.data.records import Utterance
from speech.data.rejects import RejectLog

log = logging.getLogger(__name__)

PARENT = "parent"


def load_folder(
    root: str | Path,
    *,
    language: str,
    speaker: str = PARENT,
    audio_exts: Sequence[str] = (".wav", ".flac"),
    rejects: RejectLog | None = None,
) -> list[Utterance]:
    """Lists every audio file under ``root`` that has a sibling ``<stem>.txt`` transcript.

    Args:
        root: The folder to search, recursively.
        language: Language code of every utterance (``en``, ``zh`` ...).
        speaker: ``"parent"`` takes each file's parent folder name as its speaker id (files directly in
            ``root`` get ``root``'s name); any other string is the speaker id of every file.
        audio_exts: Audio file extensions to pick up, case-insensitive.
        rejects: Collects audio files whose transcript is missing, empty or not UTF-8, and files whose
            id repeats another's (``a.wav`` next to ``a.flac``). When ``None`` a private log is used and
            its summary is logged as one warning.

    Returns:
        Utterances sorted by id; the id is the file's path below ``root`` without extension, with ``/``
        replaced by ``_`` (``spk1/utt01.wav`` -> ``spk1_utt01``). Whole files.

    Raises:
        ValueError: ``language``, ``speaker`` or ``audio_exts`` is empty.
        FileNotFoundError: ``root`` is missing or holds no audio file with one of ``audio_exts``.
    """
    if not language:
        raise ValueError("language must be a language code such as 'en', got an empty string")
    if not speaker:
        raise ValueError(f"speaker must be {PARENT!r} or a speaker id, got an empty string")
    exts = _normalized_exts(audio_exts)
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"audio folder not found: {root}")
    audio_files = _audio_files(root, exts)
    if not audio_files:
        raise FileNotFoundError(f"no audio files ({', '.join(sorted(exts))}) under {root}")
    own_log = rejects is None
    rejects = RejectLog() if rejects is None else rejects
    root_name = root.resolve().name  # the speaker of files directly in root, even for root="."
    utterances: dict[str, Utterance] = {}
    for audio in audio_files:
        text = _transcript(audio, rejects)
        if text is None:
            continue
        utt_id = "_".join(audio.relative_to(root).with_suffix("").parts)
        if utt_id in utterances:
            rejects.add(audio, "duplicate_id", f"id {utt_id!r} also names {utterances[utt_id].audio_path}")
            continue
        utterances[utt_id] = Utterance(
            id=utt_id,
            audio_path=audio,
            text=text,
            speaker=(audio.parent.name or root_name) if speaker == PARENT else speaker,
            language=language,
        )
    if own_log and rejects:
        log.warning("folder %s: %s", root, rejects.summary())
    return sorted(utterances.values(), key=lambda u: u.id)


def _normalized_exts(audio_exts: Sequence[str]) -> set[str]:
    # A bare string would otherwise be taken as a sequence of one-letter extensions.
    names = [audio_exts] if isinstance(audio_exts, str) else list(audio_exts)
    exts = {ext.lower() if ext.startswith(".") else f".{ext.lower()}" for ext in names if ext}
    if not exts:
        raise ValueError(f"audio_exts must name at least one extension such as '.wav', got {audio_exts!r}")
    return exts


def _audio_files(root: Path, exts: set[str]) -> list[Path]:
    """Audio files under ``root`` in path order, skipping hidden files and folders."""
    return sorted(
        path
        for path in root.rglob("*")
        if path.suffix.lower() in exts
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
        and path.is_file()
    )


def _transcript(audio: Path, rejects: RejectLog) -> str | None:
    txt = audio.with_suffix(".txt")
    if not txt.is_file():
        rejects.add(audio, "missing_transcript", f"no {txt.name} next to it")
        return None
    try:
        text = " ".join(txt.read_text(encoding="utf-8").split())
    except UnicodeDecodeError as err:
        rejects.add(audio, "unreadable_transcript", f"{txt.name}: {err}")
        return None
    if not text:
        rejects.add(audio, "empty_transcript", f"{txt.name} is empty")
        return None
    return text
