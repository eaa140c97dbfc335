"""Voices encoded once: each reference's speaker vectors and one-shot prompt, per served checkpoint.

Legend: c speaker dim, k prompt tokens, l prompt latent frames (2k), d latent dim.

The synthesizer encodes the references of every request (``VoiceEncoder.speakers``, ``prompts``). Served
voices are few and fixed, so the server encodes each once and hands the synthesizer the result: it swaps the
synthesizer's ``VoiceEncoder`` for a :class:`StoredVoiceEncoder`, which takes the :class:`Features` of a
reference it knows (by identity: the waveform array :meth:`VoiceFeatures.reference` returned) and encodes the
others as before. Nothing else of the synthesizer changes, so the audio is what it was.

Features are kept in memory (least recently used first out, at most ``max_bytes`` of reference audio) and,
for cloned voices, in the store next to the reference: ``voices/<voice_id>.<model id>.pt``, written when the
voice is cloned, before its row (``VoiceStore.clone``). A file holds the id of the checkpoints that made it
(:func:`model_id`: a hash of the weights voice encoding reads) and the sha256 of the wav it encodes; one made
by other checkpoints, or of another wav, is not used: the voice is encoded again, once, and its file for the
serving checkpoints written. System voices (the config's wavs) are encoded on first use, in memory only.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from speech.audio.io import AudioError
from speech.checkpoints import file_sha256
from speech.inference import Synthesizer
from speech.inference.voice import Prompt, VoiceEncoder, check_reference, load_reference
from speech.serve.voices import VoiceStore

log = logging.getLogger(__name__)
FORMAT = 1  # version of the stored files' layout
ID_CHARS = 16  # of the model id, in the stored file's name


@dataclass(frozen=True)
class Features:
    """What inference needs of one reference: ``ar (c_ar,)``, ``fm (c_fm,)`` speaker vectors and, for a
    one-shot voice, its ``prompt`` (tokens ``(k,)``, latents ``(l, d)``)."""

    ar: torch.Tensor
    fm: torch.Tensor
    prompt: Prompt | None = None

    def to_bytes(self, model: str, reference_sha256: str) -> bytes:
        """The features as a ``torch.save`` file naming the checkpoints and the wav that made them."""
        # clone(): a row is a view of its batch, whose whole storage torch.save would write
        state = {"format": FORMAT, "model_id": model, "reference_sha256": reference_sha256,
                 "ar": self.ar.cpu().clone(), "fm": self.fm.cpu().clone()}  # fmt: skip
        if self.prompt is not None:
            state["prompt_tokens"] = self.prompt.tokens.cpu().clone()
            state["prompt_latents"] = self.prompt.latents.cpu().clone()
        buffer = io.BytesIO()
        torch.save(state, buffer)
        return buffer.getvalue()

    @classmethod
    def from_file(cls, path: Path, model: str, reference_sha256: str, device) -> Features | None:
        """The features stored at ``path`` if they were made by ``model`` of that wav, else ``None``."""
        try:
            state = torch.load(path, map_location=device, weights_only=True)
        except FileNotFoundError:
            return None
        except Exception as err:  # a damaged file is encoded again
            log.warning("%s: unreadable stored voice features (%s); encoding the voice again", path, err)
            return None
        if state.get("format") != FORMAT or state.get("model_id") != model:
            return None
        if state.get("reference_sha256") != reference_sha256:
            return None
        prompt = None
        if "prompt_tokens" in state:
            prompt = Prompt(state["prompt_tokens"], state["prompt_latents"])
        return cls(state["ar"], state["fm"], prompt)


def model_id(synth: Synthesizer) -> str:
    """sha256 of what voice encoding reads: the weights (parameters and saved buffers) of the mel front end,
    the AR and flow-matching models (their speaker encoders), the audio tokenizer and the Flow-VAE, and the
    encoder's settings. Features stored under another id came from other checkpoints."""
    voice = synth.voice
    digest = hashlib.sha256(repr((voice.frames_per_token, voice.max_reference_seconds)).encode())
    modules = {"mel": voice.mel, "ar": synth.ar, "fm": synth.fm, "tokenizer": voice.audio_tokenizer,
               "flow_vae": synth.flow_vae}  # fmt: skip
    for prefix, module in modules.items():
        for name, tensor in module.state_dict().items():
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{prefix}.{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class StoredVoiceEncoder(VoiceEncoder):
    """A ``VoiceEncoder`` that takes the stored :class:`Features` of the waveforms it was given
    (:meth:`remember`) instead of encoding them; it encodes the others as ``VoiceEncoder`` does.

    Args:
        encoder: The synthesizer's encoder (its models and settings are taken over).
    """

    def __init__(self, encoder: VoiceEncoder) -> None:
        super().__init__(
            encoder.mel, encoder.ar_speaker, encoder.fm_speaker, encoder.audio_tokenizer, encoder.flow_vae,
            frames_per_token=encoder.frames_per_token, max_reference_seconds=encoder.max_reference_seconds,
        )  # fmt: skip
        self._known: dict[int, tuple[np.ndarray, Features]] = {}
        self._lock = threading.Lock()

    def remember(self, wav: np.ndarray, features: Features) -> None:
        with self._lock:
            self._known[id(wav)] = (wav, features)

    def forget(self, wav: np.ndarray) -> None:
        with self._lock:
            self._known.pop(id(wav), None)

    def known(self, wav: np.ndarray) -> Features | None:
        """The features given for this very array (not an equal one), or ``None``."""
        with self._lock:
            entry = self._known.get(id(wav))
        return entry[1] if entry is not None and entry[0] is wav else None

    def encode(self, wav: np.ndarray, one_shot: bool) -> Features:
        """The features of one reference ``(t,)`` at the models' rate, encoded alone."""
        ar, fm = super().reference_vectors([wav])
        prompt = super().prompts([wav])[0] if one_shot else None
        return Features(ar[0], fm[0], prompt)

    @torch.inference_mode()
    def reference_vectors(self, wavs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """As ``VoiceEncoder.reference_vectors``; the known references are not encoded (the mixing of
        ``speakers`` is the base class's)."""
        stored = [self.known(w) for w in wavs]
        missing = [w for w, f in zip(wavs, stored, strict=True) if f is None]
        if missing:
            ar, fm = super().reference_vectors(missing)
            fresh = iter(Features(a, f) for a, f in zip(ar, fm, strict=True))
            stored = [f if f is not None else next(fresh) for f in stored]
        return torch.stack([f.ar for f in stored]), torch.stack([f.fm for f in stored])

    @torch.inference_mode()
    def prompts(self, wavs: list[np.ndarray]) -> list[Prompt]:
        """As ``VoiceEncoder.prompts``; the known references with a prompt are not encoded."""
        stored = [f.prompt if (f := self.known(w)) is not None else None for w in wavs]
        missing = [w for w, p in zip(wavs, stored, strict=True) if p is None]
        fresh = iter(super().prompts(missing) if missing else [])
        return [p if p is not None else next(fresh) for p in stored]


@dataclass
class _Entry:
    wav: np.ndarray
    features: Features


class VoiceFeatures:
    """The features of the served voices for one synthesizer: in memory, and on disk for cloned voices.

    Installs a :class:`StoredVoiceEncoder` on ``synth``.

    Args:
        synth: The synthesizer (every model name it serves shares this).
        store: Where cloned voices and their feature files live.
        lock: Held while encoding: the synthesizer's lock in the engine when it has emotion adapters (one
            changes the AR model's weights while it is applied); ``None``: encoding runs beside generation
            (the encoders only read their weights).
        max_bytes: Reference audio kept in memory with its features, at most.
    """

    def __init__(
        self, synth: Synthesizer, store: VoiceStore, lock: threading.Lock | None, max_bytes: int = 512 << 20
    ) -> None:
        self.synth, self.store, self.lock, self.max_bytes = synth, store, lock, max_bytes
        if not isinstance(synth.voice, StoredVoiceEncoder):
            synth.voice = StoredVoiceEncoder(synth.voice)
        self.encoder: StoredVoiceEncoder = synth.voice
        self.model_id = model_id(synth)
        self._cache: OrderedDict[tuple, _Entry] = OrderedDict()
        self._bytes = 0
        self._cache_lock = threading.Lock()
        self._load_lock = threading.Lock()  # one voice is loaded or encoded at a time: each once

    @property
    def file_suffix(self) -> str:
        """``<model id>.pt``: the name of this synthesizer's feature file of a cloned voice after its id."""
        return f"{self.model_id[:ID_CHARS]}.pt"

    def reference(self, path: str | Path, one_shot: bool) -> np.ndarray | None:
        """The waveform whose features the synthesizer will use instead of encoding ``path``; ``None`` for a
        reference that cannot be used (the synthesizer then reports why, naming the field).

        Memory, else the store's feature file (cloned voices), else the reference is encoded, once.
        """
        path = Path(path)
        try:
            stat = path.stat()
        except OSError:
            return None
        key = (str(path), stat.st_mtime_ns, stat.st_size)  # a voice deleted and cloned again is another
        entry = self._cached(key, one_shot)
        if entry is None:
            with self._load_lock:
                entry = self._cached(key, one_shot) or self._load(path, key, one_shot)
        return None if entry is None else entry.wav

    def _cached(self, key: tuple, one_shot: bool) -> _Entry | None:
        with self._cache_lock:
            entry = self._cache.get(key)
            if entry is None or (one_shot and entry.features.prompt is None):
                return None
            self._cache.move_to_end(key)
            return entry

    def encode_clone(self, wav_path: Path, one_shot: bool) -> tuple[np.ndarray, Features, bytes]:
        """A new voice's features, encoded from its wav (``VoiceStore.clone``): ``(wav, features, file)``.

        Raises:
            AudioError: the reference cannot give a voice (``voice.check_reference``).
        """
        wav = load_reference(wav_path, self.synth.sample_rate)
        check_reference(wav, self.synth.sample_rate)
        features = self._encode(wav, one_shot)
        return wav, features, features.to_bytes(self.model_id, file_sha256(wav_path))

    def add(self, path: Path, wav: np.ndarray, features: Features) -> None:
        """Keeps a just cloned voice's features in memory."""
        stat = path.stat()
        self._keep((str(path), stat.st_mtime_ns, stat.st_size), _Entry(wav, features))

    def _load(self, path: Path, key: tuple, one_shot: bool) -> _Entry | None:
        try:
            wav = load_reference(path, self.synth.sample_rate)
            check_reference(wav, self.synth.sample_rate)
        except AudioError:
            return None
        cloned = self.store.owns(path)
        features, digest = None, file_sha256(path) if cloned else None
        if cloned:
            stored = path.with_name(f"{path.stem}.{self.file_suffix}")
            features = Features.from_file(stored, self.model_id, digest, self.synth.device)
            if features is not None and one_shot and features.prompt is None:
                features = None
        if features is None:
            features = self._encode(wav, one_shot)
            if cloned:
                log.info("%s: encoded for checkpoints %s and stored", path.name, self.model_id[:ID_CHARS])
                data = features.to_bytes(self.model_id, digest)
                self.store.add_voice_file(path.stem, self.file_suffix, data)
        entry = _Entry(wav, features)
        self._keep(key, entry)
        return entry

    def _encode(self, wav: np.ndarray, one_shot: bool) -> Features:
        with self.lock or nullcontext():
            return self.encoder.encode(wav, one_shot)

    def _keep(self, key: tuple, entry: _Entry) -> None:
        """Remembers ``entry`` (in the encoder too), dropping the least recently used beyond ``max_bytes``."""
        with self._cache_lock:
            old = self._cache.pop(key, None)
            if old is not None:
                self._drop(old)
            self._cache[key] = entry
            self._bytes += entry.wav.nbytes
            self.encoder.remember(entry.wav, entry.features)
            while self._bytes > self.max_bytes and len(self._cache) > 1:
                self._drop(self._cache.popitem(last=False)[1])

    def _drop(self, entry: _Entry) -> None:
        self._bytes -= entry.wav.nbytes
        self.encoder.forget(entry.wav)
