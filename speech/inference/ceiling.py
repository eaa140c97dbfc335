"""The ceiling rows of an evaluation: how much intelligibility each stage leaves before the AR model.

Two renderings of a test set's ground truth, scored like clones, isolate where speech is lost:

- ``resynthesis``: ground truth -> Flow-VAE encoder (posterior mean) -> Flow-VAE decoder. The decoder's
  ceiling: no clone can be clearer than this.
- ``oracle_tokens``: ground truth -> audio tokenizer -> flow matching (speaker vector of the prompt wav,
  as in zero-shot cloning) -> Flow-VAE decoder. The ceiling of everything after the AR model: what a
  perfect AR model (one that predicts the ground truth's tokens) would give.

A zero-shot clone scored against these rows shows which stage to train longer: a bad resynthesis row
points at the Flow-VAE, a good resynthesis but bad oracle row at the tokenizer or flow matching, and good
ceilings with bad clones at the AR model. Neither row reads the AR model, so :class:`CeilingModels` loads
them without one: a pipeline can score its ceilings while its AR model still trains.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from speech.data.meta_list import MetaEntry, read_meta_list
from speech.data.rejects import RejectLog
from speech.inference import audio_output
from speech.inference.batch_runner import RunSummary
from speech.inference.loading import load_after_ar
from speech.inference.request import SamplingSetting
from speech.inference.voice import VoiceEncoder, load_reference
from speech.tensors import pad_sequences

KINDS = ("resynthesis", "oracle_tokens")


@dataclass
class CeilingModels:
    """The stages after the AR model: what the ceiling rows render through.

    Attributes:
        voice: Reference waveforms -> audio tokens, posterior-mean latents and flow matching's speaker
            vectors (its AR speaker encoder is not needed).
        fm: ``FlowMatching``.
        flow_vae: ``FlowVAE`` (its decoder).
    """

    voice: VoiceEncoder
    fm: torch.nn.Module
    flow_vae: torch.nn.Module

    @property
    def sample_rate(self) -> int:
        return self.voice.sample_rate

    @classmethod
    def from_checkpoints(
        cls,
        flow_matching: str | Path,
        tokenizer: str | Path | None = None,
        flow_vae: str | Path | None = None,
        *,
        device: str | torch.device = "cpu",
        use_ema: bool = True,
    ) -> CeilingModels:
        """Flow matching and its upstream tokenizer and Flow-VAE (``None``: the paths its config stores),
        without an AR model (``speech.inference.loading.load_after_ar``)."""
        models = load_after_ar(flow_matching, tokenizer, flow_vae, device=device, use_ema=use_ema)
        fm = models["flow_matching"]
        voice = VoiceEncoder(
            models["mel"],
            None,
            fm.speaker_vector,
            models["audio_tokenizer"],
            models["flow_vae"],
            frames_per_token=fm.frames_per_token,
            max_reference_seconds=(None, models["max_reference_seconds"]),
        )
        return cls(voice, fm, models["flow_vae"])


@torch.inference_mode()
def render_ceiling(
    models: CeilingModels,
    kind: str,
    truths: Sequence[np.ndarray],
    references: Sequence[np.ndarray],
    sampling: SamplingSetting | None = None,
) -> list[np.ndarray]:
    """Renders ground-truth waveforms through the stages after the AR model.

    Args:
        models: The stages after the AR model.
        kind: ``resynthesis`` or ``oracle_tokens`` (see the module docstring).
        truths: Ground-truth waveforms ``(t,)`` at ``models.sample_rate``.
        references: One speaker reference ``(t,)`` per truth (``oracle_tokens`` conditions flow matching on
            its speaker vector; ``resynthesis`` ignores it).
        sampling: Flow-matching knobs (steps, solver, guidance, noise, seed); ``None``: the defaults.

    Returns:
        One waveform ``(t_i,)`` per truth, float32 at ``models.sample_rate``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    if len(truths) != len(references):
        raise ValueError(f"{len(truths)} truths but {len(references)} references")
    if not truths:
        return []
    if kind == "resynthesis":  # posterior means, cut to two frames per token as prompts are
        latents, latent_lens, _ = pad_sequences([p.latents for p in models.voice.prompts(list(truths))])
    else:
        sampling = sampling or SamplingSetting()
        generator = None
        if sampling.seed is not None:
            device = next(models.fm.parameters()).device
            generator = torch.Generator(device=device).manual_seed(sampling.seed)
        tokens, token_lens, _ = pad_sequences(models.voice.tokens(list(truths)))
        speaker = models.voice.fm_vectors(list(references))
        latents, latent_lens = models.fm.sample(
            tokens=tokens,
            token_lens=token_lens,
            speaker=speaker,
            **sampling.fm_options(),
            generator=generator,
        )
    audio = models.flow_vae.decode(latents, latent_lens)
    audio_lens = latent_lens * models.flow_vae.hop_length
    return [audio[i, : int(n)].float().cpu().numpy() for i, n in enumerate(audio_lens.tolist())]


