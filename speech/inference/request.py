"""What one synthesis asks for, shaped after the Speech-02 T2A request (docs/inference.md).

The Speech-02 options are grouped as in its API (``voice_setting``, ``audio_setting``, ...). ``emotion``
names a LoRA adapter on the AR model (MiniMax-Speech section 4.1); which names exist depends on the adapters
the synthesizer has loaded, so the synthesizer checks it.

``validate()`` checks every field without the models (types, ranges, and that the text has something to
speak) and raises ``RequestError`` naming the field and what it allows. The audio settings and their rules
live here alone (``AudioSetting``, the mp3 bitrates each sample rate carries: :func:`mp3_bitrates`);
``speech.inference.audio_output`` writes what they ask for. What needs the models or the audio
(the reference's measured length and level, emotion adapters, the AR model's length budget) the synthesizer
checks; docs/inference.md lists every rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path

import numpy as np

from speech.inference.text_frontend import check_characters, check_speakable, check_text

# Speech-02 ranges (the T2A v2 API reference; table in docs/inference.md).
SPEED_RANGE = (0.5, 2.0)
VOLUME_RANGE = (0.0, 10.0)  # (0, 10]
PITCH_RANGE = (-12, 12)
SAMPLE_RATES = (8000, 16000, 22050, 24000, 32000, 44100)
FORMATS = ("wav", "flac", "pcm", "mp3")
BITRATES = (32000, 64000, 128000, 256000)
# (lowest sample rate in Hz, lo kbps, hi kbps) per MPEG version: MPEG-1, MPEG-2, MPEG-2.5. From libsndfile's
# mpeg_l3_encoder_set_quality (src/mpeg_l3_encode.c): in constant-bitrate mode a compression level c in
# [0, 1] becomes int(hi - c * (hi - lo)) kbps, and LAME takes the nearest legal bitrate of the version.
_MPEG_KBPS = ((32000, 32, 320), (16000, 8, 160), (0, 8, 64))
CHANNELS = (1, 2)
TIMBRE_WEIGHT_RANGE = (1, 100)
MAX_TIMBRE_VOICES = 4
MAX_TEXT_CHARS = 10_000
SOLVERS = ("euler", "midpoint")
MAX_SEED = 2**32 - 1
# An array reference's rate: below 4 kHz nothing of a voice is left, above 384 kHz no audio interface records.
REFERENCE_RATE_RANGE = (4000, 384000)

Reference = str | Path | np.ndarray


class RequestError(ValueError):
    """An invalid request field; the message names the field and the allowed values.

    The message is ``<field>: <problem>``, or ``requests[<index>].<field>: <problem>`` for a request of a
    batch (``Synthesizer.synthesize_batch``); one request alone (``synthesize``, ``stream``) has no index.

    Attributes:
        field: The field within the request, e.g. ``voice.volume``.
        problem: What is wrong and what is allowed.
        index: The request's position in a batch, or ``None``.
    """

    def __init__(self, field_name: str, problem: str, index: int | None = None) -> None:
        self.field, self.problem, self.index = field_name, problem, index
        where = field_name if index is None else f"requests[{index}].{field_name}"
        super().__init__(f"{where}: {problem}")

    def for_request(self, index: int | None) -> RequestError:
        """The same error for request ``index`` of a batch (``None``: a request alone)."""
        return RequestError(self.field, self.problem, index)


def is_number(value) -> bool:
    """A finite real number; ``True``/``False`` are not numbers here (JSON and YAML tell them apart)."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def is_integer(value) -> bool:
    """An integer that is not a bool."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def mp3_kbps_range(sample_rate: int) -> tuple[int, int]:
    """``(lo, hi)`` kbps of the MPEG version libsndfile writes at ``sample_rate`` Hz."""
    return next((lo, hi) for min_rate, lo, hi in _MPEG_KBPS if sample_rate >= min_rate)


def mp3_bitrates(sample_rate: int) -> tuple[int, ...]:
    """The ``BITRATES`` (bit/s) an mp3 at ``sample_rate`` Hz can be written at."""
    lo, hi = mp3_kbps_range(sample_rate)
    return tuple(b for b in BITRATES if lo <= b // 1000 <= hi)


def mp3_bitrate_problem(bitrate: int, sample_rate: int) -> str | None:
    """Why an mp3 at ``sample_rate`` Hz cannot be written at ``bitrate`` bit/s, or ``None`` if it can."""
    if bitrate not in BITRATES:
        return f"mp3 bitrate must be one of {list(BITRATES)} bit/s, got {bitrate!r}"
    allowed = mp3_bitrates(sample_rate)
    if bitrate in allowed:
        return None
    carriers = [rate for rate in SAMPLE_RATES if bitrate in mp3_bitrates(rate)]
    return (
        f"mp3 at {sample_rate} Hz cannot carry {bitrate} bit/s: allowed there {list(allowed)};"
        f" {bitrate} bit/s needs a sample rate in {carriers}"
    )


@dataclass
class VoiceSetting:
    """Speech-02 ``voice_setting``.

    Attributes:
        speed: Speaking rate in [0.5, 2] (2: half the duration), pitch kept (``speech.inference.prosody``).
        volume: Gain factor in (0, 10]; 1.0 leaves the model's level.
        pitch: Semitones, integer in [-12, 12], duration kept.
        emotion: The name of an emotion adapter the synthesizer has loaded (Speech-02 names: happy, sad,
            angry, fearful, disgusted, surprised, calm, fluent), or ``None``: the base model, whose
            emotion follows the text and the reference.
    """

    speed: float = 1.0
    volume: float = 1.0
    pitch: int = 0
    emotion: str | None = None

    def validate(self) -> None:
        lo, hi = SPEED_RANGE
        if not is_number(self.speed) or not lo <= self.speed <= hi:
            raise RequestError("voice.speed", f"must be a number in [{lo}, {hi}], got {self.speed!r}")
        lo, hi = VOLUME_RANGE
        if not is_number(self.volume) or not lo < self.volume <= hi:
            raise RequestError("voice.volume", f"must be a number in ({lo:g}, {hi:g}], got {self.volume!r}")
        lo, hi = PITCH_RANGE
        if not is_integer(self.pitch) or not lo <= self.pitch <= hi:
            raise RequestError(
                "voice.pitch", f"must be an integer in [{lo}, {hi}] semitones, got {self.pitch!r}"
            )
        if self.emotion is not None and (not isinstance(self.emotion, str) or not self.emotion.strip()):
            raise RequestError(
                "voice.emotion", f"must be None or the name of a loaded emotion adapter, got {self.emotion!r}"
            )


@dataclass
class AudioSetting:
    """Speech-02 ``audio_setting``.

    Attributes:
        sample_rate: Output rate in Hz, one of ``SAMPLE_RATES``, or ``None`` for the model's own rate.
        format: ``wav``, ``flac``, ``pcm`` (raw 16-bit little-endian) or ``mp3``.
        bitrate: mp3 constant bitrate in bit/s (``BITRATES``; those a rate can carry: :func:`mp3_bitrates`),
            or ``None`` for libsndfile's default.
        channel: 1 (mono) or 2 (the mono signal on both channels).
    """

    sample_rate: int | None = None
    format: str = "wav"
    bitrate: int | None = None
    channel: int = 1

    def validate(self) -> None:
        if self.sample_rate is not None and not (
            is_integer(self.sample_rate) and self.sample_rate in SAMPLE_RATES
        ):
            raise RequestError(
                "audio.sample_rate", f"must be one of {list(SAMPLE_RATES)} or None, got {self.sample_rate!r}"
            )
        if not isinstance(self.format, str) or self.format not in FORMATS:
            raise RequestError("audio.format", f"must be one of {list(FORMATS)}, got {self.format!r}")
        if self.bitrate is not None and not (is_integer(self.bitrate) and self.bitrate in BITRATES):
            raise RequestError(
                "audio.bitrate", f"must be one of {list(BITRATES)} or None, got {self.bitrate!r}"
            )
        if self.bitrate is not None and self.format != "mp3":
            raise RequestError("audio.bitrate", f"applies to mp3 only, the format is {self.format!r}")
        self.check_bitrate()
        if not is_integer(self.channel) or self.channel not in CHANNELS:
            raise RequestError("audio.channel", f"must be one of {list(CHANNELS)}, got {self.channel!r}")

    def check_bitrate(self, model_rate: int | None = None) -> None:
        """Checks that the mp3 ``bitrate`` fits the rate the audio is written at: ``sample_rate``, else the
        model's ``model_rate`` (``validate`` passes none: without a ``sample_rate`` the synthesizer checks
        it with its rate).

        Raises:
            RequestError: ``audio.bitrate``, naming the bitrates the rate carries and the rates that carry it.
        """
        rate = self.sample_rate or model_rate
        if self.bitrate is None or rate is None:
            return
        if problem := mp3_bitrate_problem(self.bitrate, rate):
            where = "" if self.sample_rate else " (the model's rate; set audio.sample_rate)"
            raise RequestError("audio.bitrate", problem + where)


AR_OPTIONS = ("temperature", "top_k", "top_p", "ras_window", "ras_threshold", "eos_threshold",
              "min_tokens_per_text", "max_tokens")  # fmt: skip
FM_OPTIONS = ("steps", "solver", "cfg_scale", "noise_scale")


@dataclass
class SamplingSetting:
    """Generation knobs of the AR model (``ARTransformer.generate``) and flow matching (``sample``).

    Attributes:
        temperature, top_k, top_p: AR sampling; ``temperature=0`` is greedy decoding. ``top_k=25``,
            ``top_p=0.8`` by default: on the main job's models they cut the zero-shot WER from 181 % to 149 %
            against plain sampling, and a lower temperature made the clones longer (docs/main_job_levers.md).
        ras_window, ras_threshold: Repetition-aware sampling of the AR model.
        eos_threshold: Stop a segment as soon as EOS is at least this share as likely as the most likely
            token (1.0: when EOS is the most likely), even if the draw picked another; ``None``: only a
            drawn EOS stops it. 1.0 by default: on the main job's models the clones then last as long as
            the recordings (4.03 s against 4.06 s on average; 4.65 s without) and the zero-shot WER fell
            from 149 % to 136 %; 0.3 cut them to 3.18 s (docs/main_job_levers.md).
        min_tokens_per_text: A segment makes at least this many audio tokens per BPE token of its text
            (EOS is masked before), capped at the model's maximum (``ARTransformer`` ``MAX_TOKENS_PER_TEXT``).
        max_tokens: Upper bound on new audio tokens per text segment (``None``: the model's rule).
        steps, solver, cfg_scale, noise_scale: Flow-matching ODE steps, solver, guidance, initial noise.
        seed: Seeds generation (the AR model and flow matching each get a generator from it); requests
            batched together share them, so a seed reproduces a result for the same batch (a batch of one:
            per request, streamed or not as far as the AR tokens go).
    """

    temperature: float = 1.0
    top_k: int = 25
    top_p: float = 0.8
    ras_window: int = 10
    ras_threshold: float = 0.1
    eos_threshold: float | None = 1.0
    min_tokens_per_text: float = 1.0
    max_tokens: int | None = None
    steps: int = 10
    solver: str = "euler"
    cfg_scale: float = 0.7
    noise_scale: float = 1.0
    seed: int | None = None

    def ar_options(self) -> dict:
        """The keyword arguments of ``ARTransformer.generate`` this setting holds."""
        return {name: getattr(self, name) for name in AR_OPTIONS}

    def fm_options(self) -> dict:
        """The keyword arguments of ``FlowMatching.sample`` this setting holds."""
        return {name: getattr(self, name) for name in FM_OPTIONS}

    def validate(self) -> None:
        checks = {
            "temperature": (lambda v: is_number(v) and v >= 0, "must be a number >= 0 (0: greedy)"),
            "top_k": (lambda v: is_integer(v) and v >= 0, "must be an integer >= 0 (0: off)"),
            "top_p": (lambda v: is_number(v) and 0 < v <= 1, "must be a number in (0, 1]"),
            "ras_window": (lambda v: is_integer(v) and v >= 0, "must be an integer >= 0"),
            "ras_threshold": (lambda v: is_number(v) and 0 <= v <= 1, "must be a number in [0, 1]"),
            "eos_threshold": (lambda v: v is None or is_number(v) and 0 < v <= 1,
                              "must be None or a number in (0, 1]"),
            "min_tokens_per_text": (lambda v: is_number(v) and v >= 0,
                                    "must be a number >= 0 (audio tokens per BPE token of the text)"),
            "max_tokens": (lambda v: v is None or is_integer(v) and v >= 1, "must be None or an int >= 1"),
            "steps": (lambda v: is_integer(v) and v >= 1, "must be an integer >= 1"),
            "solver": (lambda v: isinstance(v, str) and v in SOLVERS, f"must be one of {list(SOLVERS)}"),
            "cfg_scale": (lambda v: is_number(v) and v >= 0, "must be a number >= 0"),
            "noise_scale": (lambda v: is_number(v) and v >= 0, "must be a number >= 0"),
            "seed": (lambda v: v is None or is_integer(v) and 0 <= v <= MAX_SEED,
                     f"must be None or an integer in [0, {MAX_SEED}]"),
        }  # fmt: skip
        for name, (ok, allowed) in checks.items():
            if not ok(getattr(self, name)):
                raise RequestError(f"sampling.{name}", f"{allowed}, got {getattr(self, name)!r}")

    def key(self) -> tuple:
        """Requests with equal keys can share one batch (the knobs are per call, not per row)."""
        return tuple(vars(self).values())


@dataclass
class TimbreWeight:
    """One voice of a timbre mix: a reference recording and its weight in [1, 100]."""

    reference: Reference
    weight: float


@dataclass
class SynthesisRequest:
    """One utterance to synthesize.

    Attributes:
        text: What to say (at most 10,000 characters); may hold pause markers ``<#x#>``.
        reference: The voice: a wav path, or a mono float array at ``reference_sample_rate``; at least 0.5 s
            and not silent (measured by the synthesizer, ``voice.check_reference``).
        prompt_text: Transcript of ``reference``; given, the synthesis is one-shot (the reference's tokens
            and latents prompt the models and are cut from the output); ``None`` is zero-shot.
        reference_sample_rate: Rate of an array ``reference`` in Hz, in ``REFERENCE_RATE_RANGE`` (``None``:
            the model's rate).
        language: Language code of ``text`` and ``prompt_text`` (selects the text normalization rules).
        voice, audio, sampling: Speech-02 ``voice_setting``, ``audio_setting`` and generation knobs.
        pronunciation_dict: Text substitutions applied before normalization: ``{"word": "spoken form"}`` or
            Speech-02 style ``["word/spoken form", ...]``.
        timbre_weights: Up to 4 voices mixed by weight (their speaker vectors are averaged); replaces
            ``reference`` and cannot be combined with one-shot ``prompt_text``.
        stream: Chunked output: such a request goes to ``Synthesizer.stream``, which yields the audio as it
            is made; ``Synthesizer.synthesize`` refuses it.
    """

    text: str
    reference: Reference | None = None
    prompt_text: str | None = None
    reference_sample_rate: int | None = None
    language: str = "en"
    voice: VoiceSetting = field(default_factory=VoiceSetting)
    audio: AudioSetting = field(default_factory=AudioSetting)
    sampling: SamplingSetting = field(default_factory=SamplingSetting)
    pronunciation_dict: dict[str, str] | list[str] | None = None
    timbre_weights: list[TimbreWeight] | None = None
    stream: bool = False

    @property
    def one_shot(self) -> bool:
        return self.prompt_text is not None

    def validate(self) -> None:
        """Checks every field.

        Raises:
            RequestError: a field is out of range; the message names the field and what it allows.
        """
        self._validate_text()
        self._validate_voice_source()
        self.voice.validate()
        self.audio.validate()
        self.sampling.validate()
        if not isinstance(self.stream, bool):
            raise RequestError("stream", f"must be True or False, got {self.stream!r}")

    def _validate_text(self) -> None:
        """``language``, ``pronunciation_dict``, then ``text`` and ``prompt_text``: strings with something to
        speak (``text_frontend.check_text``, ``check_speakable``)."""
        if not isinstance(self.language, str) or not self.language.strip():
            raise RequestError(
                "language", f"must be a language code such as 'en' or 'zh', got {self.language!r}"
            )
        pairs = self.pronunciations()
        _check_text_field("text", self.text, lambda text: check_text(text, self.language, pairs))
        if self.prompt_text is not None:
            _check_text_field(
                "prompt_text", self.prompt_text, lambda text: check_speakable(text, self.language)
            )

    def _validate_voice_source(self) -> None:
        if self.timbre_weights is None:
            if self.reference is None:
                raise RequestError("reference", "a reference voice (wav path or array) is required")
            _check_reference("reference", self.reference)
        else:
            self._validate_timbre_weights()
        rate, (lo, hi) = self.reference_sample_rate, REFERENCE_RATE_RANGE
        if rate is not None and not (is_integer(rate) and lo <= rate <= hi):
            raise RequestError(
                "reference_sample_rate",
                f"must be None (the model's rate) or an integer in [{lo}, {hi}] Hz, got {rate!r}",
            )

    def _validate_timbre_weights(self) -> None:
        voices = self.timbre_weights
        if not isinstance(voices, list) or not 1 <= len(voices) <= MAX_TIMBRE_VOICES:
            raise RequestError("timbre_weights", f"must be a list of 1 to {MAX_TIMBRE_VOICES} voices")
        if self.reference is not None:
            raise RequestError("timbre_weights", "replaces reference: give one of them, not both")
        if self.one_shot:
            raise RequestError("timbre_weights", "cannot be combined with one-shot prompt_text")
        lo, hi = TIMBRE_WEIGHT_RANGE
        for i, voice in enumerate(voices):
            if not isinstance(voice, TimbreWeight):
                raise RequestError(f"timbre_weights[{i}]", "must be a TimbreWeight(reference, weight)")
            _check_reference(f"timbre_weights[{i}].reference", voice.reference)
            if not is_number(voice.weight) or not lo <= voice.weight <= hi:
                raise RequestError(
                    f"timbre_weights[{i}].weight", f"must be in [{lo}, {hi}], got {voice.weight!r}"
                )

    def voices(self) -> list[tuple[str, Reference, float]]:
        """The references whose speaker vectors make the voice: ``(field, reference, weight)``."""
        if self.timbre_weights is None:
            return [("reference", self.reference, 1.0)]
        return [
            (f"timbre_weights[{i}].reference", v.reference, float(v.weight))
            for i, v in enumerate(self.timbre_weights)
        ]

    def pronunciations(self) -> list[tuple[str, str]]:
        """``pronunciation_dict`` as ``(written, spoken)`` pairs, longest written form first."""
        entries = self.pronunciation_dict
        if entries is None:
            return []
        if isinstance(entries, dict):
            pairs = list(entries.items())
        elif isinstance(entries, list):
            pairs = []
            for i, entry in enumerate(entries):
                if not isinstance(entry, str) or entry.count("/") < 1:
                    raise RequestError(f"pronunciation_dict[{i}]", f"must be 'written/spoken', got {entry!r}")
                pairs.append(tuple(entry.split("/", 1)))
        else:
            raise RequestError(
                "pronunciation_dict", "must be a dict {written: spoken} or a list of 'written/spoken'"
            )
        for written, spoken in pairs:
            if not isinstance(written, str) or not written.strip() or not isinstance(spoken, str):
                raise RequestError(
                    "pronunciation_dict",
                    f"entry {written!r} -> {spoken!r}: the written form must be a non-empty string and the "
                    "spoken form a string",
                )
            for form, value in (("written", written), ("spoken", spoken)):
                try:
                    check_characters(value)
                except ValueError as err:
                    raise RequestError(
                        "pronunciation_dict", f"entry {written!r} -> {spoken!r}: the {form} form {err}"
                    ) from err
        return sorted(pairs, key=lambda p: -len(p[0]))


def _check_text_field(name: str, value, check: Callable[[str], object]) -> None:
    """A string of at most ``MAX_TEXT_CHARS`` that ``check`` accepts (it raises ``ValueError`` otherwise)."""
    if not isinstance(value, str):
        raise RequestError(name, f"must be a string, got {type(value).__name__}")
    if len(value) > MAX_TEXT_CHARS:
        raise RequestError(name, f"must be at most {MAX_TEXT_CHARS} characters, got {len(value)}")
    try:
        check_characters(value)
        check(value)
    except ValueError as err:
        raise RequestError(name, str(err)) from err


def _check_reference(name: str, reference: Reference) -> None:
    """The form of a reference: an existing file or a mono float array. Its content (length, level) is
    measured when it is loaded (``voice.check_reference``)."""
    if isinstance(reference, np.ndarray):
        if reference.ndim != 1 or reference.size == 0:
            raise RequestError(
                name, f"an array reference must be mono audio of shape (t,), got {reference.shape}"
            )
        if not np.issubdtype(reference.dtype, np.floating):
            raise RequestError(
                name,
                f"an array reference must hold float samples in [-1, 1], got {reference.dtype} "
                "(16-bit integers: divide by 32768)",
            )
        return
    if not isinstance(reference, (str, Path)):
        raise RequestError(name, f"must be a wav path or a mono float array, got {type(reference).__name__}")
    if not Path(reference).is_file():
        raise RequestError(name, f"audio file not found: {reference}")
