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
requests share a batch when they have the same mode (zero-/one-shot), emotion and sampling knobs. An
emotion is a LoRA adapter (``speech.modules.lora``) added into the AR model's weights while that batch's
tokens are generated and taken out after (paper section 4.1); flow matching and the decoder are shared. Each
request's segments and pauses are then joined and rendered to its ``audio_setting``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from speech.audio.io import AudioError
from speech.data.collate import pad_sequences
from speech.inference import audio_output, prosody, streaming
from speech.inference.loading import load_adapters, load_pipeline
from speech.inference.request import RequestError, SamplingSetting, SynthesisRequest
from speech.inference.text_frontend import Segment, encode_text, split_text
from speech.inference.voice import Prompt, VoiceEncoder, load_reference
from speech.models.ar_transformer import MAX_TOKENS_PER_TEXT
from speech.modules.lora import LoRAAdapter
from speech.text.bpe import TextTokenizer
from speech.text.pauses import Pause

STREAM_CHUNK_TOKENS = 25  # audio tokens per streamed chunk: 1 s of speech at 25 Hz
STREAM_CONTEXT_TOKENS = 50  # earlier tokens (2 s) whose latents prompt each streamed chunk's flow matching
FM_SEED_OFFSET = 1 << 32  # flow matching's generator is seeded with seed + this


