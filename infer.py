"""Speech from trained checkpoints: one utterance, or a whole Seed-TTS meta.lst (configs/entry/infer.yaml).

python infer.py ar_ckpt=A.ckpt fm_ckpt=F.ckpt text="Hello there." ref_wav=ref.wav out=out.wav
python infer.py ar_ckpt=A.ckpt fm_ckpt=F.ckpt text="Hello there." ref_wav=ref.wav out=out.wav stream=true
python infer.py ar_ckpt=A.ckpt fm_ckpt=F.ckpt meta=seedtts/en/meta.lst out_dir=out/en mode=one_shot
python infer.py ... emotion_adapters=[logs/ar_emotion_tiny/happy/checkpoints/last.ckpt] voice.emotion=happy
python infer.py fm_ckpt=F.ckpt meta=seedtts/en/meta.lst out_dir=out/oracle mode=oracle_tokens

The modes ``resynthesis`` and ``oracle_tokens`` render a meta.lst's ground truth through the stages after the
AR model (``speech.inference.ceiling``): the ceiling rows of an evaluation. They load no AR model (an
``ar_ckpt`` is not read); the tokenizer and Flow-VAE are flow matching's upstream unless given.

A user error (a bad argument or request field, missing or mismatched files, unusable audio, an output path
that cannot be written: ``ValueError`` and ``FileNotFoundError``) prints one line, ``error: <message>``, to
stderr and exits with status 2; ``debug=true`` or ``HYDRA_FULL_ERROR=1`` raises it with its traceback instead.
Where the audio goes (``out``'s suffix and folder, ``out_dir``) is checked before any model is loaded.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from speech.inference import SynthesisRequest, Synthesizer, audio_output
from speech.inference.batch_runner import MODES, RunSummary, run_meta
from speech.inference.ceiling import KINDS as CEILINGS
from speech.inference.ceiling import CeilingModels, run_ceiling

NO_AR = "only mode=resynthesis and mode=oracle_tokens (with a meta.lst) render without one"
USER_ERRORS = (ValueError, FileNotFoundError)  # RequestError, AudioError, MetaListError are ValueErrors
USAGE_EXIT_STATUS = 2


def request_factory(cfg: DictConfig) -> functools.partial:
    """``SynthesisRequest`` with the run's language, voice, audio, sampling and pronunciation settings."""
    pronunciations = cfg.pronunciation_dict
    if pronunciations is not None:
        pronunciations = OmegaConf.to_container(pronunciations, resolve=True)
    return functools.partial(
        SynthesisRequest,
        language=cfg.language,
        voice=instantiate(cfg.voice),
        audio=instantiate(cfg.audio),
        sampling=instantiate(cfg.sampling),
        pronunciation_dict=pronunciations,
    )


def single_request(cfg: DictConfig, make: functools.partial) -> SynthesisRequest:
    """The request of ``text``, ``ref_wav``, ``prompt_text`` and ``stream``."""
    return make(text=cfg.text, reference=cfg.ref_wav, prompt_text=cfg.prompt_text, stream=cfg.stream)


def synthesize_one(synth: Synthesizer, cfg: DictConfig, make: functools.partial) -> dict[str, float]:
    """``text`` (+ ``ref_wav``, optional ``prompt_text``) -> ``out``; prints and returns the RTF (warnings
    about the request go to stderr)."""
    out = Path(cfg.out)
    request = single_request(cfg, make)
    start = time.perf_counter()
    if not cfg.stream:
        result = synth.synthesize(request)
        wall = time.perf_counter() - start
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        result.save(out)
        audio_seconds, extra = result.duration, {}
    else:
        chunks, first = [], None
        for chunk in synth.stream(request, chunk_tokens=cfg.chunk_tokens):
            first = time.perf_counter() - start if first is None else first
            chunks.append(chunk)
        wall = time.perf_counter() - start
        rate = request.audio.sample_rate or synth.sample_rate
        audio = np.concatenate(chunks)
        audio_output.write(out, audio, rate, request.audio.format, request.audio.bitrate)
        audio_seconds, extra = len(audio) / rate, {"first_chunk_seconds": first, "chunks": len(chunks)}
        print(f"streamed {len(chunks)} chunks, the first after {first:.2f} s")
    rtf = wall / audio_seconds if audio_seconds else float("nan")
    speed = f", RTF {rtf:.3f}" if audio_seconds else ""
    print(f"wrote {out}: {audio_seconds:.2f} s of audio in {wall:.2f} s{speed}")
    return {"audio_seconds": audio_seconds, "wall_seconds": wall, "rtf": rtf, **extra}


