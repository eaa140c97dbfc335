"""Corpus recipes: each turns a corpus on disk into a sorted list of :class:`~speech.data.records.Utterance`.

- :func:`load_libritts` -- LibriTTS and LibriTTS-R (``<subset>/<speaker>/<chapter>/*.wav`` + texts).
- :func:`load_emilia` -- Emilia, original JSONL release or extracted webdataset shards, optional DNSMOS
  filter.
- :func:`load_folder` -- any folder of audio files with a ``<stem>.txt`` transcript next to each.
- :func:`load_seedtts_meta` -- the prompt and ground-truth recordings of a Seed-TTS-eval ``meta.lst``.

Recipes only check that files exist; reading, resampling and length checks happen later in the
pipeline. Items they cannot use go to a :class:`~speech.data.rejects.RejectLog` with a reason, never an
exception; errors are raised only for what the caller asked wrongly (missing root, unknown subset ...).
"""

from speech.data.recipes.emilia import load_emilia
from speech.data.recipes.folder import load_folder
from speech.data.recipes.libritts import load_libritts
from speech.data.recipes.seedtts import load_seedtts_meta

__all__ = ["load_emilia", "load_folder", "load_libritts", "load_seedtts_meta"]