def default_segment_tokens(max_len: int) -> int:
    """The longest text segment (BPE tokens) whose speech surely fits the AR model's ``max_len`` positions
    with room for a one-shot prompt as long again: ``max_len / (2 (1 + MAX_TOKENS_PER_TEXT))``."""
    return max(1, int(max_len // (2 * (1 + MAX_TOKENS_PER_TEXT))))


@dataclass
class SynthesisResult:
    """One request's speech.

    Attributes:
        audio: ``(t,)`` mono or ``(t, 2)`` float32 at ``sample_rate``, volume applied (not yet clipped).
        sample_rate: The output rate (``audio_setting.sample_rate`` or the model's).
        format: The requested file format; :meth:`to_bytes` encodes it.
        token_counts: New audio tokens generated for each text segment.
        model_samples: Length of the speech at the model's rate, pauses included.
        bitrate: mp3 bitrate in bit/s (``None``: libsndfile's default).
    """

    audio: np.ndarray
    sample_rate: int
    format: str
    token_counts: list[int] = field(default_factory=list)
    model_samples: int = 0
    bitrate: int | None = None

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return self.audio.shape[0] / self.sample_rate

    def to_bytes(self) -> bytes:
        """The audio as a file in ``format``."""
        return audio_output.encode(self.audio, self.sample_rate, self.format, self.bitrate)

    def save(self, path: str | Path) -> None:
        """Writes :meth:`to_bytes` to ``path`` (atomically)."""
        audio_output.write(path, self.audio, self.sample_rate, self.format, self.bitrate)


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
        max_segment_tokens: Longer text (between pauses) is cut into segments of at most this many BPE
            tokens at sentence, clause and word boundaries (``text_frontend.split_text``), generated as
            separate rows and joined. ``None``: ``default_segment_tokens(ar.max_len)``.
        emotion_adapters: LoRA adapters of the AR model, each named by the emotion it renders; a request's
            ``voice.emotion`` picks one (``None``: the base model).

    Raises:
        ValueError: two adapters share a name, or one does not fit the AR model.
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
        max_segment_tokens: int | None = None,
        emotion_adapters: Sequence[LoRAAdapter] = (),
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
        if max_segment_tokens is None:
            max_segment_tokens = default_segment_tokens(ar.max_len)
        if (
            isinstance(max_segment_tokens, bool)
            or not isinstance(max_segment_tokens, int)
            or max_segment_tokens < 1
        ):
            raise ValueError(f"max_segment_tokens must be None or an int >= 1, got {max_segment_tokens!r}")
        self.max_segment_tokens = max_segment_tokens
        self.adapters: dict[str, LoRAAdapter] = {}
        for adapter in emotion_adapters:
            if adapter.name in self.adapters:
                raise ValueError(f"two emotion adapters are named {adapter.name!r}; keep one")
            adapter.check_fits(ar)
            self.adapters[adapter.name] = adapter
        self._context: int | None = None  # the streaming decoder's, see _decoder_context

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
        max_segment_tokens: int | None = None,
        emotion_adapters: Sequence[str | Path] = (),
    ) -> Synthesizer:
        """Rebuilds every model from checkpoint files alone (``speech.inference.loading.load_pipeline``).

        Args:
            ar, flow_matching: Checkpoints written by train.py for the AR and flow-matching stages.
            tokenizer, flow_vae: Upstream checkpoints; ``None`` takes the ``upstream`` paths stored in the
                AR / flow-matching configs.
            device: Where the models run.
            use_ema: Use a checkpoint's EMA weights when it has them.
            max_segment_tokens: See the class.
            emotion_adapters: Adapter checkpoints written by the ``ar_adapter`` stage on this AR checkpoint
                (``speech.inference.loading.load_adapters``).
        """
        adapters = load_adapters(emotion_adapters, ar)
        models = load_pipeline(ar, flow_matching, tokenizer, flow_vae, device=device, use_ema=use_ema)
        return cls(**models, max_segment_tokens=max_segment_tokens, emotion_adapters=adapters)

    @property
    def sample_rate(self) -> int:
        """The models' audio rate."""
        return self.voice.sample_rate

    @property
    def emotions(self) -> list[str]:
        """The names ``voice.emotion`` may take (the loaded adapters), sorted."""
        return sorted(self.adapters)

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
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        jobs = [self._prepare(i, r) for i, r in enumerate(requests)]
        for batch in self._batches(jobs, batch_size):
            self._condition([job for job, _ in batch])
            self._generate(batch, batch[0][0].request.sampling)
        return [self._assemble(job) for job in jobs]

    def stream(
        self,
        request: SynthesisRequest,
        chunk_tokens: int = STREAM_CHUNK_TOKENS,
        context_tokens: int = STREAM_CONTEXT_TOKENS,
    ) -> Iterator[np.ndarray]:
        """Yields one request's audio in chunks while it is being generated.

        Every ``chunk_tokens`` audio tokens of a text segment (25 = 1 s of speech), flow matching renders the
        new tokens, continuing the latents of the last ``context_tokens`` tokens it rendered the way it
        continues a one-shot prompt (after the one-shot prompt itself, if any), so a chunk costs the same
        late in a long segment as early; the
        decoder runs on a window that gives exactly the samples of decoding everything at once
        (``streaming.IncrementalDecoder``); pitch, volume, rate and channels are applied with streaming
        resamplers. The request's fields mean what they mean for :meth:`synthesize` (``stream`` may be
        either); the audio differs from :meth:`synthesize` 's because flow matching sees the tokens chunk
        by chunk.

        Yields:
            Non-empty ``(t,)`` (mono) or ``(t, 2)`` float32 chunks at the output rate (``audio.sample_rate``
            or the model's), volume applied, not clipped; joined they are the whole utterance.

        Raises:
            RequestError: as :meth:`synthesize_batch`, before the first chunk.
        """
        for name, value, least in (("chunk_tokens", chunk_tokens, 1), ("context_tokens", context_tokens, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        job = self._prepare(0, request, streaming=True)
        self._condition([job])
        render = audio_output.ChunkRenderer(self.sample_rate, request.voice, request.audio)
        for i, part in enumerate(job.parts):
            if isinstance(part, Pause):
                pieces = [audio_output.silence(part.seconds, self.sample_rate)]
            else:
                pieces = self._stream_segment(job, i, chunk_tokens, context_tokens)
            for wav in pieces:
                out = render(wav)
                if out.size:
                    yield out
        tail = render(np.zeros(0, dtype=np.float32), last=True)
        if tail.size:
            yield tail

    # ------------------------------------------------------------------------------------------ steps
    def _prepare(self, index: int, request: SynthesisRequest, streaming: bool = False) -> _Job:
        """Validates one request and turns its text and references into model inputs."""
        try:
            if request.stream and not streaming:
                raise RequestError(
                    "stream", "synthesize() returns whole utterances; stream with Synthesizer.stream(request)"
                )
            request.validate()
            self._check_emotion(request)
            self._check_bitrate(request)
            parts, prompt_text = self._encode_texts(request)
            voices = [(self._load(ref, request), w) for ref, w in request.voices()]
        except RequestError as err:
            raise err.for_request(index) from err
        return _Job(request, parts, voices, prompt_text)

    def _check_emotion(self, request: SynthesisRequest) -> None:
        emotion = request.voice.emotion
        if emotion is not None and emotion not in self.adapters:
            loaded = f"the loaded ones are {self.emotions}" if self.adapters else "none is loaded"
            raise RequestError(
                "voice.emotion",
                f"no adapter for {emotion!r}: {loaded}. Train one (python train.py "
                f"experiment=ar_emotion_tiny emotion={emotion}) and load it (Synthesizer.from_checkpoints("
                "..., emotion_adapters=[...]), infer.py emotion_adapters=[...]), or leave voice.emotion "
                "at None",
            )

    def _emotion(self, job: _Job) -> AbstractContextManager:
        """While open, the AR model carries the job's emotion adapter (none for ``voice.emotion=None``)."""
        emotion = job.request.voice.emotion
        return nullcontext() if emotion is None else self.adapters[emotion].applied(self.ar)

    def _check_bitrate(self, request: SynthesisRequest) -> None:
        """An mp3 bitrate at the model's own rate (``validate`` checks it where the rate is given)."""
        bitrate, rate = request.audio.bitrate, request.audio.sample_rate or self.sample_rate
        problem = None if bitrate is None else audio_output.mp3_bitrate_problem(bitrate, rate)
        if problem:
            raise RequestError("audio.bitrate", f"{problem} (the model's rate; set audio.sample_rate)")

    def _load(self, reference, request: SynthesisRequest) -> np.ndarray:
        try:
            return load_reference(reference, self.sample_rate, request.reference_sample_rate)
        except AudioError as err:
            raise RequestError("reference", str(err)) from err

    def _encode_texts(self, request: SynthesisRequest) -> tuple[list[Segment | Pause], list[int] | None]:
        """The text's segments and pauses, and the one-shot prompt text's BPE ids (``None``: zero-shot)."""
        try:
            parts = split_text(
                request.text,
                request.language,
                self.text_tokenizer,
                request.pronunciations(),
                max_tokens=self.max_segment_tokens,
            )
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
        """``(job, part index)`` of every text segment, grouped by mode, emotion and sampling knobs, in
        order."""
        groups: dict[tuple, list[tuple[_Job, int]]] = defaultdict(list)
        for job in jobs:
            key = (job.request.one_shot, job.request.voice.emotion, job.request.sampling.key())
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

    def _generate(self, batch: list[tuple[_Job, int]], sampling: SamplingSetting) -> None:
        """AR tokens -> FM latents -> audio for one batch of segments; stores them in their jobs."""
        ar_noise, fm_noise = self._generators(sampling)
        jobs = [job for job, _ in batch]
        with self._emotion(jobs[0]):
            tokens, token_lens = self.ar.generate(
                **self._ar_inputs(batch), **sampling.ar_options(), generator=ar_noise
            )
        rows = [new[:n] for new, n in zip(tokens, token_lens.tolist(), strict=True)]
        if jobs[0].request.one_shot:
            rows = [torch.cat([job.prompt.tokens, row]) for job, row in zip(jobs, rows, strict=True)]
        previous = [job.prompt.latents for job in jobs] if jobs[0].request.one_shot else None
        latents, latent_lens = self._latents(jobs, rows, previous, sampling, fm_noise)
        factors = [_stretch(job) for job in jobs]
        if any(f != 1.0 for f in factors):
            latents, latent_lens = prosody.stretch_latents(latents, latent_lens, factors)
        audio, audio_lens = self._decode(latents, latent_lens)
        for row, (job, i) in enumerate(batch):
            job.tokens[i] = int(token_lens[row])
            wav = audio[row, : int(audio_lens[row])].float().cpu().numpy()
            job.audio[i] = prosody.shift_pitch(wav, self.sample_rate, _pitch(job))

    def _stream_segment(
        self, job: _Job, index: int, chunk_tokens: int, context_tokens: int
    ) -> Iterator[np.ndarray]:
        """Segment ``index`` of a job as waveform chunks ``(t,)`` at the model's rate (pitch applied)."""
        sampling = job.request.sampling
        ar_noise, fm_noise = self._generators(sampling)
        steps = self.ar.generate_stream(
            **self._ar_inputs([(job, index)]), **sampling.ar_options(), generator=ar_noise
        )
        decoder = streaming.IncrementalDecoder(self.flow_vae, self._decoder_context())
        pitch = None if _pitch(job) == 1.0 else prosody.pitch_stream(self.sample_rate, _pitch(job))
        fpt = self.fm.frames_per_token
        prompt = (job.prompt.tokens, job.prompt.latents) if job.request.one_shot else None
        done_tokens = torch.zeros(0, dtype=torch.long, device=self.device)  # rendered so far
        done_latents = self.fm.in_proj.weight.new_zeros(0, self.fm.latent_dim)  # (fpt * rendered, d)
        new: list[torch.Tensor] = []

        def chunk(last: bool) -> np.ndarray:
            nonlocal new, done_tokens, done_latents
            frames = done_latents[:0]
            if new:
                # flow matching continues the last context_tokens it rendered (after a one-shot prompt)
                keep = min(context_tokens, done_tokens.shape[0])
                known = (
                    done_tokens[len(done_tokens) - keep :],
                    done_latents[len(done_latents) - fpt * keep :],
                )
                if prompt is not None:
                    known = tuple(torch.cat(pair) for pair in zip(prompt, known, strict=True))
                added = torch.cat(new)
                previous = [known[1]] if len(known[1]) else None
                out, lens = self._latents([job], [torch.cat([known[0], added])], previous, sampling, fm_noise)
                frames = out[0, : int(lens[0])]
                done_tokens, done_latents = torch.cat([done_tokens, added]), torch.cat([done_latents, frames])
                new = []
                stretched, lens = prosody.stretch_latents(frames[None], lens[:1], [_stretch(job)])
                frames = stretched[0, : int(lens[0])]
            wav = decoder.push(frames, last=last)
            return wav if pitch is None else pitch.resample_chunk(wav, last=last)

        # the adapter stays in the weights while the stream is open: like the KV cache, the AR model serves
        # one generation at a time
        with self._emotion(job):
            for token in steps:
                if int(token[0]) == self.ar.eos_id:
                    break
                new.append(token)
                if len(new) == chunk_tokens:
                    yield chunk(last=False)
        yield chunk(last=True)

    def _decoder_context(self) -> int:
        """Latent frames of context the streaming decoder keeps (measured once per synthesizer)."""
        if self._context is None:
            self._context = streaming.receptive_radius(self.flow_vae)
        return self._context

    def _generators(self, sampling: SamplingSetting) -> tuple[torch.Generator | None, torch.Generator | None]:
        """Noise sources of the AR model and of flow matching, apart so that the AR tokens of a seed do not
        depend on when flow matching draws its noise (streaming draws it between AR steps)."""
        if sampling.seed is None:
            return None, None
        return tuple(
            torch.Generator(device=self.device).manual_seed(sampling.seed + offset)
            for offset in (0, FM_SEED_OFFSET)
        )

    def _ar_inputs(self, batch: list[tuple[_Job, int]]) -> dict[str, torch.Tensor]:
        """The AR model's conditioning for segments: speaker vectors, text and the one-shot prompt."""
        jobs = [job for job, _ in batch]
        text, text_lens = _pad_ids([job.parts[i].tokens for job, i in batch], self.device)
        inputs = {
            "speaker": torch.stack([job.speakers[0] for job in jobs]),
            "text": text,
            "text_lens": text_lens,
        }
        if jobs[0].request.one_shot:
            inputs["prompt_text"], inputs["prompt_text_lens"] = _pad_ids(
                [j.prompt_text for j in jobs], self.device
            )
            inputs["prompt_tokens"], inputs["prompt_lens"] = _pad_ids(
                [j.prompt.tokens for j in jobs], self.device
            )
        return inputs

    def _latents(
        self,
        jobs: list[_Job],
        token_rows: list[torch.Tensor],
        previous: list[torch.Tensor] | None,
        sampling: SamplingSetting,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Flow matching that continues known latents.

        Args:
            jobs: One per row (speaker vectors, voice settings).
            token_rows: ``(k_i,)`` tokens per row: those behind ``previous`` first, then the new ones.
            previous: Per row, the ``(p_i, d)`` latents already known (a one-shot prompt; when streaming,
                also the latents of earlier chunks), ``p_i = frames_per_token * (their tokens)``; ``None``
                when no row has any.
            sampling, generator: Flow-matching knobs and noise source.

        Returns:
            ``(latents (b, f, d), lens (b,))`` of the new frames only.
        """
        tokens, token_lens = _pad_ids(token_rows, self.device)
        prompt = {}
        if previous is not None:
            latents, lens, _ = pad_sequences(previous)
            prompt = {"prompt_latents": latents, "prompt_lens": lens}
        speaker = torch.stack([job.speakers[1] for job in jobs])
        latents, latent_lens = self.fm.sample(
            tokens=tokens, token_lens=token_lens, speaker=speaker, **prompt, **sampling.fm_options(),
            generator=generator,
        )  # fmt: skip
        return latents, latent_lens

    def _decode(self, latents: torch.Tensor, latent_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents ``(b, f, d)`` -> waveform ``(b, t)`` and ``audio_lens (b,)``."""
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
        return SynthesisResult(out, rate, request.audio.format, counts, wav.shape[0], request.audio.bitrate)


def _pitch(job: _Job) -> float:
    return prosody.pitch_factor(job.request.voice.pitch)


def _stretch(job: _Job) -> float:
    return prosody.stretch_factor(job.request.voice.speed, job.request.voice.pitch)


def _pad_ids(rows: Sequence, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Id lists or 1-D tensors -> ``(ids (b, n) int64 padded with 0, lens (b,))`` on ``device``."""
    ids, lens, _ = pad_sequences([torch.as_tensor(r, dtype=torch.long).cpu() for r in rows], pad_value=0)
    return ids.to(device), lens.to(device)
