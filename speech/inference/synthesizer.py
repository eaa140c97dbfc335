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

Every row must fit the AR model's ``max_len`` positions: speaker, (prompt text,) text, BOS, (prompt tokens,)
and the most tokens ``generate`` may make for the text. A text segment that cannot fit is refused; a one-shot
prompt too long for what the longest segment leaves is cut (its audio and, proportionally, its transcript)
with a warning; rows that fit alone but not together are generated in separate batches.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from speech.audio.io import AudioError
from speech.inference import audio_output, prosody, streaming
from speech.inference.loading import load_adapters, load_pipeline
from speech.inference.request import RequestError, SamplingSetting, SynthesisRequest, is_integer
from speech.inference.text_frontend import Segment, encode_text, leading_text, split_text
from speech.inference.voice import (
    MIN_REFERENCE_SECONDS,
    Prompt,
    VoiceEncoder,
    check_reference,
    load_reference,
)
from speech.models.ar_transformer import MAX_TOKENS_PER_TEXT, MIN_TOKENS_PER_TEXT
from speech.modules.lora import LoRAAdapter
from speech.tensors import pad_sequences
from speech.text.bpe import TextBPE
from speech.text.pauses import Pause

STREAM_CHUNK_TOKENS = 25  # audio tokens per streamed chunk: 1 s of speech at 25 Hz
STREAM_CONTEXT_TOKENS = 50  # earlier tokens (2 s) whose latents prompt each streamed chunk's flow matching
FM_SEED_OFFSET = 1 << 32  # flow matching's generator is seeded with seed + this
BATCH_SIZE = 8  # text segments generated together by default
SPEAKER_AND_BOS = 2  # AR positions besides text and audio tokens: the speaker vector and BOS
PROMPT_QUOTE_CHARS = 30  # the end of a cut one-shot transcript quoted in the warning
STREAM_STOPPED = "the stream stops before this chunk (a broken model?)"