def ceiling_batches(
    entries: Sequence[MetaEntry], sample_rate: int, batch_size: int
) -> Iterator[tuple[list[MetaEntry], list[np.ndarray], list[np.ndarray]]]:
    """``(entries, truths, references)`` in batches of similar length, read from each line's ``gt_wav``
    and ``prompt_wav``.

    Raises:
        ValueError: a line has no ``gt_wav`` (the fifth ``meta.lst`` field), naming it.
    """
    missing = [e.utt for e in entries if e.gt_wav is None]
    if missing:
        raise ValueError(
            f"{len(missing)} meta.lst lines have no gt_wav (fifth field), e.g. {missing[0]}: ceiling rows "
            "render the ground truth"
        )
    ordered = sorted(entries, key=lambda e: Path(e.gt_wav).stat().st_size)
    for start in range(0, len(ordered), batch_size):
        chunk = ordered[start : start + batch_size]
        truths = [load_reference(e.gt_wav, sample_rate) for e in chunk]
        references = [load_reference(e.prompt_wav, sample_rate) for e in chunk]
        yield chunk, truths, references


def run_ceiling(
    models: CeilingModels,
    meta: str | Path,
    out_dir: str | Path,
    *,
    kind: str,
    sampling: SamplingSetting | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> RunSummary:
    """Renders every line of ``meta`` not yet in ``out_dir`` as ``<out_dir>/<utt>.wav`` (resumable, like
    ``batch_runner.run_meta``), so that ``eval/seedtts_eval.py`` scores it like a clone.

    Args:
        models: The stages after the AR model.
        meta: A Seed-TTS-eval ``meta.lst`` whose lines carry ``gt_wav``.
        out_dir: Where the wavs go.
        kind: ``resynthesis`` or ``oracle_tokens``.
        sampling: Flow-matching knobs of ``oracle_tokens``.
        batch_size: Utterances rendered together.
        progress: Show a tqdm bar.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    out_dir = audio_output.check_folder(out_dir)
    rejects = RejectLog()
    entries = read_meta_list(meta, rejects=rejects)
    todo = [e for e in entries if not (out_dir / f"{e.utt}.wav").exists()]
    audio_seconds, start = 0.0, time.perf_counter()
    with tqdm(total=len(todo), disable=not progress, desc=kind, unit="utt") as bar:
        for chunk, truths, references in ceiling_batches(todo, models.sample_rate, batch_size):
            for entry, wav in zip(
                chunk, render_ceiling(models, kind, truths, references, sampling), strict=True
            ):
                audio_output.write(out_dir / f"{entry.utt}.wav", wav, models.sample_rate, "wav")
                audio_seconds += len(wav) / models.sample_rate
            bar.update(len(chunk))
    if len(rejects):
        rejects.write(out_dir / "rejects.tsv")
    skipped = len(entries) - len(todo)
    return RunSummary(len(todo), skipped, len(rejects), audio_seconds, time.perf_counter() - start)
