"""Emotive renditions of a built synthetic corpus: training utterances re-rendered in acted emotion styles.

The data of the paper's per-emotion LoRA adapters (MiniMax-Speech section 4.1) is ``<reference audio,
text, target emotive audio>``. Here some training utterances of the synthetic corpus are each rendered
once per style of ``emotions.STYLES`` (prosody only: caricatures of emotion, see ``emotions.py``); the
``neutral`` renditions are the speakers' references. Layout of ``<root>``::

    wavs/<speaker>/<source_id>-<emotion>.wav   16-bit mono at the source rate
    manifest.jsonl     one line per rendition: the source's manifest line (so ``load_synthetic`` reads
                       it) with the rendition's id, path and length, plus ``emotion``, ``source_id``
                       and ``style``
    plan.jsonl         every planned rendition (a resumed build compares against it)
    stats.json  rejects.tsv  build.log

Resuming works as in ``build.py``: a rerun renders only the renditions whose wav is missing, unreadable, or
whose plan line changed (style, audio settings, source clip); wavs appear atomically.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from tqdm import tqdm

from speech.audio import world
from speech.audio.io import save_audio
from speech.audio.prosody import measure_prosody
from speech.data.rejects import RejectLog
from speech.data.synthetic.build import BUILD_LOG, REJECTS, STATS
from speech.data.synthetic.catalog import MANIFEST, read_manifest, reconcile_plan, wav_frames, write_jsonl
from speech.data.synthetic.config import AudioConfig, EmotionCorpusConfig
from speech.data.synthetic.emotions import NEUTRAL, STYLES, EmotionStyle, render_style
from speech.data.synthetic.postprocess import normalize_loudness, trim_silence
from speech.data.synthetic.render import PART_SUFFIX, map_in_workers

log = logging.getLogger(__name__)

Record = dict[str, Any]
# Keys of a source manifest line that a rendition replaces or that describe the source clip only.
SOURCE_AUDIO_KEYS = (
    "id",
    "speaker",
    "language",
    "text",
    "split",
    "path",
    "sample_rate",
    "num_samples",
    "duration",
)


@dataclass(frozen=True)
class Rendition:
    """One source utterance in one emotion style.

    Attributes:
        source: The source corpus's manifest line of the utterance.
        emotion: Style name, a key of ``STYLES``.
        audio: Post-processing of the rendition.
    """

    source: Record
    emotion: str
    audio: AudioConfig

    @property
    def id(self) -> str:
        return rendition_id(self.source["id"], self.emotion)

    @property
    def path(self) -> str:
        return f"wavs/{self.source['speaker']}/{self.id}.wav"

    @property
    def style(self) -> EmotionStyle:
        return STYLES[self.emotion]

    def to_dict(self) -> Record:
        """The plan line: everything the wav depends on, so that a changed line means a stale wav."""
        src = self.source
        return {
            "id": self.id,
            "path": self.path,
            "emotion": self.emotion,
            "style": self.style.to_dict(),
            "source_id": src["id"],
            "source_path": src["path"],
            "source_num_samples": src["num_samples"],
            "sample_rate": src["sample_rate"],
            "audio": asdict(self.audio),
        }

    def manifest_record(self, frames: int) -> Record:
        """The manifest line of the rendered wav: the source's line, with the rendition's id and audio."""
        src = self.source
        return {
            "id": self.id,
            "speaker": src["speaker"],
            "language": src["language"],
            "text": src["text"],
            "split": "train",
            "path": self.path,
            "sample_rate": src["sample_rate"],
            "num_samples": frames,
            "duration": round(frames / src["sample_rate"], 6),
            "emotion": self.emotion,
            "source_id": src["id"],
            "style": self.style.to_dict(),
            **{k: v for k, v in src.items() if k not in SOURCE_AUDIO_KEYS},
        }


def rendition_id(source_id: str, emotion: str) -> str:
    """``<source_id>-<emotion>``: the rendition's id and wav name."""
    return f"{source_id}-{emotion}"


