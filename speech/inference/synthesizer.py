"""Text + reference voice -> speech: the AR Transformer, flow matching and the Flow-VAE decoder in a row.

Legend: b batch, n text tokens, k audio tokens (25 Hz), l latent frames (50 Hz), d latent dim, t samples.

For each text segment (the text between pause markers ``<#x#>``)::

    speaker vectors <- AR's and FM's speaker encoders on the reference mel (weighted mix: timbre_weights)
    tokens (b, k)   <- AR generate(text [, prompt text + prompt tokens])
    latents (b, l)  <- FM sample(prompt tokens ⊕ tokens [, prompt latents]), l = 2k
    audio (b, t)    <- Flow-VAE decode(latents), t = 320 l

One-shot: the reference's transcript, audio tokens and latents prompt the models, and only the audio after
the prompt is kept.

Segments of many requests are generated together in batches (rows padded, the models take ``*_lens``);
requests share a batch when they have the same mode (zero-/one-shot) and the same sampling knobs. Each
request's segments and pauses are then joined and rendered to its ``audio_setting``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from speech.audio.io import AudioError
from speech.data.collate import pad_sequences
from speech.inference import audio_output
from speech.inference.loading import load_pipeline
from speech.inference.request import RequestError, SynthesisRequest
from speech.inference.text_frontend import Segment, encode_text, split_text
from speech.inference.voice import Prompt, VoiceEncoder, load_reference
from speech.text.bpe import TextTokenizer
from speech.text.pauses import Pause


@dataclass
class SynthesisResult:
    """One request's speech.

    Attributes:
        audio: ``(t,)`` mono or ``(t, 2)`` float32 at ``sample_rate``, volume applied (not yet clipped).
        sample_rate: The output rate (``audio_setting.sample_rate`` or the model's).
        format: The requested file format; :meth:`to_bytes` encodes it.
        token_counts: New audio tokens generated for each text segment.
        model_samples: Length of the speech at the model's rate, pauses included.
    """

    audio: np.ndarray
    sample_rate: int
    format: str
    token_counts: list[int] = field(default_factory=list)
    model_samples: int = 0

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return self.audio.shape[0] / self.sample_rate

    def to_bytes(self) -> bytes:
        """The audio as a file in ``format``."""
        return audio_output.encode(self.audio, self.sample_rate, self.format)

    def save(self, path: str | Path) -> None:
        """Writes :meth:`to_bytes` to ``path`` (atomically)."""
        audio_output.write(path, self.audio, self.sample_rate, self.format)


@dataclass
class _Job:
    """A request made ready: its text segments and pauses, voice references and one-shot prompt."""

    request: SynthesisRequest
    parts: list[Segment | Pause]
    voices: list[tuple[np.ndarray, float]]
    prompt_text: list[int] | None = None
    speakers: tuple[torch.Tensor, torch.Tensor] | None = None  # (ar (c,), fm (c,))
    prompt: Prompt | None = None
    audio: dict[int, np.ndarray] = field(default_factory=dict)  # part index -> waveform
    tokens: dict[int, int] = field(default_factory=dict)  # part index -> new tokens


class Synthesizer:
    """Zero-shot and one-shot synthesis with the trained models; build it with :meth:`from_checkpoints`.

    Args:
        ar: ``ARTransformer`` (with its speaker encoder).
        flow_matching: ``FlowMatching`` (with its own speaker encoder).
        audio_tokenizer: ``AudioTokenizer`` (one-shot: prompt audio -> prompt tokens).
        flow_vae: ``FlowVAE`` (decoder: latents -> audio; encoder: one-shot prompt latents).
        text_tokenizer: The AR model's text BPE.
        mel: The log-mel front end every model was trained with.
        max_reference_seconds: ``(AR, flow matching)``: seconds of a reference each speaker encoder reads
            (``None``: all of it).
    """

    def __init__(
        self,
        ar: nn.Module,
        flow_matching: nn.Module,
        audio_tokenizer: nn.Module,
        flow_vae: nn.Module,
        text_tokenizer: TextTokenizer,
        mel: nn.Module,
        *,
        max_reference_seconds: tuple[float | None, float | None] = (None, None),
    ) -> None:
        self.ar, self.fm, self.flow_vae = ar.eval(), flow_matching.eval(), flow_vae.eval()
        self.text_tokenizer, self.mel = text_tokenizer, mel
        self.voice = VoiceEncoder(
            mel,
            ar.speaker_vector,
            flow_matching.speaker_vector,
            audio_tokenizer.eval(),
            flow_vae,
            frames_per_token=flow_matching.frames_per_token,
            max_reference_seconds=max_reference_seconds,
        )

    @classmethod
    def from_checkpoints(
        cls,
        ar: str | Path,
        flow_matching: str | Path,
        tokenizer: str | Path | None = None,
        flow_vae: str | Path | None = None,
        *,
        device: str | torch.device = "cpu",
        use_ema: bool = True,
    ) -> Synthesizer:
        """Rebuilds every model from checkpoint files alone (``speech.inference.loading.load_pipeline``).

        Args:
            ar, flow_matching: Checkpoints written by train.py for the AR and flow-matching stages.
            tokenizer, flow_vae: Upstream checkpoints; ``None`` takes the ``upstream`` paths stored in the
                AR / flow-matching configs.
            device: Where the models run.
            use_ema: Use a checkpoint's EMA weights when it has them.
        """
        return cls(**load_pipeline(ar, flow_matching, tokenizer, flow_vae, device=device, use_ema=use_ema))

    @property
    def sample_rate(self) -> int:
        """The models' audio rate."""
        return self.voice.sample_rate

    @property
    def device(self) -> torch.device:
        return next(self.ar.parameters()).device

    def synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        """One request; see :meth:`synthesize_batch`."""
        return self.synthesize_batch([request])[0]

    def synthesize_batch(
        self, requests: Sequence[SynthesisRequest], batch_size: int = 8
    ) -> list[SynthesisResult]:
        """Synthesizes requests, generating up to ``batch_size`` text segments at a time.

        Raises:
            RequestError: a request is invalid (the message starts with ``requests[i]`` and the field).
            NotImplementedError: a request sets an option that is not implemented yet.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        jobs = [self._prepare(i, r) for i, r in enumerate(requests)]
        for batch in self._batches(jobs, batch_size):
            self._condition([job for job, _ in batch])
            self._generate(batch, batch[0][0].request.sampling)
        return [self._assemble(job) for job in jobs]

    # ------------------------------------------------------------------------------------------ steps
    def _prepare(self, index: int, request: SynthesisRequest) -> _Job:
        """Validates one request and turns its text and references into model inputs."""
        try:
            request.validate()
            parts, prompt_text = self._encode_texts(request)
            voices = [(self._load(ref, request), w) for ref, w in request.voices()]
        except RequestError as err:
            raise err.for_request(index) from err
        except NotImplementedError as err:
            raise NotImplementedError(f"requests[{index}]: {err}") from err
        return _Job(request, parts, voices, prompt_text)

    def _load(self, reference, request: SynthesisRequest) -> np.ndarray:
        try:
            return load_reference(reference, self.sample_rate, request.reference_sample_rate)
        except AudioError as err:
            raise RequestError("reference", str(err)) from err

    def _encode_texts(self, request: SynthesisRequest) -> tuple[list[Segment | Pause], list[int] | None]:
        """The text's segments and pauses, and the one-shot prompt text's BPE ids (``None``: zero-shot)."""
        try:
            parts = split_text(request.text, request.language, self.text_tokenizer, request.pronunciations())
        except ValueError as err:
            raise RequestError("text", str(err)) from err
        if not request.one_shot:
            return parts, None
        try:
            return parts, encode_text(request.prompt_text, request.language, self.text_tokenizer).tokens
        except ValueError as err:
            raise RequestError("prompt_text", str(err)) from err

    @staticmethod
    def _batches(jobs: list[_Job], batch_size: int) -> Iterator[list[tuple[_Job, int]]]:
        """``(job, part index)`` of every text segment, grouped by mode and sampling knobs, in order."""
        groups: dict[tuple, list[tuple[_Job, int]]] = defaultdict(list)
        for job in jobs:
            key = (job.request.one_shot, job.request.sampling.key())
            groups[key] += [(job, i) for i, part in enumerate(job.parts) if isinstance(part, Segment)]
        for units in groups.values():
            for start in range(0, len(units), batch_size):
                yield units[start : start + batch_size]

    def _condition(self, jobs: list[_Job]) -> None:
        """Speaker vectors (and one-shot prompts) of the jobs that lack them, in one encoder call each."""
        todo = list({id(job): job for job in jobs if job.speakers is None}.values())
        if not todo:
            return
        ar, fm = self.voice.speakers([job.voices for job in todo])
        for row, job in enumerate(todo):
            job.speakers = (ar[row], fm[row])
        one_shot = [job for job in todo if job.request.one_shot]
        if one_shot:
            for job, prompt in zip(
                one_shot, self.voice.prompts([job.voices[0][0] for job in one_shot]), strict=True
            ):
                job.prompt = prompt

    def _generate(self, batch: list[tuple[_Job, int]], sampling) -> None:
        """AR tokens -> FM latents -> audio for one batch of segments; stores them in their jobs."""
        device = self.device
        generator = None
        if sampling.seed is not None:
            generator = torch.Generator(device=device).manual_seed(sampling.seed)
        jobs = [job for job, _ in batch]
        text, text_lens = _pad_ids([job.parts[i].tokens for job, i in batch], device)
        ar_prompt = _ar_prompt(jobs, device) if jobs[0].request.one_shot else {}
        tokens, token_lens = self.ar.generate(
            speaker=torch.stack([job.speakers[0] for job in jobs]),
            text=text,
            text_lens=text_lens,
            **ar_prompt,
            **sampling.ar_options(),
            generator=generator,
        )
        audio, audio_lens = self._tokens_to_audio(tokens, token_lens, jobs, sampling, generator)
        for row, (job, i) in enumerate(batch):
            job.tokens[i] = int(token_lens[row])
            job.audio[i] = audio[row, : int(audio_lens[row])].float().cpu().numpy()

    def _tokens_to_audio(self, tokens, token_lens, jobs, sampling, generator):
        """New tokens ``(b, k)`` -> waveform ``(b, t)`` and ``audio_lens (b,)`` of the new speech only.

        One-shot jobs put their prompt's tokens before the new ones and give its latents as the prompt.
        """
        speaker = torch.stack([job.speakers[1] for job in jobs])
        prompt = {}
        if jobs[0].request.one_shot:
            pairs = zip([job.prompt.tokens for job in jobs], tokens, token_lens.tolist(), strict=True)
            rows = [torch.cat([p, new[:n]]) for p, new, n in pairs]
            tokens, token_lens = _pad_ids(rows, tokens.device)
            latents, latent_lens, _ = pad_sequences([job.prompt.latents.cpu() for job in jobs])
            prompt = {
                "prompt_latents": latents.to(tokens.device),
                "prompt_lens": latent_lens.to(tokens.device),
            }
        latents, latent_lens = self.fm.sample(
            tokens=tokens,
            token_lens=token_lens,
            speaker=speaker,
            **prompt,
            **sampling.fm_options(),
            generator=generator,
        )
        if latents.shape[1] == 0:  # every row ended at once: nothing to decode
            return latents.new_zeros(latents.shape[0], 0), latent_lens * 0
        with torch.inference_mode():
            audio = self.flow_vae.decode(latents, latent_lens)
        return audio, latent_lens * self.flow_vae.hop_length

    def _assemble(self, job: _Job) -> SynthesisResult:
        """Joins a request's segments with its pauses and renders the requested audio."""
        pieces = [
            audio_output.silence(part.seconds, self.sample_rate) if isinstance(part, Pause) else job.audio[i]
            for i, part in enumerate(job.parts)
        ]
        wav = np.concatenate(pieces).astype(np.float32)
        request = job.request
        out, rate = audio_output.render(wav, self.sample_rate, request.voice, request.audio)
        counts = [job.tokens[i] for i, part in enumerate(job.parts) if isinstance(part, Segment)]
        return SynthesisResult(out, rate, request.audio.format, counts, wav.shape[0])


def _pad_ids(rows: Sequence, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Id lists or 1-D tensors -> ``(ids (b, n) int64 padded with 0, lens (b,))`` on ``device``."""
    ids, lens, _ = pad_sequences([torch.as_tensor(r, dtype=torch.long).cpu() for r in rows], pad_value=0)
    return ids.to(device), lens.to(device)


def _ar_prompt(jobs: list[_Job], device: torch.device) -> dict[str, torch.Tensor]:
    """The one-shot prompt of the AR model: the reference's transcript and its audio tokens."""
    prompt_text, prompt_text_lens = _pad_ids([job.prompt_text for job in jobs], device)
    prompt_tokens, prompt_lens = _pad_ids([job.prompt.tokens for job in jobs], device)
    return {
        "prompt_text": prompt_text,
        "prompt_text_lens": prompt_text_lens,
        "prompt_tokens": prompt_tokens,
        "prompt_lens": prompt_lens,
    }
