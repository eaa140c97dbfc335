"""What the app serves, built from the server config (configs/entry/serve.yaml, as a plain dict).

Keys: ``models`` (name -> ``{ar_ckpt, fm_ckpt, tokenizer_ckpt, flow_vae_ckpt, emotion_adapters}``),
``device``, ``auth`` (``true``: every route but ``/health`` and the audio URLs needs ``Authorization: Bearer
<key>``; ``false``: no auth, for local use), ``api_keys`` (a list) and ``api_keys_env`` (an environment
variable holding more, comma-separated), ``store`` (the folder of cloned voices, uploads and URL audio),
``system_voices``
(voice_id -> ``{wav, transcript, name, description, language}``), ``batching`` (``max_batch``,
``queue_size``, ``wait_ms``, ``max_streams``), ``sampling`` (``SamplingSetting`` fields for every request),
``language`` (the default text language), ``stream_chunk_tokens``, ``url_ttl_s``, ``upload``
(``max_bytes``, ``min_seconds``, ``max_seconds``) and ``voice_cache_mb`` (reference audio kept in memory with
its encoded features, per loaded synthesizer).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from speech.audio.io import AudioError
from speech.inference import SamplingSetting, SynthesisRequest, Synthesizer
from speech.serve.engine import Engine
from speech.serve.errors import AUTH_FAILED, ApiError
from speech.serve.features import VoiceFeatures
from speech.serve.outputs import AudioFiles
from speech.serve.voices import UploadLimits, Voice, VoiceStore, check_voice_id


@dataclass
class Server:
    """The served models, voices, stored audio and the server's settings."""

    engine: Engine
    voices: VoiceStore
    files: AudioFiles
    sampling: SamplingSetting
    api_keys: tuple[str, ...]
    auth: bool = True
    language: str = "en"
    chunk_tokens: int = 25
    features: dict[str, VoiceFeatures] = field(default_factory=dict)  # model name -> its voices' features

    @property
    def models(self) -> list[str]:
        return list(self.engine.synthesizers)

    def bind_voices(self, model: str, request: SynthesisRequest) -> None:
        """Points the request's voice references (wav paths) at the waveforms whose features the model's
        synthesizer keeps, so that it does not encode them (``features.VoiceFeatures``). Encodes a voice the
        first time it is used with these checkpoints: call it off the event loop."""
        features = self.features.get(model)
        if features is None or request.reference_sample_rate is not None:
            return
        if request.timbre_weights is None:
            if isinstance(request.reference, (str, Path)):
                wav = features.reference(request.reference, request.one_shot)
                request.reference = request.reference if wav is None else wav
            return
        for voice in request.timbre_weights:
            if isinstance(voice.reference, (str, Path)):
                wav = features.reference(voice.reference, one_shot=False)
                voice.reference = voice.reference if wav is None else wav

    def voice_files(self, wav: Path, one_shot: bool) -> tuple[dict[str, bytes], Callable[[Path], None]]:
        """A new voice's feature files for every loaded synthesizer (``VoiceStore.clone``'s ``files``).

        Raises:
            ApiError: 2013 when the audio cannot give a voice (``voice.check_reference``).
        """
        made, files = [], {}
        for cache in {id(f): f for f in self.features.values()}.values():  # once per synthesizer
            try:
                loaded, features, data = cache.encode_clone(wav, one_shot)
            except AudioError as err:
                raise ApiError.invalid("file_id", f"the audio {err}") from err
            files[cache.file_suffix] = data
            made.append((cache, loaded, features))

        def keep(final: Path) -> None:  # the clone is stored: its features stay in memory
            for cache, loaded, features in made:
                cache.add(final, loaded, features)

        return files, keep

    def check_model(self, name, field: str = "model") -> str:
        if name not in self.engine.synthesizers:
            raise ApiError.invalid(field, f"unknown model {name!r}; this server serves {self.models}")
        return name

    def check_auth(self, header: str | None) -> None:
        """Raises 1004 unless auth is off or ``header`` is ``Bearer <one of the keys>``."""
        if not self.auth:
            return
        scheme, _, token = (header or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(AUTH_FAILED, "authorization failed: send the header 'Authorization: Bearer <key>'")
        if not any(hmac.compare_digest(token.encode(), key.encode()) for key in self.api_keys):
            raise ApiError(AUTH_FAILED, "authorization failed: the API key is not valid")

    def close(self) -> None:
        """Lets queued requests finish, then closes the store."""
        self.engine.close()
        self.voices.close()


def api_keys(config: dict) -> tuple[str, ...]:
    """The keys of the config and of the environment variable ``api_keys_env`` names."""
    keys = [str(k) for k in config.get("api_keys") or []]
    env = config.get("api_keys_env")
    if env and os.environ.get(env):
        keys += [k.strip() for k in os.environ[env].split(",") if k.strip()]
    return tuple(keys)


def system_voices(config: dict) -> dict[str, Voice]:
    """The config's ``system_voices``; every wav must exist (a server starts with all its voices or none)."""
    voices = {}
    for voice_id, entry in (config.get("system_voices") or {}).items():
        check_voice_id(voice_id, f"system_voices.{voice_id}")
        wav = Path(entry["wav"])
        if not wav.is_file():
            raise FileNotFoundError(f"system_voices.{voice_id}.wav: no such file: {wav}")
        voices[voice_id] = Voice(
            voice_id, wav, entry.get("transcript"), entry.get("name") or voice_id,
            entry.get("description") or "", entry.get("language"),
        )  # fmt: skip
    return voices


def load_synthesizers(config: dict) -> dict[str, Synthesizer]:
    """One ``Synthesizer`` per distinct checkpoint set; model names with the same set share it."""
    loaded: dict[tuple, Synthesizer] = {}
    named = {}
    for name, entry in (config.get("models") or {}).items():
        key = (entry["ar_ckpt"], entry["fm_ckpt"], entry.get("tokenizer_ckpt"), entry.get("flow_vae_ckpt"),
               tuple(entry.get("emotion_adapters") or ()))  # fmt: skip
        if key not in loaded:
            loaded[key] = Synthesizer.from_checkpoints(
                key[0], key[1], key[2], key[3], device=config.get("device") or "cpu", emotion_adapters=key[4]
            )
        named[name] = loaded[key]
    if not named:
        raise ValueError("models: the config serves no model; name at least one with its ar_ckpt and fm_ckpt")
    return named


def build_server(config: dict, synthesizers: dict[str, Synthesizer] | None = None) -> Server:
    """Loads the models (unless given), opens the store and starts the batching worker.

    Raises:
        ValueError: auth is on and no API key is configured.
    """
    keys, auth = api_keys(config), bool(config.get("auth", True))
    if auth and not keys:
        raise ValueError(
            "auth is on but no API key is set: list api_keys, set the variable api_keys_env names, "
            "or run with auth=false (no auth, for local use)"
        )
    store = Path(config.get("store") or "serve_store")
    upload = config.get("upload") or {}
    voices = VoiceStore(store, system_voices(config), UploadLimits(**upload))
    sampling = SamplingSetting(**(config.get("sampling") or {}))
    sampling.validate()
    batching = config.get("batching") or {}
    synthesizers = synthesizers if synthesizers is not None else load_synthesizers(config)
    engine = Engine(
        synthesizers,
        max_batch=batching.get("max_batch", 8),
        queue_size=batching.get("queue_size", 64),
        wait_s=batching.get("wait_ms", 10) / 1000,
        max_streams=batching.get("max_streams", 16),
    )
    cache_bytes, shared = int(config.get("voice_cache_mb", 512)) << 20, {}
    for synth in synthesizers.values():
        if id(synth) not in shared:
            lock = engine.lock(synth) if synth.adapters else None  # an adapter changes the weights it is in
            shared[id(synth)] = VoiceFeatures(synth, voices, lock, cache_bytes)
    features = {name: shared[id(synth)] for name, synth in synthesizers.items()}
    files = AudioFiles(store / "outputs", config.get("url_ttl_s", 24 * 3600))
    language, chunk_tokens = config.get("language", "en"), config.get("stream_chunk_tokens", 25)
    return Server(engine, voices, files, sampling, keys, auth, language, chunk_tokens, features)
