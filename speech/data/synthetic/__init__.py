"""The built-in synthetic corpus: many speakers and six languages from the speech synthesizers in Debian.

espeak-ng (language voices x voice variants), flite and festival voices speak sentences from Debian's
fortunes and Japanese man pages; WORLD pitch/formant/rate warps add pseudo-speakers. Training and test
speakers are disjoint (whole base voices and unseen warps held out) and the test speakers form
Seed-TTS-eval ``meta.lst`` test sets. Build with ``python scripts/make_synthetic_corpus.py``; read with
:func:`speech.data.recipes.synthetic.load_synthetic`. See ``docs/synthetic_corpus.md``.
"""

from speech.data.synthetic.build import build_corpus
from speech.data.synthetic.catalog import read_manifest
from speech.data.synthetic.config import CorpusConfig
from speech.data.synthetic.engines import EngineError, EngineNotFoundError

__all__ = ["CorpusConfig", "EngineError", "EngineNotFoundError", "build_corpus", "read_manifest"]
