"""New Kokoro voices from the five packaged ones: style-table mixtures and extrapolations, kept apart.

A Kokoro voice is a style table; a weighted sum of the packaged tables is a new voice. Mixtures inside the
simplex of the five sit close to each other and to the middle voices (resemblyzer cosines 0.72-0.93 for
random Dirichlet(0.5) mixtures), so draws are spread out by extrapolation,
``w = (1 + e) p - e / 5`` (``p`` flat Dirichlet, ``e`` uniform in ``[0, extrapolation]``), and a draw is
kept only if its *style distance* to every packaged voice and every kept mixture is at least
``min_distance``. The style distance is the Euclidean distance between the mean rows of two tables, in
units of the median distance between two packaged voices; it predicts resemblyzer's cosine between the
voices' speech closely (Pearson -0.91 over 136 pairs; docs/synthetic_corpus.md), so it keeps speakers apart
without rendering a word. Draws come from a generator seeded by the corpus seed: the same config and seed
give the same voices.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from speech.data.synthetic.config import KokoroConfig
from speech.data.synthetic.kokoro import BASE_VOICES, KokoroVoice, assets

MAX_DRAWS = 20000
MIXTURE_PREFIX = "mix"


@dataclass(frozen=True)
class StyleSpace:
    """The packaged voices as points: ``means`` ``(5, 256)`` mean table rows, ``unit`` the median
    distance between two of them."""

    names: tuple[str, ...]
    means: np.ndarray
    unit: float

    @classmethod
    def from_tables(cls, tables: dict[str, np.ndarray]) -> StyleSpace:
        names = tuple(n for n in BASE_VOICES if n in tables)
        means = np.stack([tables[n].astype(np.float64).mean(axis=0) for n in names])
        i, j = np.triu_indices(len(names), k=1)
        unit = float(np.median(np.linalg.norm(means[i] - means[j], axis=1)))
        return cls(names, means, unit)

    def point(self, voice: KokoroVoice) -> np.ndarray:
        weights = dict(voice.weights)
        return np.array([weights.get(n, 0.0) for n in self.names]) @ self.means

    def distance(self, a: KokoroVoice, b: KokoroVoice) -> float:
        """Style distance in units of the median packaged-voice distance."""
        return float(np.linalg.norm(self.point(a) - self.point(b)) / self.unit)


def packaged_voice(name: str) -> KokoroVoice:
    return KokoroVoice(((name, 1.0),))


def design_voices(config: KokoroConfig, seed: int) -> dict[str, KokoroVoice]:
    """The configured packaged voices and ``num_mixtures`` new ones, by voice name (``jf_alpha``,
    ``mix01``, ...).

    Raises:
        ValueError: a configured voice is not packaged, or ``num_mixtures`` voices do not fit
            ``min_distance`` apart within ``extrapolation`` (the message says what to change).
    """
    _, tables = assets()
    unknown = sorted(set(config.voices) - set(BASE_VOICES))
    if unknown:
        raise ValueError(
            f"unknown Kokoro voice(s) {unknown} in voices.kokoro.voices; known: {list(BASE_VOICES)}"
        )
    space = StyleSpace.from_tables(tables)
    voices = {name: packaged_voice(name) for name in config.voices}
    taken = [packaged_voice(name) for name in space.names]
    rng = np.random.default_rng([seed, zlib.crc32(b"kokoro-mixtures")])
    for k in range(config.num_mixtures):
        voice = _new_mixture(rng, config, space, taken)
        if voice is None:
            raise ValueError(
                f"no room for Kokoro mixture {k + 1} of {config.num_mixtures}: none of {MAX_DRAWS} draws is "
                f"voices.kokoro.min_distance={config.min_distance} away from the packaged voices and the "
                "other mixtures; lower num_mixtures or min_distance, or raise extrapolation"
            )
        taken.append(voice)
        voices[f"{MIXTURE_PREFIX}{k + 1:02d}"] = voice
    return voices


def _new_mixture(
    rng: np.random.Generator, config: KokoroConfig, space: StyleSpace, taken: list[KokoroVoice]
) -> KokoroVoice | None:
    n = len(space.names)
    for _ in range(MAX_DRAWS):
        p = rng.dirichlet(np.ones(n))
        e = rng.uniform(0.0, config.extrapolation)
        weights = (1.0 + e) * p - e / n
        speed = math.exp(rng.uniform(-math.log(config.speed_max), math.log(config.speed_max)))
        voice = KokoroVoice(
            tuple((name, round(float(w), 3)) for name, w in zip(space.names, weights, strict=True)),
            speed=round(speed, 3),
        )
        if all(space.distance(voice, other) >= config.min_distance for other in taken):
            return voice
    return None
