"""The built-in synthetic corpus (``scripts/corpus/make_synthetic_corpus.py``), read from its manifest.

``<root>/manifest.jsonl`` lists every rendered utterance with its split: ``train`` (the training
speakers) or ``test`` (held-out speakers, also packaged as ``test-synth-*/meta.lst``). The emotive
renditions (``scripts/corpus/make_emotion_corpus.py``) use the same format, all ``train``, with an
``emotion``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from speech.data.records import Utterance
from speech.data.rejects import RejectLog
from speech.data.synthetic.catalog import read_manifest

log = logging.getLogger(__name__)


def load_synthetic(
    root: str | Path, split: str = "train", *, rejects: RejectLog | None = None
) -> list[Utterance]:
    """Lists the utterances of one split of a built synthetic corpus.

    Args:
        root: The corpus folder (``data.root``, e.g. ``data/synthetic_tiny``).
        split: ``"train"`` or ``"test"``.
        rejects: Collects manifest entries whose wav is missing or whose text is empty. When ``None`` a
            private log is used and its summary is logged as one warning.

    Returns:
        Utterances sorted by id, whole files, with the transcript exactly as spoken and the manifest's
        ``emotion`` (``None`` where it has none).

    Raises:
        FileNotFoundError: the corpus is not built (the message gives the command that builds it).
        ValueError: ``split`` is not a split of the corpus.
    """
    root = Path(root)
    records = read_manifest(root)
    splits = sorted({r["split"] for r in records})
    if split not in splits:
        raise ValueError(f"unknown split {split!r} of the synthetic corpus at {root}; it has {splits}")
    own_log = rejects is None
    rejects = RejectLog() if rejects is None else rejects
    utterances = []
    for record in records:
        if record["split"] != split:
            continue
        audio = root / record["path"]
        if not audio.is_file():
            rejects.add(audio, "missing_audio", f"{record['id']}: {audio} not found")
        elif not record["text"].strip():
            rejects.add(audio, "empty_transcript", f"{record['id']}: the transcript is empty")
        else:
            utterances.append(
                Utterance(
                    id=record["id"],
                    audio_path=audio,
                    text=record["text"],
                    speaker=record["speaker"],
                    language=record["language"],
                    duration=record["duration"],
                    emotion=record.get("emotion"),
                )
            )
    if own_log and rejects:
        log.warning("synthetic corpus %s: %s", root, rejects.summary())
    return sorted(utterances, key=lambda u: u.id)
