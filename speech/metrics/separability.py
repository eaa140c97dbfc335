"""Are the test speakers different voices? A resemblyzer check of a built synthetic corpus.

resemblyzer's speaker encoder (its weights ship inside the PyPI package) embeds up to ``per_speaker``
utterances of every test speaker in every language it speaks. Pairs of utterances *in the same language*
are scored by cosine similarity, so a language change never passes for a speaker change:

- ``same`` / ``different``: mean cosine of same-speaker and different-speaker pairs;
- ``eer``: equal error rate of the same/different decision by a threshold on the cosine;
- ``ordered``: fraction of (same pair, different pair) combinations where the same pair scores higher
  (the ROC AUC);
- ``warp_vs_base``: mean cosine between an unseen warp of a training voice and that voice itself. Near
  ``same`` would mean the warp is the base voice in disguise; near ``different`` means a new speaker.

The corpus build runs it when ``scripts/corpus/make_synthetic_corpus.py`` passes
:func:`check_separability` (``speech.data.synthetic.build_corpus(separability=...)``);
``scripts/corpus/corpus_voice_report.py`` runs it over all speakers.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from speech.audio.io import load_audio
from speech.metrics.speaker.base import SIM_SAMPLE_RATE
from speech.metrics.speaker.resemblyzer_sim import ResemblyzerEmbedder

log = logging.getLogger(__name__)
Record = dict[str, Any]


def measure_separability(root: Path, records: list[Record], *, per_speaker: int = 6) -> dict[str, Any]:
    """Scores speaker separability of the test split of a built corpus (see the module docstring)."""
    test = _pick([r for r in records if r["split"] == "test"], per_speaker)
    bases = {r["speaker"]: r["base_voice"] for r in test if r["heldout"] == "warp"}
    base_records = _pick([r for r in records if r["speaker"] in set(bases.values())], per_speaker)
    if len({r["speaker"] for r in test}) < 2:
        return {"skipped": "fewer than two test speakers"}
    embeddings = _embed(root, test + base_records)
    same, different = _pair_scores(test, embeddings)
    result = {
        "utterances": len(test),
        "speakers": len({r["speaker"] for r in test}),
        "same_pairs": len(same),
        "different_pairs": len(different),
        "same": _mean(same),
        "different": _mean(different),
        "eer": round(equal_error_rate(same, different), 4),
        "ordered": round(ordered_fraction(same, different), 4),
    }
    warp_scores = _warp_vs_base(test, base_records, bases, embeddings)
    result["warp_vs_base"] = _mean(warp_scores)
    result["warp_vs_base_pairs"] = len(warp_scores)
    result["closest_speakers"] = _closest_speakers(test, embeddings)
    return result


def _pick(records: list[Record], per_speaker: int) -> list[Record]:
    chosen: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for record in sorted(records, key=lambda r: r["id"]):
        key = (record["speaker"], record["language"])
        if len(chosen[key]) < per_speaker:
            chosen[key].append(record)
    return [r for key in sorted(chosen) for r in chosen[key]]


def _embed(root: Path, records: list[Record]) -> dict[str, np.ndarray]:
    import torch

    torch.set_num_threads(1)  # deterministic figures, and the build's workers own the cores
    encoder = ResemblyzerEmbedder()
    out = {}
    for record in records:
        wav, _ = load_audio(root / record["path"], sample_rate=SIM_SAMPLE_RATE)
        out[record["id"]] = encoder.embed(wav).astype(np.float64)
    return out


def _pair_scores(records: list[Record], emb: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    same, different = [], []
    by_lang: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        by_lang[record["language"]].append(record)
    for group in by_lang.values():
        vectors = np.stack([emb[r["id"]] for r in group])
        sims = vectors @ vectors.T
        speakers = np.array([r["speaker"] for r in group])
        upper = np.triu_indices(len(group), k=1)
        is_same = speakers[upper[0]] == speakers[upper[1]]
        same.append(sims[upper][is_same])
        different.append(sims[upper][~is_same])
    return np.concatenate(same), np.concatenate(different)


def _warp_vs_base(
    test: list[Record], base_records: list[Record], bases: dict[str, str], emb: dict[str, np.ndarray]
) -> np.ndarray:
    base_by_key: dict[tuple[str, str], list[str]] = defaultdict(list)
    for record in base_records:
        base_by_key[(record["speaker"], record["language"])].append(record["id"])
    scores = [
        float(emb[r["id"]] @ emb[other])
        for r in test
        if r["speaker"] in bases
        for other in base_by_key[(bases[r["speaker"]], r["language"])]
    ]
    return np.array(scores)


def _closest_speakers(records: list[Record], emb: dict[str, np.ndarray], top: int = 5) -> list[list[Any]]:
    """The most similar pairs of different test speakers by the cosine of their mean embeddings."""
    by_speaker: dict[str, list[np.ndarray]] = defaultdict(list)
    for record in records:
        by_speaker[record["speaker"]].append(emb[record["id"]])
    names = sorted(by_speaker)
    centroids = np.stack([np.mean(by_speaker[n], axis=0) for n in names])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    sims = centroids @ centroids.T
    i, j = np.triu_indices(len(names), k=1)
    order = np.argsort(-sims[i, j], kind="stable")[:top]
    return [[names[i[k]], names[j[k]], round(float(sims[i[k], j[k]]), 4)] for k in order]


def equal_error_rate(same: np.ndarray, different: np.ndarray) -> float:
    """EER of accepting a pair as same-speaker when its score reaches a threshold."""
    if not len(same) or not len(different):
        return float("nan")
    thresholds = np.unique(np.concatenate([same, different]))
    false_reject = np.searchsorted(np.sort(same), thresholds, side="left") / len(same)
    false_accept = 1.0 - np.searchsorted(np.sort(different), thresholds, side="left") / len(different)
    k = int(np.argmin(np.abs(false_reject - false_accept)))
    return float((false_reject[k] + false_accept[k]) / 2)


def ordered_fraction(same: np.ndarray, different: np.ndarray) -> float:
    """Fraction of (same, different) score pairs with the same pair higher; ties count one half."""
    if not len(same) or not len(different):
        return float("nan")
    diff = np.sort(different)
    below = np.searchsorted(diff, same, side="left")
    equal = np.searchsorted(diff, same, side="right") - below
    return float(np.sum(below + 0.5 * equal) / (len(same) * len(diff)))


def _mean(values: np.ndarray) -> float:
    return round(float(np.mean(values)), 4) if len(values) else float("nan")


def check_separability(root: Path, records: list[Record], *, per_speaker: int = 6) -> dict[str, Any]:
    """:func:`measure_separability`, logged as one line: the check the corpus build runs."""
    result = measure_separability(root, records, per_speaker=per_speaker)
    log.info(format_separability(result))
    return result


def format_separability(result: dict[str, Any]) -> str:
    """One line for the log."""
    if "skipped" in result:
        return f"speaker separability: skipped ({result['skipped']})"
    return (
        f"speaker separability (resemblyzer, {result['speakers']} test speakers): same-speaker cosine "
        f"{result['same']:.3f} vs different-speaker {result['different']:.3f}, "
        f"EER {100 * result['eer']:.1f} %, "
        f"pairs correctly ordered {100 * result['ordered']:.1f} %; unseen warp vs its base voice "
        f"{result['warp_vs_base']:.3f}"
    )
