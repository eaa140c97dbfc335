"""Settings of the synthetic corpus generator: the ``synthetic:`` block of ``configs/data/synthetic_*.yaml``,
and of its emotive renditions: the ``emotion_corpus:`` block of ``configs/data/synthetic_emotion_*.yaml``.

Plain frozen dataclasses, so the library never sees a Hydra ``DictConfig``; :meth:`CorpusConfig.from_dict`
and :meth:`EmotionCorpusConfig.from_dict` turn the resolved YAML block into one and name any key they do
not know.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from speech.data.synthetic.emotions import EMOTIONS, NEUTRAL, STYLES


@dataclass(frozen=True)
class TextConfig:
    """Where sentences come from and which ones are kept.

    Attributes:
        fortune_dir: Root of the ``fortunes*`` packages (en at the top, ``de/``, ``es/``, ``it/``, and the
            Chinese files ``chinese``, ``tang300``, ``song100``).
        man_ja_dir: Root of the Japanese man pages (``manpages-ja``), the Japanese prose source.
        max_sentences_per_language: Size cap of each language's sentence pool.
        heldout_sentences_per_language: Sentences reserved for the test speakers; training never says them.
        min_seconds: Shortest estimated spoken length kept (from characters per second of each language).
        max_seconds: Longest estimated spoken length kept.
    """

    fortune_dir: str = "/usr/share/games/fortunes"
    man_ja_dir: str = "/usr/share/man/ja"
    max_sentences_per_language: int = 1500
    heldout_sentences_per_language: int = 300
    min_seconds: float = 1.5
    max_seconds: float = 10.0


# espeak-ng variants left out by default. Effects: whispered or unvoiced, unstable, heavy echo or robot
# filters, one that forces en-us. Near-duplicates: the mean resemblyzer embedding of 4 English sentences
# has cosine >= 0.92 with an earlier kept variant (order: default, m1-8, f1-5, klatt*, then by name); for
# scale, flite kal16 and festival kal_diphone, one person through two synthesizers, score 0.93.
ESPEAK_EFFECT_VARIANTS = [
    "whisper", "whisperf", "caleb", "fast", "Demonic", "announcer", "UniRobot", "anikaRobot", "RicishayMax",
    "RicishayMax2", "RicishayMax3", "robosoft", "robosoft2", "robosoft3", "robosoft4", "robosoft5",
    "robosoft6", "robosoft7", "robosoft8", "Storm",
]  # fmt: skip
ESPEAK_DUPLICATE_VARIANTS = [
    "Alex", "Gene2", "Henrique", "Michael", "Mike", "adam", "aunty", "croak", "edward2", "f2", "f4",
    "grandpa", "iven2", "iven3", "john", "klatt2", "klatt3", "klatt5", "klatt6", "linda", "m1", "m2", "m3",
    "m4", "m5", "m6", "marcelo", "max", "michel", "miguel", "robert", "steph2", "steph3",
]  # fmt: skip


@dataclass(frozen=True)
class KokoroConfig:
    """Natural voices from Kokoro-82M (``kokoro.py``, the ``natural`` extra); off by default.

    Besides the packaged voices themselves, new voices are weighted sums of the five packaged style tables:
    ``w = (1 + e) p - e / 5`` with ``p`` from a flat Dirichlet over the tables and ``e`` uniform in
    ``[0, extrapolation]`` (0: mixtures only; larger: extrapolations beyond the packaged voices, with
    negative weights). A draw is kept only if it lies ``min_distance`` away from every packaged voice and
    every kept mixture (``kokoro_voices.py``).

    Attributes:
        voices: Packaged voices used as themselves (``jf_alpha``, ``jf_gongitsune``, ``jf_nezumi``,
            ``jf_tebukuro``, ``jm_kumo``).
        num_mixtures: New voices from mixtures and extrapolations (``kokoro-mix01``, ...).
        extrapolation: Largest ``e`` above. Far extrapolations (weights beyond ~1.1) lose intelligibility
            (Whisper WER 18-32 % against 1-18 % for the packaged voices; docs/synthetic_corpus.md).
        min_distance: Smallest distance between two voices in style space (the mean row of a style table),
            in units of the median distance between two packaged voices. Measured with resemblyzer
            (docs/synthetic_corpus.md): voices 0.5 apart score cosines <= 0.86, one voice 0.91 on average.
        speed_max: A mixture speaks at a Kokoro speed drawn log-uniformly in ``[1 / speed_max, speed_max]``;
            the packaged voices at 1.
        languages: Corpus languages the Kokoro voices speak (phonemes from espeak-ng; ``phonemes.py``
            supports en, de, es, it).
    """

    voices: list[str] = field(default_factory=list)
    num_mixtures: int = 0
    extrapolation: float = 1.0
    min_distance: float = 0.5
    speed_max: float = 1.1
    languages: list[str] = field(default_factory=lambda: ["en"])


@dataclass(frozen=True)
class VoiceConfig:
    """Which base voices exist.

    Attributes:
        espeak_variants: espeak-ng variant names to use; ``None`` takes every installed variant except
            ``espeak_exclude``. ``"default"`` is the language voice without a variant.
        espeak_exclude: Variants left out: effects and measured near-duplicates (see above).
        flite: flite voices (English).
        festival: festival voices (English and Italian).
        kokoro: Kokoro-82M voices (none by default).
    """

    espeak_variants: list[str] | None = None
    espeak_exclude: list[str] = field(
        default_factory=lambda: [*ESPEAK_EFFECT_VARIANTS, *ESPEAK_DUPLICATE_VARIANTS]
    )
    flite: list[str] = field(default_factory=lambda: ["kal16", "awb", "rms", "slt"])
    festival: list[str] = field(
        default_factory=lambda: [
            "kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts", "lp_diphone", "pc_diphone",
        ]
    )  # fmt: skip
    kokoro: KokoroConfig = field(default_factory=KokoroConfig)


@dataclass(frozen=True)
class WarpConfig:
    """Ranges of the WORLD pseudo-speaker warps; factors are drawn log-uniformly.

    A warped speaker moves pitch and formants away from its base by at least the ``min`` factor (up or
    down, at random), so that it is a new voice rather than its base with noise.

    Attributes:
        pitch_min: Smallest pitch change, e.g. 1.12 means at least 12 % up or down.
        pitch_max: Largest pitch change.
        formant_min: Smallest spectral-envelope (formant) stretch.
        formant_max: Largest spectral-envelope stretch.
        rate_max: Speaking-rate factors are drawn from ``[1 / rate_max, rate_max]``.
        min_distance: Test warps of a training voice stay at least this far (in units of the ``min``
            factors) from every training warp of that voice, so their warp parameters are unseen.
    """

    pitch_min: float = 1.12
    pitch_max: float = 1.45
    formant_min: float = 1.06
    formant_max: float = 1.18
    rate_max: float = 1.12
    min_distance: float = 1.0


@dataclass(frozen=True)
class SpeakerConfig:
    """How many speakers of each kind, and which voices are held out.

    Attributes:
        num_train: Training speakers: every training base voice once, plus warps until this many.
        heldout_voices: Base voices (``<engine>-<voice>`` names) whose every speaker is a test speaker;
            voices of the same person (flite ``kal16`` and festival ``kal_diphone``) go with them.
        num_heldout_espeak: Further espeak-ng variants, drawn at random, held out whole.
        num_heldout_kokoro: Kokoro mixtures (``voices.kokoro.num_mixtures``), drawn at random, held out
            whole: new points of the style space, ``min_distance`` away from every training voice.
        num_unseen_warps: Test speakers that are new warps of training voices.
        warp_engine_weights: How many times each base voice of an engine appears in the round robin
            that hands out training warps (flite's and festival's few voices get more warps).
    """

    num_train: int = 120
    heldout_voices: list[str] = field(default_factory=lambda: ["flite-rms", "festival-ked", "festival-pc"])
    num_heldout_espeak: int = 8
    num_heldout_kokoro: int = 0
    num_unseen_warps: int = 6
    warp_engine_weights: dict[str, int] = field(
        default_factory=lambda: {"espeak-ng": 1, "flite": 3, "festival": 3}
    )


@dataclass(frozen=True)
class UtteranceConfig:
    """How many utterances each speaker says.

    Attributes:
        per_train_speaker: Training utterances of each training speaker.
        language_weights: Relative frequency of each language for speakers that speak several; the keys
            are the corpus languages.
        test_en_per_speaker: English test utterances of each English-speaking test speaker.
        test_multi_per_speaker: Test utterances per other language of each test speaker speaking it.
        cross_items_per_speaker: ``test-synth-cross`` items of each multilingual test speaker.
    """

    per_train_speaker: int = 13
    language_weights: dict[str, float] = field(
        default_factory=lambda: {"en": 0.4, "de": 0.12, "es": 0.12, "it": 0.12, "zh": 0.12, "ja": 0.12}
    )
    test_en_per_speaker: int = 14
    test_multi_per_speaker: int = 4
    cross_items_per_speaker: int = 10


@dataclass(frozen=True)
class AudioConfig:
    """Post-processing of every clip.

    Attributes:
        trim_margin: Silence kept before the first and after the last active frame, seconds.
        trim_threshold_db: Frames quieter than the loudest frame by more than this are silence.
        loudness_db: Target RMS level of the active frames, dBFS.
        peak: Largest absolute sample value after normalization.
        min_duration: Shorter clips are rejected, seconds.
        max_duration: Longer clips are rejected, seconds.
    """

    trim_margin: float = 0.1
    trim_threshold_db: float = 40.0
    loudness_db: float = -23.0
    peak: float = 0.95
    min_duration: float = 1.0
    max_duration: float = 15.0


@dataclass(frozen=True)
class CorpusConfig:
    """Everything that decides the corpus; the same config and seed give a byte-identical corpus.

    The defaults are the ``synthetic_tiny`` corpus (``configs/data/synthetic_tiny.yaml`` spells them out).
    ``test_set_prefix`` names the test sets: ``<prefix>-en``, ``<prefix>-multi``, ``<prefix>-cross``.
    """

    seed: int = 1234
    languages: list[str] = field(default_factory=lambda: ["en", "de", "es", "it", "zh", "ja"])
    text: TextConfig = field(default_factory=TextConfig)
    voices: VoiceConfig = field(default_factory=VoiceConfig)
    warp: WarpConfig = field(default_factory=WarpConfig)
    speakers: SpeakerConfig = field(default_factory=SpeakerConfig)
    utterances: UtteranceConfig = field(default_factory=UtteranceConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    separability_utts_per_speaker: int = 6
    test_set_prefix: str = "test-synth"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CorpusConfig:
        """Builds the config from a plain nested dict (e.g. ``OmegaConf.to_container(cfg.data.synthetic)``).

        Raises:
            ValueError: a key is not a setting (the message lists the known ones).
        """
        return _from_dict(cls, values, "synthetic")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class EmotionCorpusConfig:
    """Which utterances of a built synthetic corpus are re-rendered in which emotion styles.

    Attributes:
        seed: Picks the speakers and utterances; the same seed and source give the same corpus.
        emotions: Style names (``speech.data.synthetic.emotions.STYLES``). ``neutral`` is added first when
            missing: the neutral renditions are the speaker references of the emotive ones.
        num_speakers: Training speakers of the source, drawn among those with ``utts_per_speaker``
            utterances in ``languages``.
        utts_per_speaker: Source utterances per speaker; each is rendered once per emotion.
        languages: Languages of the picked utterances.
        audio: Trimming, loudness (each style adds its ``gain_db``) and duration limits of the renditions.
    """

    seed: int = 1234
    emotions: list[str] = field(default_factory=lambda: [NEUTRAL, *EMOTIONS])
    num_speakers: int = 24
    utts_per_speaker: int = 6
    languages: list[str] = field(default_factory=lambda: ["en"])
    audio: AudioConfig = field(default_factory=AudioConfig)

    def __post_init__(self) -> None:
        unknown = [name for name in self.emotions if name not in STYLES]
        if unknown:
            raise ValueError(
                f"unknown emotion(s) {unknown} in emotion_corpus.emotions; known: {list(STYLES)}"
            )
        repeated = sorted({name for name in self.emotions if self.emotions.count(name) > 1})
        if repeated:
            raise ValueError(f"emotion_corpus.emotions lists {repeated} more than once")
        if NEUTRAL not in self.emotions:
            object.__setattr__(self, "emotions", [NEUTRAL, *self.emotions])
        for name in ("num_speakers", "utts_per_speaker"):
            if getattr(self, name) < 1:
                raise ValueError(f"emotion_corpus.{name} must be >= 1, got {getattr(self, name)}")
        if not self.languages:
            raise ValueError("emotion_corpus.languages is empty; name at least one language, e.g. [en]")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EmotionCorpusConfig:
        """Builds the config from a plain nested dict (``OmegaConf.to_container(cfg.data.emotion_corpus)``
        without its ``source`` key).

        Raises:
            ValueError: a key is not a setting, an emotion is unknown (the messages list the known ones), or
                a count is below 1.
        """
        return _from_dict(cls, values, "emotion_corpus")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _from_dict(cls: type, values: dict[str, Any], where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown} in {where}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        default = fields[name].default_factory  # type: ignore[misc]
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            value = _from_dict(default, value, f"{where}.{name}")
        kwargs[name] = value
    return cls(**kwargs)