log = logging.getLogger(__name__)


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
        warnings: What was doubtful or changed (a quiet reference, a one-shot prompt cut to fit), each
            starting with the field it concerns.
    """

    audio: np.ndarray
    sample_rate: int
    format: str
    token_counts: list[int] = field(default_factory=list)
    model_samples: int = 0
    bitrate: int | None = None
    warnings: list[str] = field(default_factory=list)

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
    """A request made ready: its text segments and pauses, voice references and one-shot prompt.

    ``index`` is its position in a batch (``None``: a request alone), ``prompt_room`` the AR positions its
    longest segment leaves for a one-shot prompt.
    """

    request: SynthesisRequest
    index: int | None
    parts: list[Segment | Pause]
    voices: list[tuple[np.ndarray, float]]
    prompt_text: list[int] | None = None
    prompt_room: int = 0
    warnings: list[str] = field(default_factory=list)
    speakers: tuple[torch.Tensor, torch.Tensor] | None = None  # (ar (c,), fm (c,))
    prompt: Prompt | None = None
    audio: dict[int, np.ndarray] = field(default_factory=dict)  # part index -> waveform
    tokens: dict[int, int] = field(default_factory=dict)  # part index -> new tokens


class StreamChunk(NamedTuple):
    """One piece of :meth:`Synthesizer.stream_batch`: ``audio`` of request ``index``; ``last`` ends it."""

    index: int
    audio: np.ndarray
    last: bool


@dataclass(eq=False)
class _SegmentStream:
    """A text segment being streamed: its tokens waiting for flow matching, what it rendered, its decoder."""

    job: _Job
    decoder: streaming.IncrementalDecoder
    pitch: object | None  # prosody.pitch_stream, or None at pitch 0
    prompt: tuple[torch.Tensor, torch.Tensor] | None  # one-shot: (tokens (p,), latents (fpt * p, d))
    done_tokens: torch.Tensor  # (r,) rendered so far
    done_latents: torch.Tensor  # (fpt * r, d)
    new: list[torch.Tensor] = field(default_factory=list)  # (1,) tokens since the last chunk
    ended: bool = False

    def known(self, context_tokens: int, frames_per_token: int) -> tuple[torch.Tensor, torch.Tensor]:
        """What flow matching continues: the last ``context_tokens`` rendered tokens and their latents, after
        the one-shot prompt if any."""
        keep = min(context_tokens, self.done_tokens.shape[0])
        tokens = self.done_tokens[self.done_tokens.shape[0] - keep :]
        latents = self.done_latents[self.done_latents.shape[0] - frames_per_token * keep :]
        if self.prompt is None:
            return tokens, latents
        return torch.cat([self.prompt[0], tokens]), torch.cat([self.prompt[1], latents])


class Synthesizer:
    """Zero-shot and one-shot synthesis with the trained models; build it with :meth:`from_checkpoints`.

    Args:
        ar: ``ARTransformer`` (with its speaker encoder).
        flow_matching: ``FlowMatching`` (with its own speaker encoder).
        audio_tokenizer: ``AudioTokenizer`` (one-shot: prompt audio -> prompt tokens).
        flow_vae: ``FlowVAE`` (decoder: latents -> audio; encoder: one-shot prompt latents).
        bpe: The AR model's text BPE.
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
        bpe: TextBPE,
        mel: nn.Module,
        *,
        max_reference_seconds: tuple[float | None, float | None] = (None, None),
        max_segment_tokens: int | None = None,
        emotion_adapters: Sequence[LoRAAdapter] = (),
    ) -> None:
        self.ar, self.fm, self.flow_vae = ar.eval(), flow_matching.eval(), flow_vae.eval()
        self.bpe, self.mel = bpe, mel
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
        """One request; see :meth:`synthesize_batch`.

        Raises:
            RequestError: the request is invalid (the message starts with the field).
        """
        return self._run([self._prepare(request)], BATCH_SIZE)[0]

    def synthesize_batch(
        self, requests: Sequence[SynthesisRequest], batch_size: int = BATCH_SIZE
    ) -> list[SynthesisResult]:
        """Synthesizes requests, generating up to ``batch_size`` text segments at a time.

        Raises:
            RequestError: a request is invalid (the message starts with ``requests[i]`` and the field,
                ``index`` is ``i``); nothing is generated before every request is checked.
        """
        if not is_integer(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        return self._run([self._prepare(r, i) for i, r in enumerate(requests)], batch_size)

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
            RequestError: as :meth:`synthesize` (no batch index), before the first chunk; the request's
                warnings are logged.
            ValueError: a chunk holds NaN or infinite samples (a broken model); it is not yielded.
        """
        _check_stream_sizes(chunk_tokens, context_tokens)
        jobs = [self._prepare(request, streaming=True)]
        for event in self._stream(jobs, chunk_tokens, context_tokens, lambda _: False):
            if event.audio.size:
                yield event.audio

    def stream_batch(
        self,
        requests: Sequence[SynthesisRequest],
        chunk_tokens: int = STREAM_CHUNK_TOKENS,
        context_tokens: int = STREAM_CONTEXT_TOKENS,
        stopped: Callable[[int], bool] | None = None,
    ) -> Iterator[StreamChunk]:
        """Streams several requests generated together: what :meth:`stream` yields for each, interleaved.

        The requests' text segments are generated in rounds: the first segment of every request together
        (as :meth:`synthesize_batch` groups them: same mode, emotion and sampling knobs, rows that fit the AR
        model together), then the second of those that have one, and so on; pauses come out at once. A
        request's chunks are those :meth:`stream` makes for it alone, up to flow matching's noise (with
        ``noise_scale=0`` and greedy tokens, the same samples).

        Args:
            requests: What to stream.
            chunk_tokens, context_tokens: As in :meth:`stream`.
            stopped: ``stopped(i)`` is asked before every AR step; once it is true request ``i`` gets no
                more chunks and no more flow matching or decoding (its client left). ``None``: never.

        Yields:
            ``StreamChunk(index, audio, last)`` as made: ``index`` into ``requests``, ``audio`` as
            :meth:`stream` 's chunks (may be empty on the last one), ``last`` on each request's final
            chunk. A stopped request gets no final chunk.

        Raises:
            RequestError: a request is invalid (``index`` is its position), before the first chunk.
            ValueError: a chunk holds NaN or infinite samples (a broken model).
        """
        _check_stream_sizes(chunk_tokens, context_tokens)
        jobs = [self._prepare(r, i, streaming=True) for i, r in enumerate(requests)]
        yield from self._stream(jobs, chunk_tokens, context_tokens, stopped or (lambda _: False))

    # ------------------------------------------------------------------------------------------ steps
    def _run(self, jobs: list[_Job], batch_size: int) -> list[SynthesisResult]:
        """Generates prepared jobs, ``batch_size`` text segments at a time, and assembles their results."""
        for batch in self._batches(jobs, batch_size):
            self._condition([job for job, _ in batch])
            for rows in self._fitting(batch):
                self._generate(rows, rows[0][0].request.sampling)
        return [self._assemble(job) for job in jobs]

    def _prepare(self, request: SynthesisRequest, index: int | None = None, streaming: bool = False) -> _Job:
        """Validates one request (``index``: its position in a batch) and turns its text and references
        into model inputs."""
        try:
            if request.stream and not streaming:
                raise RequestError(
                    "stream", "synthesize() returns whole utterances; stream with Synthesizer.stream(request)"
                )
            request.validate()
            self._check_emotion(request)
            request.audio.check_bitrate(self.sample_rate)
            parts, prompt_text = self._encode_texts(request)
            job = _Job(request, index, parts, [], prompt_text)
            job.voices = [(self._load(ref, name, job), w) for name, ref, w in request.voices()]
            self._check_room(job)
        except RequestError as err:
            if index is None:
                raise
            raise err.for_request(index) from err
        return job

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

    def _load(self, reference, name: str, job: _Job) -> np.ndarray:
        """The reference of field ``name`` at the model's rate, measured (``voice.check_reference``)."""
        try:
            wav = load_reference(reference, self.sample_rate, job.request.reference_sample_rate)
            job.warnings += [f"{name}: {warning}" for warning in check_reference(wav, self.sample_rate)]
        except AudioError as err:
            raise RequestError(name, str(err)) from err
        return wav

    def _positions(self, text_tokens: int, max_tokens: int | None) -> tuple[int, int]:
        """``(prefix, new)``: the AR positions a text segment takes without a prompt (speaker, text, BOS)
        and the most audio tokens ``generate`` may make for it (``ARTransformer._length_limits``)."""
        _, max_new = self.ar._length_limits(
            torch.tensor([text_tokens]), MIN_TOKENS_PER_TEXT, MAX_TOKENS_PER_TEXT, max_tokens
        )
        return SPEAKER_AND_BOS + text_tokens, int(max_new)

    def _check_room(self, job: _Job) -> None:
        """Refuses a job whose longest text segment, or its one-shot prompt at the least, cannot fit the AR
        model's ``max_len``; sets ``job.prompt_room``."""
        longest = max((p for p in job.parts if isinstance(p, Segment)), key=lambda p: len(p.tokens))
        prefix, new = self._positions(len(longest.tokens), job.request.sampling.max_tokens)
        max_len = self.ar.max_len
        if prefix + new > max_len:
            raise RequestError(
                "text",
                f"the segment {longest.text[:40]!r} is {len(longest.tokens)} BPE tokens and may need up to "
                f"{new} audio tokens: {prefix + new} positions, more than the AR model's max_len of "
                f"{max_len}. Lower sampling.max_tokens or max_segment_tokens (now {self.max_segment_tokens}; "
                "a word longer than that is never cut)",
            )
        job.prompt_room = max_len - prefix - new
        if not job.request.one_shot:
            return
        first_word = leading_text(job.request.prompt_text, 0.0, job.request.language, self.bpe, 0)
        least = len(first_word.tokens) + math.ceil(MIN_REFERENCE_SECONDS * self.voice.token_rate)
        if least > job.prompt_room:
            raise RequestError(
                "prompt_text",
                f"no room for a one-shot prompt: the longest text segment takes {prefix + new} of the AR "
                f"model's {max_len} positions and leaves {job.prompt_room}, the prompt needs at least "
                f"{least} (its first word and {MIN_REFERENCE_SECONDS} s of audio). Shorten the text segments "
                "(max_segment_tokens, sampling.max_tokens) or leave prompt_text out (zero-shot)",
            )

    def _encode_texts(self, request: SynthesisRequest) -> tuple[list[Segment | Pause], list[int] | None]:
        """The text's segments and pauses, and the one-shot prompt text's BPE ids (``None``: zero-shot)."""
        try:
            parts = split_text(
                request.text,
                request.language,
                self.bpe,
                request.pronunciations(),
                max_tokens=self.max_segment_tokens,
            )
        except ValueError as err:
            raise RequestError("text", str(err)) from err
        if not request.one_shot:
            return parts, None
        try:
            return parts, encode_text(request.prompt_text, request.language, self.bpe).tokens
        except ValueError as err:
            raise RequestError("prompt_text", str(err)) from err

    @classmethod
    def _batches(cls, jobs: list[_Job], batch_size: int) -> Iterator[list[tuple[_Job, int]]]:
        """``(job, part index)`` of every text segment, grouped by mode, emotion and sampling knobs, in
        order."""
        units = [(job, i) for job in jobs for i, part in enumerate(job.parts) if isinstance(part, Segment)]
        return cls._group(units, batch_size)

    @staticmethod
    def _group(units: list[tuple[_Job, int]], batch_size: int) -> Iterator[list[tuple[_Job, int]]]:
        """Text segments in batches of at most ``batch_size`` that share mode, emotion and sampling knobs."""
        groups: dict[tuple, list[tuple[_Job, int]]] = defaultdict(list)
        for job, i in units:
            request = job.request
            groups[(request.one_shot, request.voice.emotion, request.sampling.key())].append((job, i))
        for members in groups.values():
            for start in range(0, len(members), batch_size):
                yield members[start : start + batch_size]

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
                self._fit_prompt(job, prompt)

    def _fit_prompt(self, job: _Job, prompt: Prompt) -> None:
        """Sets the job's one-shot prompt, cut to ``job.prompt_room`` AR positions when longer: the same
        share of its audio (from the start) and of its transcript (whole words), so that the audio holds at
        least the words kept. The transcript's cut is proportional, not aligned; the audio may run on a few
        words past it."""
        text_tokens, audio_tokens = len(job.prompt_text), prompt.tokens.shape[0]
        if text_tokens + audio_tokens <= job.prompt_room:
            job.prompt = prompt
            return
        share = job.prompt_room / (text_tokens + audio_tokens)
        request = job.request
        text = leading_text(request.prompt_text, share, request.language, self.bpe, int(share * text_tokens))
        # the rest of the room: at least the audio's share, or MIN_REFERENCE_SECONDS (_check_room)
        keep = min(audio_tokens, job.prompt_room - len(text.tokens))
        job.prompt, job.prompt_text = prompt.head(keep), text.tokens
        rate = self.voice.token_rate
        job.warnings.append(
            f"prompt_text: the one-shot prompt is cut to fit the AR model's max_len of {self.ar.max_len}: "
            f"its first {keep / rate:.2f} s of {audio_tokens / rate:.2f} s of audio and {len(text.tokens)} "
            f"of {text_tokens} tokens of the transcript, up to {text.text[-PROMPT_QUOTE_CHARS:]!r}"
        )

    def _fitting(self, batch: list[tuple[_Job, int]]) -> Iterator[list[tuple[_Job, int]]]:
        """The batch in runs of rows that fit ``max_len`` together: ``generate`` left-pads the rows to the
        longest prefix and runs as many steps as the longest row may need, so a long one-shot prompt in one
        row and a long text in another can fit alone but not together."""
        run, longest_prefix, most_new = [], 0, 0
        for job, i in batch:
            prefix, new = self._positions(len(job.parts[i].tokens), job.request.sampling.max_tokens)
            if job.request.one_shot:
                prefix += len(job.prompt_text) + job.prompt.tokens.shape[0]
            if run and max(longest_prefix, prefix) + max(most_new, new) > self.ar.max_len:
                yield run
                run, longest_prefix, most_new = [], 0, 0
            run.append((job, i))
            longest_prefix, most_new = max(longest_prefix, prefix), max(most_new, new)
        if run:
            yield run

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

    def _stream(
        self, jobs: list[_Job], chunk_tokens: int, context_tokens: int, stopped: Callable[[int], bool]
    ) -> Iterator[StreamChunk]:
        """The rounds of :meth:`stream_batch` over prepared jobs (``stopped`` takes their position)."""
        self._condition(jobs)
        for job in jobs:
            for warning in job.warnings:  # no result to carry them
                log.warning(warning)
        position = {id(job): n for n, job in enumerate(jobs)}
        renders = [
            audio_output.ChunkRenderer(self.sample_rate, job.request.voice, job.request.audio) for job in jobs
        ]

        def event(job: _Job, wav: np.ndarray, last: bool = False) -> StreamChunk:
            n = position[id(job)]
            out = renders[n](wav, last=last)
            if out.size:
                audio_output.check_finite(out, STREAM_STOPPED)
            return StreamChunk(n, out, last)

        def gone(job: _Job) -> bool:
            return stopped(position[id(job)])

        for r in range(max(len(job.parts) for job in jobs)):
            live = [job for job in jobs if r < len(job.parts) and not gone(job)]
            segments = []
            for job in live:
                part = job.parts[r]
                if isinstance(part, Pause):
                    yield event(job, audio_output.silence(part.seconds, self.sample_rate))
                else:
                    segments.append((job, r))
            for group in self._group(segments, max(len(segments), 1)):
                for rows in self._fitting(group):
                    for job, wav in self._stream_segments(rows, chunk_tokens, context_tokens, gone):
                        yield event(job, wav)
            for job in live:
                if r == len(job.parts) - 1 and not gone(job):
                    yield event(job, np.zeros(0, dtype=np.float32), last=True)

    def _stream_segments(
        self,
        rows: list[tuple[_Job, int]],
        chunk_tokens: int,
        context_tokens: int,
        gone: Callable[[_Job], bool],
    ) -> Iterator[tuple[_Job, np.ndarray]]:
        """Segments generated together, as ``(job, waveform chunk (t,))`` at the model's rate (pitch
        applied), each row's chunks in order: a row's chunk is due every ``chunk_tokens`` tokens and at its
        end (EOS or its length limit)."""
        job0 = rows[0][0]
        sampling = job0.request.sampling
        ar_noise, fm_noise = self._generators(sampling)
        steps = self.ar.generate_stream(**self._ar_inputs(rows), **sampling.ar_options(), generator=ar_noise)
        streams = [self._segment_stream(job) for job, _ in rows]
        # the adapter stays in the weights while the rows are open: like the KV cache, the AR model serves one
        # generation at a time
        with self._emotion(job0):
            for tokens in steps:
                due = []
                for row, state in enumerate(streams):
                    if state.ended:
                        continue
                    if gone(state.job):
                        state.ended = True  # nothing more is rendered for it
                    elif int(tokens[row]) == self.ar.eos_id:
                        state.ended = True
                        due.append(state)
                    else:
                        state.new.append(tokens[row : row + 1].clone())
                        if len(state.new) == chunk_tokens:
                            due.append(state)
                yield from self._render_due(due, context_tokens, sampling, fm_noise)
                if all(state.ended for state in streams):
                    break
            steps.close()
            limited = [state for state in streams if not state.ended]  # rows that ran to their length limit
            for state in limited:
                state.ended = True
            yield from self._render_due(limited, context_tokens, sampling, fm_noise)

    def _segment_stream(self, job: _Job) -> _SegmentStream:
        pitch = None if _pitch(job) == 1.0 else prosody.pitch_stream(self.sample_rate, _pitch(job))
        return _SegmentStream(
            job,
            streaming.IncrementalDecoder(self.flow_vae, self._decoder_context()),
            pitch,
            (job.prompt.tokens, job.prompt.latents) if job.request.one_shot else None,
            done_tokens=torch.zeros(0, dtype=torch.long, device=self.device),
            done_latents=self.fm.in_proj.weight.new_zeros(0, self.fm.latent_dim),
        )

    def _render_due(
        self,
        due: list[_SegmentStream],
        context_tokens: int,
        sampling: SamplingSetting,
        generator: torch.Generator | None,
    ) -> Iterator[tuple[_Job, np.ndarray]]:
        """Flow matching for the due rows' new tokens (one call for the rows that continue earlier latents,
        one for those that start), then each row's decoder window."""
        fpt = self.fm.frames_per_token
        frames = {state: state.done_latents[:0] for state in due}  # keyed by identity (eq=False)
        known = {state: state.known(context_tokens, fpt) for state in due if state.new}
        for continuing in (False, True):
            group = [s for s in due if s in known and (len(known[s][1]) > 0) == continuing]
            if not group:
                continue
            added = [torch.cat(state.new) for state in group]
            token_rows = [torch.cat([known[s][0], new]) for s, new in zip(group, added, strict=True)]
            previous = [known[s][1] for s in group] if continuing else None
            out, lens = self._latents([s.job for s in group], token_rows, previous, sampling, generator)
            for row, (state, new) in enumerate(zip(group, added, strict=True)):
                made = out[row, : int(lens[row])]
                state.done_tokens = torch.cat([state.done_tokens, new])
                state.done_latents = torch.cat([state.done_latents, made])
                state.new = []
                stretched, n = prosody.stretch_latents(made[None], lens[row : row + 1], [_stretch(state.job)])
                frames[state] = stretched[0, : int(n[0])]
        for state in due:
            wav = state.decoder.push(frames[state], last=state.ended)
            yield state.job, wav if state.pitch is None else state.pitch.resample_chunk(wav, last=state.ended)

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
        return SynthesisResult(
            out, rate, request.audio.format, counts, wav.shape[0], request.audio.bitrate, job.warnings
        )


def _check_stream_sizes(chunk_tokens, context_tokens) -> None:
    for name, value, least in (("chunk_tokens", chunk_tokens, 1), ("context_tokens", context_tokens, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")


def _pitch(job: _Job) -> float:
    return prosody.pitch_factor(job.request.voice.pitch)


def _stretch(job: _Job) -> float:
    return prosody.stretch_factor(job.request.voice.speed, job.request.voice.pitch)


def _pad_ids(rows: Sequence, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Id lists or 1-D tensors -> ``(ids (b, n) int64 padded with 0, lens (b,))`` on ``device``."""
    ids, lens, _ = pad_sequences([torch.as_tensor(r, dtype=torch.long).cpu() for r in rows], pad_value=0)
    return ids.to(device), lens.to(device)