@dataclass(frozen=True)
class EmotionTask:
    """Everything one worker needs for one source utterance: render ``todo``, then measure all renditions.

    Attributes:
        source_id: The source utterance's id.
        source_path: The source wav.
        sample_rate: The source corpus rate, which the renditions keep.
        out_paths: Rendition wav of each emotion, keyed by emotion.
        todo: Emotions whose wav is to be rendered (the others exist already).
        audio: Post-processing settings.
    """

    source_id: str
    source_path: str
    sample_rate: int
    out_paths: dict[str, str]
    todo: tuple[str, ...]
    audio: AudioConfig


@dataclass(frozen=True)
class EmotionResult:
    """``failures``: ``(rendition id, reason, detail)``; ``measures``: ``(emotion, Prosody)`` of every
    rendition whose wav exists (``speech.audio.prosody``; ``f0_hz`` NaN when no frame is voiced)."""

    source_id: str
    failures: tuple[tuple[str, str, str], ...] = ()
    measures: tuple[tuple[str, tuple[float, float, float]], ...] = ()


def build_emotion_corpus(
    source_root: str | Path,
    root: str | Path,
    config: EmotionCorpusConfig,
    *,
    num_workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Builds (or resumes building) the emotive renditions of ``source_root`` under ``root``.

    Args:
        source_root: A built synthetic corpus (``scripts/corpus/make_synthetic_corpus.py``).
        root: Output folder; created if needed.
        config: Which utterances, which emotions, and the audio settings.
        num_workers: Rendering processes; 1 renders in this process.
        progress: Show a tqdm progress bar.

    Returns:
        The statistics written to ``<root>/stats.json``: per emotion the rendition count, median F0, median
        duration ratio to the neutral rendition of the same utterance and median RMS level.

    Raises:
        FileNotFoundError: the source corpus is not built (the message gives the command that builds it).
        ValueError: the source has too few training speakers with enough utterances for ``config``.
    """
    started = time.perf_counter()
    source_root, root = Path(source_root), Path(root)
    sources = pick_sources(read_manifest(source_root), config)
    planned = [Rendition(src, emotion, config.audio) for src in sources for emotion in config.emotions]
    root.mkdir(parents=True, exist_ok=True)
    todo = _prepare_resume(root, planned)
    log.info(
        "emotive renditions %s: %d source utterances x %d styles, %d to render (%d already done)",
        root, len(sources), len(config.emotions), len(todo), len(planned) - len(todo),
    )  # fmt: skip
    tasks = _tasks(source_root, root, planned, todo)
    results = _run(tasks, num_workers, progress)
    rejects = RejectLog()
    for failure in sorted(f for r in results for f in r.failures):
        rejects.add(*failure)
    rejects.write(root / REJECTS)
    if rejects:
        log.warning("%s; one line each in %s", rejects.summary(), root / REJECTS)
    records = _write_manifest(root, planned)
    stats = emotion_stats(records, {r.source_id: dict(r.measures) for r in results}, config.emotions)
    stats = {"source": str(source_root), "renditions_planned": len(planned), **stats}
    stats["rejects"] = rejects.counts()
    stats["config"] = config.to_dict()
    (root / STATS).write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    elapsed = time.perf_counter() - started
    with (root / BUILD_LOG).open("a", encoding="utf-8") as f:
        f.write(
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}\t{elapsed:.1f} s\tworkers={num_workers}\t"
            f"rendered={len(todo)}\trenditions={len(records)}\trejects={len(rejects)}\n"
        )
    log.info("built %s in %.1f s: %d renditions, %.1f min", root, elapsed, len(records), stats["minutes"])
    return stats


def pick_sources(records: list[Record], config: EmotionCorpusConfig) -> list[Record]:
    """Draws ``num_speakers`` training speakers and ``utts_per_speaker`` of their utterances in
    ``languages`` with ``seed``; speakers with fewer such utterances are not drawn.

    Returns:
        Source manifest lines sorted by speaker, then id.

    Raises:
        ValueError: fewer eligible speakers than ``num_speakers`` (the message says how many there are).
    """
    by_speaker: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        if record["split"] == "train" and record["language"] in config.languages:
            by_speaker[record["speaker"]].append(record)
    eligible = sorted(s for s, utts in by_speaker.items() if len(utts) >= config.utts_per_speaker)
    if len(eligible) < config.num_speakers:
        raise ValueError(
            f"the source corpus has {len(eligible)} training speakers with >= {config.utts_per_speaker} "
            f"utterances in {config.languages}, fewer than num_speakers={config.num_speakers}; lower "
            "num_speakers or utts_per_speaker, or add languages"
        )
    rng = np.random.default_rng(config.seed)
    speakers = sorted(eligible[int(i)] for i in rng.choice(len(eligible), config.num_speakers, replace=False))
    picked = []
    for speaker in speakers:
        pool = sorted(by_speaker[speaker], key=lambda r: r["id"])
        picked += [
            pool[int(i)] for i in sorted(rng.choice(len(pool), config.utts_per_speaker, replace=False))
        ]
    return picked


def _prepare_resume(root: Path, planned: list[Rendition]) -> set[str]:
    """Writes the plan, deletes wavs that no longer match it, returns the rendition ids still to render."""
    reconcile_plan(root, {r.id: r.to_dict() for r in planned})
    return {r.id for r in planned if wav_frames(root / r.path, r.source["sample_rate"]) is None}


def _tasks(source_root: Path, root: Path, planned: list[Rendition], todo: set[str]) -> list[EmotionTask]:
    by_source: dict[str, list[Rendition]] = defaultdict(list)
    for rendition in planned:
        by_source[rendition.source["id"]].append(rendition)
    tasks = []
    for source_id, renditions in by_source.items():
        src = renditions[0].source
        tasks.append(
            EmotionTask(
                source_id=source_id,
                source_path=str(source_root / src["path"]),
                sample_rate=src["sample_rate"],
                out_paths={r.emotion: str(root / r.path) for r in renditions},
                todo=tuple(r.emotion for r in renditions if r.id in todo),
                audio=renditions[0].audio,
            )
        )
    return tasks


def _run(tasks: list[EmotionTask], num_workers: int, progress: bool) -> list[EmotionResult]:
    results = []
    with tqdm(total=len(tasks), desc="emotive renditions", unit="utt", disable=not progress) as bar:
        for result in map_in_workers(render_source, tasks, num_workers):
            results.append(result)
            bar.update()
    return results


def render_source(task: EmotionTask) -> EmotionResult:
    """Renders the missing renditions of one source utterance and measures all of them.

    Runs in worker processes. Failures (unreadable source, WORLD error, too short or long) come back in
    the result with a reason, never as an exception.
    """
    failures = []
    if task.todo:
        try:
            wav, sr = sf.read(task.source_path, dtype="float32")
            if sr != task.sample_rate or wav.ndim != 1:
                raise ValueError(f"{sr} Hz, {wav.ndim} dims; expected mono at {task.sample_rate} Hz")
            features = world.analyze(wav, sr)
        except (ValueError, RuntimeError, sf.LibsndfileError) as err:
            reason = f"{type(err).__name__}: {err}"
            failures = [(rendition_id(task.source_id, e), "source_failed", reason) for e in task.todo]
        else:
            for emotion in task.todo:
                reason, detail = _render_one(features, emotion, task)
                if reason:
                    failures.append((rendition_id(task.source_id, emotion), reason, detail))
    measures = []
    for emotion, path in task.out_paths.items():
        if wav_frames(Path(path), task.sample_rate) is not None:
            measures.append((emotion, measure_prosody(sf.read(path, dtype="float32")[0], task.sample_rate)))
    return EmotionResult(task.source_id, tuple(failures), tuple(measures))


def _render_one(features: world.WorldFeatures, emotion: str, task: EmotionTask) -> tuple[str, str]:
    """Styles, trims, checks, normalizes and writes one rendition; returns ``(reason, detail)``, empty
    on success."""
    cfg, sr, style = task.audio, task.sample_rate, STYLES[emotion]
    try:
        wav = render_style(features, style)
    except (ValueError, RuntimeError) as err:
        return "world_failed", f"{type(err).__name__}: {err}"
    wav = trim_silence(wav, sr, margin=cfg.trim_margin, threshold_db=cfg.trim_threshold_db)
    if wav.size == 0:
        return "silent_output", "nothing above the silence threshold"
    seconds = wav.size / sr
    if seconds < cfg.min_duration:
        return "too_short", f"{seconds:.2f} s < {cfg.min_duration} s"
    if seconds > cfg.max_duration:
        return "too_long", f"{seconds:.2f} s > {cfg.max_duration} s"
    wav = normalize_loudness(wav, sr, target_db=cfg.loudness_db + style.gain_db, peak=cfg.peak)
    out = Path(task.out_paths[emotion])
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.stem + PART_SUFFIX)
    save_audio(part, wav, sr)
    os.replace(part, out)
    return "", ""


def _write_manifest(root: Path, planned: list[Rendition]) -> list[Record]:
    """Writes ``manifest.jsonl`` with every planned rendition whose wav is complete; returns its records."""
    records = []
    for rendition in planned:
        frames = wav_frames(root / rendition.path, rendition.source["sample_rate"])
        if frames is not None:
            records.append(rendition.manifest_record(frames))
    write_jsonl(root / MANIFEST, records)
    return records


def emotion_stats(
    records: list[Record], measures: dict[str, dict[str, tuple[float, float, float]]], emotions: list[str]
) -> dict[str, Any]:
    """Sizes, and per emotion the medians that show the styles differ as intended.

    Args:
        records: Manifest lines of the rendered renditions.
        measures: Source id -> emotion -> ``Prosody`` (f0 Hz, seconds, RMS dB), from
            ``speech.audio.prosody.measure_prosody``.
        emotions: The configured emotions, in order.

    Returns:
        ``renditions``, ``speakers``, ``source_utterances``, ``minutes`` and ``emotions``: per emotion
        ``count``, ``minutes``, ``median_f0_hz``, ``median_duration_ratio`` (to the neutral rendition of the
        same utterance) and ``median_rms_db``.
    """
    per_emotion: dict[str, Any] = {}
    rendered = {(r["source_id"], r["emotion"]) for r in records}
    for emotion in emotions:
        rows = [
            (m[emotion], m.get(NEUTRAL))
            for s, m in measures.items()
            if (s, emotion) in rendered and emotion in m
        ]
        f0 = [own.f0_hz for own, _ in rows if not np.isnan(own.f0_hz)]
        ratios = [own.seconds / neutral.seconds for own, neutral in rows if neutral is not None]
        per_emotion[emotion] = {
            "count": len(rows),
            "minutes": round(sum(own.seconds for own, _ in rows) / 60, 2),
            "median_f0_hz": _median(f0, 1),
            "median_duration_ratio": _median(ratios, 3),
            "median_rms_db": _median([own.rms_db for own, _ in rows], 1),
        }
    return {
        "renditions": len(records),
        "speakers": len({r["speaker"] for r in records}),
        "source_utterances": len({r["source_id"] for r in records}),
        "minutes": round(sum(r["duration"] for r in records) / 60, 2),
        "sample_rates": sorted({r["sample_rate"] for r in records}),
        "emotions": per_emotion,
    }


def _median(values: list[float], digits: int) -> float | None:
    return round(statistics.median(values), digits) if values else None
