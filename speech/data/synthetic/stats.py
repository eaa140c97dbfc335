"""Summary statistics of a built corpus (``stats.json``): hours, speakers and utterances per split and
language, the text pools, the speaker mix and what was skipped."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from speech.data.rejects import RejectLog
from speech.data.synthetic.plan import PlannedUtterance, Speaker
from speech.data.synthetic.text_sources import SentencePool

Record = dict[str, Any]


def _summary(records: list[Record]) -> dict[str, Any]:
    seconds = sum(r["duration"] for r in records)
    return {
        "hours": round(seconds / 3600, 4),
        "minutes": round(seconds / 60, 2),
        "utterances": len(records),
        "speakers": len({r["speaker"] for r in records}),
        "mean_duration": round(seconds / len(records), 3) if records else 0.0,
    }


def corpus_stats(records: list[Record], rejects: RejectLog, planned: int) -> dict[str, Any]:
    """Sizes of the rendered corpus per split, language and engine, and what was skipped."""
    by_split: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        by_split[record["split"]].append(record)
    splits = {}
    for split, split_records in sorted(by_split.items()):
        by_lang: dict[str, list[Record]] = defaultdict(list)
        for record in split_records:
            by_lang[record["language"]].append(record)
        splits[split] = {
            **_summary(split_records),
            "languages": {lang: _summary(rs) for lang, rs in sorted(by_lang.items())},
            "engines": dict(sorted(Counter(r["engine"] for r in split_records).items())),
        }
    durations = sorted(r["duration"] for r in records)
    return {
        "utterances_planned": planned,
        "utterances_rendered": len(records),
        "splits": splits,
        "distinct_sentences_spoken": len({(r["language"], r["text"]) for r in records}),
        "duration_range": [durations[0], durations[-1]] if durations else [],
        "rejects": rejects.counts(),
    }


def pool_sizes(pools: dict[str, SentencePool]) -> dict[str, dict[str, int]]:
    """Raw candidates and kept sentences of each language's pool."""
    return {
        lang: {"candidates": p.candidates, "train_pool": len(p.train), "heldout_pool": len(p.heldout)}
        for lang, p in sorted(pools.items())
    }


def training_sentences(planned: list[PlannedUtterance]) -> dict[str, dict[str, int]]:
    """Training utterances and the distinct sentences they say, per language. Fewer sentences than
    utterances means speakers share sentences, so held-out utterances of training speakers (validation)
    say sentences heard in training."""
    said: dict[str, list[str]] = {}
    for u in planned:
        if u.split == "train":
            said.setdefault(u.language, []).append(u.text)
    return {
        lang: {"utterances": len(texts), "sentences": len(set(texts))} for lang, texts in sorted(said.items())
    }


def speaker_mix(speakers: list[Speaker]) -> dict[str, Any]:
    """How many speakers of each kind per split, and which voices and warps the test speakers are."""
    mix: dict[str, Any] = {}
    for split in ("train", "test"):
        group = [s for s in speakers if s.split == split]
        mix[split] = {
            "total": len(group),
            "base_voices": len({s.base.name for s in group}),
            "warped": sum(not s.warp.is_identity for s in group),
            "by_engine": dict(sorted(Counter(s.base.engine for s in group).items())),
            "multilingual": sum(len(s.languages) > 1 for s in group),
        }
    test = [s for s in speakers if s.split == "test"]
    mix["test"]["heldout_voices"] = sorted({s.base.name for s in test if s.heldout == "voice"})
    mix["test"]["unseen_warps"] = sorted(s.id for s in test if s.heldout == "warp")
    return mix
