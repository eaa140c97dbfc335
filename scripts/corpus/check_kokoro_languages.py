"""Which corpus languages Kokoro says: phoneme coverage and a round trip against espeak-ng, per language.

    python scripts/corpus/check_kokoro_languages.py                # en de es it, pools of data/synthetic_tiny
    python scripts/corpus/check_kokoro_languages.py 'languages=[de]' sentences=20 coverage=1500

No ASR here reads German, Spanish or Italian, and nobody can listen, so two checks stand in:

- *coverage*: the share of the first ``coverage`` held-out pool sentences whose espeak-ng IPA maps
  entirely into Kokoro's vocabulary (``speech.data.synthetic.phonemes``), and the symbols that do not;
- *round trip*: ``sentences`` sentences are said by Kokoro (``jm_kumo``) and by espeak-ng (its default
  voice); each Kokoro clip is matched to the espeak-ng clip with the lowest DTW cost (cosine distance of
  mean/variance-normalized MFCCs, per path step). If Kokoro says the phonemes it is given, in order, the
  match is the same sentence; ``duration-only`` is the hit rate of matching by length alone.

For English, Whisper tiny.en also transcribes the Kokoro clips (utterance-mean WER). Settings:
``configs/entry/check_kokoro_languages.yaml``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import hydra
import librosa
import numpy as np
from omegaconf import DictConfig

from speech.audio.io import resample
from speech.data.synthetic import engines, kokoro
from speech.data.synthetic.phonemes import phonemize
from speech.data.synthetic.postprocess import trim_silence
from speech.data.synthetic.programs import EngineError

RATE = 16000
VOICE = kokoro.KokoroVoice((("jm_kumo", 1.0),))


def coverage(sentences: list[str], language: str) -> tuple[float, Counter]:
    vocab, _ = kokoro.assets()
    missing: Counter = Counter()
    covered = 0
    for sentence in sentences:
        try:
            phonemize(sentence, language, vocab)
            covered += 1
        except EngineError as err:
            missing[str(err)[:80]] += 1
    return covered / len(sentences), missing


def features(wav: np.ndarray, sr: int) -> np.ndarray:
    wav = trim_silence(resample(wav, sr, RATE), RATE, margin=0.05, threshold_db=40.0)
    mfcc = librosa.feature.mfcc(y=wav, sr=RATE, n_mfcc=21, n_fft=400, hop_length=160)[1:]
    return (mfcc - mfcc.mean(axis=1, keepdims=True)) / (mfcc.std(axis=1, keepdims=True) + 1e-8)


def round_trip(sentences: list[str], language: str) -> tuple[float, float, list[np.ndarray]]:
    """(DTW hit rate, duration-only hit rate, Kokoro clips at 16 kHz)."""
    clips = [kokoro.synthesize(VOICE, language, s) for s in sentences]
    ours = [features(*c) for c in clips]
    refs = [features(*engines.synthesize("espeak-ng", "default", language, s)) for s in sentences]
    cost = np.zeros((len(ours), len(refs)))
    for i, x in enumerate(ours):
        for j, y in enumerate(refs):
            acc, path = librosa.sequence.dtw(X=x, Y=y, metric="cosine")
            cost[i, j] = acc[-1, -1] / len(path)
    n = np.arange(len(ours))
    lengths = np.array([[abs(x.shape[1] - y.shape[1]) for y in refs] for x in ours])
    wavs = [resample(w, sr, RATE) for w, sr in clips]
    return float(np.mean(cost.argmin(1) == n)), float(np.mean(lengths.argmin(1) == n)), wavs


def whisper_wer(wavs: list[np.ndarray], sentences: list[str]) -> float:
    from speech.metrics.asr.whisper_ct2 import WhisperCT2ASR
    from speech.metrics.wer import score_utterance

    hyps = WhisperCT2ASR().transcribe(wavs, language="en")
    return float(np.mean([score_utterance(s, h, "en").wer for s, h in zip(sentences, hyps, strict=True)]))


@hydra.main(config_path="../../configs", config_name="entry/check_kokoro_languages", version_base="1.3")
def main(cfg: DictConfig) -> None:
    print("| language | pool sentences covered | DTW round trip | duration-only | Whisper WER % |")
    print("|---|---:|---:|---:|---:|")
    for lang in cfg.languages:
        pool = (Path(cfg.pools) / f"{lang}.heldout.txt").read_text(encoding="utf-8").splitlines()
        share, missing = coverage(pool[: cfg.coverage], lang)
        sentences = pool[: cfg.sentences]
        hit, by_length, wavs = round_trip(sentences, lang)
        wer = f"{100 * whisper_wer(wavs, sentences):.1f}" if lang == "en" else "n/a"
        covered = f"{100 * share:.1f} % of {min(len(pool), cfg.coverage)}"
        print(f"| {lang} | {covered} | {hit:.2f} | {by_length:.2f} | {wer} |", flush=True)
        for reason, count in missing.most_common(3):
            print(f"|   {count} x {reason} | | | | |")


if __name__ == "__main__":
    main()
