"""Acted emotion styles as WORLD prosody transforms: caricatures of emotion, not emotional speech.

MiniMax-Speech trains one LoRA adapter per emotion on ``<reference audio, text, target emotive audio>``
(section 4.1). None of our corpora has emotion labels, so ``emotion_corpus.py`` re-renders utterances of
the synthetic corpus in each style below. A style changes only prosody, the way the acting literature
describes it (happy: higher, wider, faster, louder; sad: lower, flatter, slower, softer, breathier; ...):

- ``pitch`` multiplies F0;
- ``pitch_range`` scales each voiced frame's log-F0 deviation from the clip's median voiced log-F0
  (< 1 flattens the melody, > 1 exaggerates it);
- ``rate`` divides the WORLD frame period (> 1 speaks faster; pauses stretch with the speech);
- ``gain_db`` is the loudness relative to the corpus target;
- ``tremolo`` modulates F0 by this relative depth at ``TREMOLO_HZ`` (a shaky voice);
- ``breathiness`` moves the aperiodicity of every bin this share of the way towards pure noise;
- ``final_rise`` raises F0 by this many semitones, ramping up over the last ``FINAL_RISE_S`` of the voiced
  frames (the question-like rise of surprise).

Voice quality beyond breathiness, articulation, spectral tilt and word choice are untouched: a model
trained on these renditions learns the prosody of a caricature, not how people sound when they feel.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from speech.audio import world

NEUTRAL = "neutral"
# The Speech-02 emotion set (the T2A API's ``voice_setting.emotion``).
EMOTIONS = ("happy", "sad", "angry", "fearful", "disgusted", "surprised", "calm", "fluent")
TREMOLO_HZ = 5.5  # physiological vocal tremor sits at 4-7 Hz
FINAL_RISE_S = 0.4  # seconds of voiced speech (before the rate change) the final rise ramps over


@dataclass(frozen=True)
class EmotionStyle:
    """Prosody factors of one acted emotion; the defaults change nothing.

    Attributes:
        pitch: F0 mean factor.
        pitch_range: Factor on each voiced frame's log-F0 deviation from the median voiced log-F0.
        rate: Speaking-rate factor, > 1 faster.
        gain_db: Loudness relative to the corpus target, dB.
        tremolo: Relative depth of the F0 modulation at ``TREMOLO_HZ`` (0.05 = +-5 %).
        breathiness: Share of the way each aperiodicity bin moves towards 1 (pure noise), in [0, 1].
        final_rise: Semitones F0 rises over the last ``FINAL_RISE_S`` of voiced frames.
    """

    pitch: float = 1.0
    pitch_range: float = 1.0
    rate: float = 1.0
    gain_db: float = 0.0
    tremolo: float = 0.0
    breathiness: float = 0.0
    final_rise: float = 0.0

    def __post_init__(self) -> None:
        for name in ("pitch", "rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"EmotionStyle.{name} must be > 0, got {getattr(self, name)}")
        if self.pitch_range < 0:
            raise ValueError(f"EmotionStyle.pitch_range must be >= 0, got {self.pitch_range}")
        if not 0 <= self.tremolo < 1:
            raise ValueError(f"EmotionStyle.tremolo must be in [0, 1), got {self.tremolo}")
        if not 0 <= self.breathiness <= 1:
            raise ValueError(f"EmotionStyle.breathiness must be in [0, 1], got {self.breathiness}")

    @property
    def is_identity(self) -> bool:
        return self == EmotionStyle()

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


# Distinct and plausible directions, kept moderate so that WORLD stays clean (docs/synthetic_corpus.md).
STYLES: dict[str, EmotionStyle] = {
    NEUTRAL: EmotionStyle(),
    "happy": EmotionStyle(pitch=1.15, pitch_range=1.4, rate=1.1, gain_db=3.0),
    "sad": EmotionStyle(pitch=0.88, pitch_range=0.55, rate=0.8, gain_db=-5.0, breathiness=0.3),
    "angry": EmotionStyle(pitch=1.06, pitch_range=1.3, rate=1.12, gain_db=5.0),
    "fearful": EmotionStyle(
        pitch=1.2, pitch_range=1.1, rate=1.15, gain_db=-1.0, tremolo=0.06, breathiness=0.1
    ),
    "disgusted": EmotionStyle(pitch=0.9, pitch_range=0.8, rate=0.88, gain_db=-1.0),
    "surprised": EmotionStyle(pitch=1.25, pitch_range=1.5, gain_db=2.0, final_rise=4.0),
    "calm": EmotionStyle(pitch=0.97, pitch_range=0.65, rate=0.9, gain_db=-3.0, breathiness=0.1),
    "fluent": EmotionStyle(pitch_range=0.9, rate=1.08),
}


def apply_emotion(wav: np.ndarray, sample_rate: int, style: EmotionStyle) -> np.ndarray:
    """Re-renders ``wav`` in ``style`` with WORLD: :func:`world.analyze` then :func:`render_style`.

    Every style resynthesizes, the identity one too: a neutral rendition then carries the same vocoder
    colouring as the emotive ones and differs from them in prosody only.

    Args:
        wav: Mono float audio, shape ``(t,)``.
        sample_rate: Its rate.
        style: The prosody factors.

    Returns:
        float32 audio of shape ``(t',)``, ``t' ~ t / style.rate``.

    Raises:
        ValueError, RuntimeError: WORLD cannot analyse the clip (e.g. too short).
    """
    return render_style(world.analyze(wav, sample_rate), style)


def render_style(features: world.WorldFeatures, style: EmotionStyle) -> np.ndarray:
    """Resynthesizes analysed audio in ``style``; one analysis serves every style of a clip.

    ``gain_db`` scales the result relative to the plain resynthesis; a corpus then sets the exact level
    (its target loudness + ``gain_db``), since moving F0 and aperiodicity changes the level a little too.

    Returns:
        float32 audio of shape ``(t',)``, ``t' ~ frames * frame_period / style.rate``.
    """
    styled = replace(
        features,
        f0=style_f0(features.f0, style, frame_period_ms=features.frame_period_ms),
        aperiodicity=breathe(features.aperiodicity, features.f0 > 0, style.breathiness),
    )
    y = world.synthesize(styled, rate=style.rate)
    return (y * 10.0 ** (style.gain_db / 20.0)).astype(np.float32)


def style_f0(f0: np.ndarray, style: EmotionStyle, *, frame_period_ms: float) -> np.ndarray:
    """Applies the style's pitch, range, tremolo and final rise to an F0 contour.

    Args:
        f0: F0 per frame in Hz, 0 where unvoiced; shape ``(f,)``.
        style: The prosody factors.
        frame_period_ms: Analysis frame spacing; with ``style.rate`` it times the tremolo in the output.

    Returns:
        The new contour, shape ``(f,)``; unvoiced frames stay 0.
    """
    voiced = f0 > 0
    if not voiced.any():
        return f0
    log_f0 = np.log(f0[voiced])
    center = np.median(log_f0)
    log_f0 = center + style.pitch_range * (log_f0 - center) + math.log(style.pitch)
    out = np.zeros_like(f0)
    out[voiced] = np.exp(log_f0)
    if style.tremolo:
        # timed in the output, whose frames are frame_period / rate apart, so the tremor keeps its rate
        seconds = np.arange(f0.size) * frame_period_ms / 1000.0 / style.rate
        out *= 1.0 + style.tremolo * np.sin(2.0 * math.pi * TREMOLO_HZ * seconds)
    if style.final_rise:
        ramp_frames = max(1, int(round(FINAL_RISE_S * 1000.0 / frame_period_ms)))
        last = np.flatnonzero(voiced)[-ramp_frames:]
        semitones = np.linspace(0.0, style.final_rise, last.size + 1)[1:]
        out[last] *= 2.0 ** (semitones / 12.0)
    return out


def breathe(aperiodicity: np.ndarray, voiced: np.ndarray, amount: float) -> np.ndarray:
    """Moves the aperiodicity of voiced frames ``amount`` of the way towards 1 (noise).

    Args:
        aperiodicity: WORLD aperiodicity in [0, 1], shape ``(f, k)``.
        voiced: Which frames are voiced, shape ``(f,)``; unvoiced frames are noise already.
        amount: In [0, 1]; 0 returns ``aperiodicity`` unchanged.
    """
    if not amount:
        return aperiodicity
    out = aperiodicity.copy()
    out[voiced] += amount * (1.0 - out[voiced])
    return out
