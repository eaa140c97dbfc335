"""Batch inference over a Seed-TTS ``meta.lst``: one ``<out_dir>/<utt>.<format>`` per line, resumable.

Zero-shot uses each line's ``prompt_wav`` as the speaker reference only; one-shot also prompts the models
with its ``prompt_text`` and audio (and cuts the prompt from the output). Lines whose output already exists
are skipped, so an interrupted run continues where it stopped; malformed lines and unusable requests are
reported (``rejects.tsv`` in ``out_dir``) and the rest is processed; a line's warnings (a quiet reference, a
one-shot prompt cut to fit the AR model) are logged with its utt. ``out_dir`` is checked to take files before
anything is generated; a line whose audio cannot be written (NaN samples from a broken model) is rejected too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from speech.data.meta_list import MetaEntry, read_meta_list
from speech.data.rejects import RejectLog
from speech.inference import audio_output
from speech.inference.request import RequestError, SynthesisRequest
from speech.inference.synthesizer import Synthesizer

MODES = ("zero_shot", "one_shot")

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What a run did; ``rtf`` is synthesis time over generated audio time (lower is faster; NaN when nothing
    was generated, and then left out of :meth:`line`)."""

    generated: int
    skipped: int
    rejected: int
    audio_seconds: float
    wall_seconds: float

    @property
    def rtf(self) -> float:
        return self.wall_seconds / self.audio_seconds if self.audio_seconds else float("nan")

    def line(self) -> str:
        made = f"generated {self.generated} utterances"
        if self.audio_seconds:
            made += f" ({self.audio_seconds:.1f} s of audio) in {self.wall_seconds:.1f} s, RTF {self.rtf:.3f}"
        return f"{made}; skipped {self.skipped} existing, rejected {self.rejected}"


def entry_request(entry: MetaEntry, mode: str, make: Callable[..., SynthesisRequest]) -> SynthesisRequest:
    """The request of one meta line; ``make(text=, reference=, prompt_text=)`` adds the run's settings."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    prompt_text = entry.prompt_text if mode == "one_shot" else None
    if mode == "one_shot" and not prompt_text:
        raise RequestError("prompt_text", "one-shot needs the meta line's prompt_text, which is empty")
    return make(text=entry.target_text, reference=entry.prompt_wav, prompt_text=prompt_text)


def run_meta(
    synth: Synthesizer,
    meta: str | Path,
    out_dir: str | Path,
    *,
    mode: str,
    make: Callable[..., SynthesisRequest],
    batch_size: int = 8,
    progress: bool = True,
) -> RunSummary:
    """Synthesizes every line of ``meta`` not yet in ``out_dir``.

    Args:
        synth: The pipeline.
        meta: A Seed-TTS-eval ``meta.lst``.
        out_dir: Where ``<utt>.<format>`` files go.
        mode: ``zero_shot`` or ``one_shot``.
        make: Builds a request from ``text``, ``reference`` and ``prompt_text`` (the run's voice, audio and
            sampling settings).
        batch_size: Requests synthesized together.
        progress: Show a tqdm bar.

    Raises:
        audio_output.OutputError: ``out_dir`` cannot be created or written (checked before anything is
            generated).
    """
    out_dir = audio_output.check_folder(out_dir)
    rejects = RejectLog()
    entries = read_meta_list(meta, rejects=rejects)
    todo, skipped = [], 0
    for entry in entries:
        try:
            request = entry_request(entry, mode, make)
            request.validate()
        except RequestError as err:
            rejects.add(entry.utt, "bad_request", str(err))
            continue
        path = out_dir / f"{entry.utt}.{request.audio.format}"
        if path.exists():
            skipped += 1
            continue
        todo.append((path, request))
    todo.sort(key=lambda item: _length(item[1]))
    audio_seconds, generated, start = 0.0, 0, time.perf_counter()
    with tqdm(total=len(todo), disable=not progress, desc="synthesizing", unit="utt") as bar:
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            for (path, _), result in _synthesize(synth, chunk, rejects):
                for warning in result.warnings:
                    log.warning("%s: %s", path.stem, warning)
                try:
                    result.save(path)
                except audio_output.OutputError:  # the folder or the disk: every other line would fail too
                    raise
                except ValueError as err:  # this line's audio: non-finite samples
                    rejects.add(path.stem, "bad_output", str(err))
                    continue
                audio_seconds += result.duration
                generated += 1
            bar.update(len(chunk))
    if len(rejects):
        rejects.write(out_dir / "rejects.tsv")
    elif (out_dir / "rejects.tsv").exists():  # from an earlier run of a since corrected meta.lst
        (out_dir / "rejects.tsv").unlink()
    return RunSummary(generated, skipped, len(rejects), audio_seconds, time.perf_counter() - start)


def _length(request: SynthesisRequest) -> int:
    """What sorts a batch's requests so that similar lengths go together (less padding): the text's
    characters, and a one-shot prompt's, whose tokens and latents flow matching carries in front of the
    new ones (sorting one-shot rows by their text alone padded each batch to its longest prompt)."""
    return len(request.text) + len(request.prompt_text or "")


def _synthesize(synth: Synthesizer, chunk: list, rejects: RejectLog) -> list:
    """``(path, result)`` of a chunk of ``(path, request)``; a request whose audio turns out unusable
    (e.g. an unreadable prompt wav) is rejected and the rest synthesized."""
    while chunk:
        try:
            return list(zip(chunk, synth.synthesize_batch([r for _, r in chunk], len(chunk)), strict=True))
        except RequestError as err:
            if err.index is None:
                raise
            path, _ = chunk.pop(err.index)
            rejects.add(path.stem, "bad_request", str(err.for_request(None)))  # the utt names the request
    return []
