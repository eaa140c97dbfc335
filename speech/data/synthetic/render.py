"""Rendering one planned utterance to its wav file: synthesize, resample, warp, trim, normalize, write.

Runs inside worker processes, so a task carries everything it needs and is picklable. The file appears
under its final name only when complete (written to a ``.part.wav`` sibling, then renamed), so a killed
build never leaves a truncated wav that a resumed build would take for finished.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speech.audio.io import resample, save_audio
from speech.data.synthetic.config import AudioConfig
from speech.data.synthetic.engines import synthesize
from speech.data.synthetic.kokoro import KokoroVoice
from speech.data.synthetic.postprocess import normalize_loudness, trim_silence
from speech.data.synthetic.programs import EngineError
from speech.data.synthetic.warp import Warp, apply_warp

PART_SUFFIX = ".part.wav"

log = logging.getLogger(__name__)


def map_in_workers(fn: Callable[[Any], Any], tasks: Sequence[Any], num_workers: int) -> Iterator[Any]:
    """``fn`` over picklable ``tasks``, in this process (``num_workers <= 1``) or in ``num_workers`` spawned
    processes; results come in the order they finish.

    Spawned workers start clean (no inherited threads or torch state) on every platform. They ignore
    Ctrl-C: the parent stops them, and what they finished stays for the next run.
    """
    if num_workers <= 1 or len(tasks) <= 1:
        yield from map(fn, tasks)
        return
    with mp.get_context("spawn").Pool(num_workers, initializer=_ignore_sigint) as pool:
        try:
            yield from pool.imap_unordered(fn, tasks, chunksize=1)
        except KeyboardInterrupt:
            log.warning("interrupted: rerun the same command to continue where it stopped")
            raise


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclass(frozen=True)
class RenderTask:
    """Everything one worker needs to render one utterance."""

    utt_id: str
    out_path: str
    engine: str
    voice: str
    language: str
    text: str
    warp: Warp
    sample_rate: int
    audio: AudioConfig
    kokoro: KokoroVoice | None = None


@dataclass(frozen=True)
class RenderResult:
    """``reason`` is empty on success, else a short category; ``detail`` says more in one line."""

    utt_id: str
    reason: str = ""
    detail: str = ""


def render(task: RenderTask) -> RenderResult:
    """Renders one utterance; failures come back as a result with a reason, never as an exception."""
    try:
        wav, sr = synthesize(task.engine, task.voice, task.language, task.text, kokoro=task.kokoro)
    except EngineError as err:
        return RenderResult(task.utt_id, "engine_failed", str(err))
    cfg = task.audio
    wav = resample(wav, sr, task.sample_rate)
    wav = trim_silence(wav, task.sample_rate, margin=cfg.trim_margin, threshold_db=cfg.trim_threshold_db)
    if wav.size and not task.warp.is_identity:
        try:
            wav = apply_warp(wav, task.sample_rate, task.warp)
        except (ValueError, RuntimeError) as err:  # WORLD rejects e.g. clips too short to analyse
            return RenderResult(task.utt_id, "warp_failed", f"{type(err).__name__}: {err}")
        wav = trim_silence(wav, task.sample_rate, margin=cfg.trim_margin, threshold_db=cfg.trim_threshold_db)
    if wav.size == 0:
        return RenderResult(task.utt_id, "silent_output", "nothing above the silence threshold")
    seconds = wav.size / task.sample_rate
    if seconds < cfg.min_duration:
        return RenderResult(task.utt_id, "too_short", f"{seconds:.2f} s < {cfg.min_duration} s")
    if seconds > cfg.max_duration:
        return RenderResult(task.utt_id, "too_long", f"{seconds:.2f} s > {cfg.max_duration} s")
    wav = normalize_loudness(wav, task.sample_rate, target_db=cfg.loudness_db, peak=cfg.peak)
    out = Path(task.out_path)
    part = out.with_name(out.stem + PART_SUFFIX)
    save_audio(part, wav, task.sample_rate)
    os.replace(part, out)
    return RenderResult(task.utt_id)
