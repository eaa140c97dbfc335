"""The corpus's Seed-TTS-eval test sets, written as self-contained ``meta.lst`` folders.

Their names start with the corpus's ``test_set_prefix`` (``test-synth`` by default, ``test-natural`` for the
Kokoro corpus); a set with no item (e.g. ``-multi`` of an English-only corpus) is not written. Each item
pairs a *target* utterance of a test speaker (its text is what to synthesize, its audio the
ground truth) with a *prompt*: a different utterance of the same speaker.

- ``test-synth-en``: English prompt, English target.
- ``test-synth-multi``: the other languages, prompt and target in the same language.
- ``test-synth-cross``: prompt in one language, target in another; the ground truth is the same speaker
  saying the target text.

Each folder holds ``meta.lst`` (``utt|prompt_text|prompt_wav|target_text|gt_wav``, paths relative to it),
``meta.<lang>.lst`` per target language where a set mixes languages (scoring takes one language at a time),
``prompt-wavs/<prompt id>.wav`` and ``gt-wavs/<target id>.wav`` (hard links or copies of the corpus wavs,
so the folder can be moved or archived on its own).
"""

from __future__ import annotations

import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

from speech.data.meta_list import MetaEntry, write_meta_list
from speech.data.synthetic.config import UtteranceConfig

TEST_SETS = ("test-synth-en", "test-synth-multi", "test-synth-cross")  # with the default prefix

Record = dict[str, Any]
Pair = tuple[Record, Record]  # (target, prompt)


def write_test_sets(
    root: Path, records: list[Record], config: UtteranceConfig, *, prefix: str = "test-synth"
) -> dict[str, dict[str, int]]:
    """Writes the three test sets (``<prefix>-en``, ``-multi``, ``-cross``) from the test split's records.

    Returns:
        Per test set with items: number of items, of speakers and of languages.
    """
    by_speaker: dict[str, dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        if record["split"] == "test":
            by_speaker[record["speaker"]][record["language"]].append(record)
    en, multi, cross_set = (f"{prefix}-{kind}" for kind in ("en", "multi", "cross"))
    sets: dict[str, list[Pair]] = {en: [], multi: [], cross_set: []}
    for index, speaker in enumerate(sorted(by_speaker)):
        utts = {lang: sorted(rs, key=lambda r: r["id"]) for lang, rs in sorted(by_speaker[speaker].items())}
        for lang, same_language in utts.items():
            sets[en if lang == "en" else multi] += _rotated_pairs(same_language)
        sets[cross_set] += _cross_pairs(utts, config.cross_items_per_speaker, offset=index)
    summary = {}
    for name, pairs in sets.items():
        folder = root / name
        if folder.exists():
            shutil.rmtree(folder)
        if not pairs:
            continue
        cross = name == cross_set
        items = [(t["language"], _entry(root, folder, t, p, cross=cross)) for t, p in pairs]
        write_meta_list(folder / "meta.lst", sorted((e for _, e in items), key=lambda e: e.utt))
        languages = sorted({lang for lang, _ in items})
        for lang in languages if len(languages) > 1 else ():  # WER normalization depends on the language
            subset = sorted((e for item_lang, e in items if item_lang == lang), key=lambda e: e.utt)
            write_meta_list(folder / f"meta.{lang}.lst", subset)
        summary[name] = {
            "items": len(items),
            "speakers": len({t["speaker"] for t, _ in pairs}),
            "languages": len({t["language"] for t, _ in pairs}),
        }
    return summary


def _rotated_pairs(utts: list[Record]) -> list[Pair]:
    """Every utterance is a target once; its prompt is the next utterance (cyclically)."""
    if len(utts) < 2:
        return []
    return [(utts[i], utts[(i + 1) % len(utts)]) for i in range(len(utts))]


def _cross_pairs(utts: dict[str, list[Record]], n_items: int, offset: int) -> list[Pair]:
    """Up to ``n_items`` (target, prompt) pairs in different languages, cycling over language pairs.

    ``offset`` rotates the cycle so that different speakers start with different language pairs.
    """
    langs = list(utts)
    # (target language, prompt language); each run of len(langs) pairs has every language as target once.
    lang_pairs = [(langs[i], langs[(i + shift) % len(langs)]) for shift in range(1, len(langs))
                  for i in range(len(langs))]  # fmt: skip
    if not lang_pairs:
        return []
    pairs = []
    for k in range(n_items):
        target_lang, prompt_lang = lang_pairs[(k + offset) % len(lang_pairs)]
        rnd = k // len(lang_pairs)
        if rnd >= len(utts[target_lang]):
            break
        pairs.append((utts[target_lang][rnd], utts[prompt_lang][rnd % len(utts[prompt_lang])]))
    return pairs


def _entry(root: Path, folder: Path, target: Record, prompt: Record, *, cross: bool) -> MetaEntry:
    prompt_wav = _copy(root / prompt["path"], folder / "prompt-wavs" / f"{prompt['id']}.wav")
    gt_wav = _copy(root / target["path"], folder / "gt-wavs" / f"{target['id']}.wav")
    utt = f"{target['id']}-from-{prompt['language']}" if cross else target["id"]
    return MetaEntry(utt, prompt["text"], prompt_wav, target["text"], gt_wav)


def _copy(source: Path, dest: Path) -> Path:
    """A hard link where the file system allows one (no extra disk space), else a copy."""
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, dest)
        except OSError:
            shutil.copyfile(source, dest)
    return dest