def check_args(cfg: DictConfig, make: functools.partial) -> None:
    """Fails on a wrong command line before any model is loaded: the options, where the audio goes (``out``'s
    suffix and folder, or ``out_dir``: ``audio_output.check_destination``, ``check_folder``), and the
    request (one utterance) or the settings every line's request gets (a meta.lst)."""
    if cfg.voice.emotion is not None and not cfg.emotion_adapters:
        raise ValueError(
            f"voice.emotion={cfg.voice.emotion} needs its adapter: emotion_adapters=[<ar_adapter checkpoint>]"
        )
    if cfg.meta is not None:
        if cfg.out_dir is None:
            raise ValueError("meta=... needs out_dir=... (where the <utt>.wav files go)")
        if cfg.mode not in MODES + CEILINGS:
            raise ValueError(f"mode must be one of {list(MODES + CEILINGS)}, got {cfg.mode!r}")
        if cfg.ar_ckpt is None and cfg.mode not in CEILINGS:
            raise ValueError(f"mode={cfg.mode} needs ar_ckpt=<the AR checkpoint>; {NO_AR}")
        if cfg.stream:
            raise ValueError("stream=true streams one utterance (text=...), not a meta.lst")
        for setting in ("voice", "audio", "sampling"):
            make.keywords[setting].validate()
        audio_output.check_folder(cfg.out_dir)
        return
    if cfg.text is None or cfg.ref_wav is None:
        raise ValueError(
            "give text=... and ref_wav=... for one utterance, or meta=... out_dir=... for a meta.lst"
        )
    if cfg.ar_ckpt is None:
        raise ValueError(f"one utterance needs ar_ckpt=<the AR checkpoint>; {NO_AR}")
    request = single_request(cfg, make)
    request.validate()
    audio_output.check_destination(cfg.out, request.audio.format)


@hydra.main(config_path="configs", config_name="entry/infer", version_base="1.3")
def main(cfg: DictConfig) -> dict[str, float]:
    """Runs :func:`infer`; a user error ends in one line on stderr (see the module docstring)."""
    try:
        return infer(cfg)
    except USER_ERRORS as err:
        if cfg.debug or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(USAGE_EXIT_STATUS)


def infer(cfg: DictConfig) -> dict[str, float]:
    """Loads the checkpoints and synthesizes one utterance or a meta.lst; returns the run's numbers."""
    make = request_factory(cfg)
    check_args(cfg, make)
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.meta is not None and cfg.mode in CEILINGS:
        models = CeilingModels.from_checkpoints(
            cfg.fm_ckpt, cfg.tokenizer_ckpt, cfg.flow_vae_ckpt, device=device, use_ema=cfg.use_ema
        )
        sampling = instantiate(cfg.sampling)
        return report(run_ceiling(models, cfg.meta, cfg.out_dir, kind=cfg.mode, sampling=sampling,
                                  batch_size=cfg.batch_size, progress=cfg.progress))  # fmt: skip
    synth = Synthesizer.from_checkpoints(
        cfg.ar_ckpt,
        cfg.fm_ckpt,
        cfg.tokenizer_ckpt,
        cfg.flow_vae_ckpt,
        device=device,
        use_ema=cfg.use_ema,
        max_segment_tokens=cfg.max_segment_tokens,
        emotion_adapters=list(cfg.emotion_adapters),
    )
    if cfg.meta is None:
        return synthesize_one(synth, cfg, make)
    summary = run_meta(synth, cfg.meta, cfg.out_dir, mode=cfg.mode, make=make, batch_size=cfg.batch_size,
                       progress=cfg.progress)  # fmt: skip
    return report(summary)


def report(summary: RunSummary) -> dict[str, float]:
    """Prints a meta.lst run's line and returns its numbers."""
    print(summary.line())
    return {"generated": summary.generated, "skipped": summary.skipped, "rejected": summary.rejected,
            "audio_seconds": summary.audio_seconds, "rtf": summary.rtf}  # fmt: skip


if __name__ == "__main__":
    main()
