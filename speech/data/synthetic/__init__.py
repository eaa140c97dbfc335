"""The built-in synthetic corpus: many speakers and six languages from the speech synthesizers in Debian.

espeak-ng (language voices x voice variants), flite and festival voices speak sentences from Debian's
fortunes and Japanese man pages; WORLD pitch/formant/rate warps add pseudo-speakers. Training and test
speakers are disjoint (whole base voices and unseen warps held out) and the test speakers form
Seed-TTS-eval ``meta.lst`` test sets. Build with ``python scripts/corpus/make_synthetic_corpus.py``; read with
:func:`speech.data.recipes.synthetic.load_synthetic`. See ``docs/synthetic_corpus.md``.

With the optional ``natural`` extra, Kokoro-82M (``kokoro.py``) adds natural voices: its five packaged
style tables and mixtures of them (``kokoro_voices.py``), speaking espeak-ng's phonemes (``phonemes.py``).

Its emotive renditions (``emotion_corpus.py``, ``python scripts/corpus/make_emotion_corpus.py``) re-render
some training utterances in acted emotion styles (``emotions.py``: WORLD prosody transforms) for the
per-emotion adapters; the same reader reads them, with an emotion label per utterance.
"""

from speech.data.synthetic.build import build_corpus
from speech.data.synthetic.catalog import read_manifest
from speech.data.synthetic.config import CorpusConfig, EmotionCorpusConfig
from speech.data.synthetic.emotion_corpus import build_emotion_corpus
from speech.data.synthetic.emotions import EMOTIONS, STYLES, EmotionStyle, apply_emotion
from speech.data.synthetic.programs import EngineError, EngineNotFoundError

__all__ = [
    "EMOTIONS",
    "STYLES",
    "CorpusConfig",
    "EmotionCorpusConfig",
    "EmotionStyle",
    "EngineError",
    "EngineNotFoundError",
    "apply_emotion",
    "build_corpus",
    "build_emotion_corpus",
    "read_manifest",
]
