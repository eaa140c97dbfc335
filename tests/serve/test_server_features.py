"""Voices are encoded once: cloning stores the speaker vectors and one-shot prompt, requests use them (also
after a restart), and features of other checkpoints are not used (speech/serve/features.py)."""

from collections import Counter

import pytest
import torch
from conftest import GREEDY, SYSTEM_VOICE, LiveServer, make_config
from test_server_voices import code, post, upload

from speech.inference import AudioSetting, SamplingSetting, SynthesisRequest
from speech.serve import features as features_module

TEXT = "alpha beta gamma."
TRANSCRIPT = "kappa lambda mu."
PCM = {"format": "pcm", "sample_rate": 16000}


def spy(live) -> Counter:
    """Counts the calls of the speaker encoders and of the audio tokenizer (one-shot prompt tokens)."""
    calls: Counter = Counter()
    encoder = live.server.features["speech-02-hd"].encoder

    def counted(name, fn):
        def call(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return call

    encoder.ar_speaker = counted("ar_speaker", encoder.ar_speaker)
    encoder.fm_speaker = counted("fm_speaker", encoder.fm_speaker)
    encoder.audio_tokenizer.encode = counted("tokens", encoder.audio_tokenizer.encode)
    return calls


def speak(live, voice_id) -> bytes:
    payload = {"model": "speech-02-hd", "text": TEXT, "voice_setting": {"voice_id": voice_id},
               "audio_setting": PCM}  # fmt: skip
    reply = post(live, "/v1/t2a_v2", payload)
    assert code(reply) == 0, reply
    return bytes.fromhex(reply["data"]["audio"])


def encoded_from_the_wav(live, voice_id) -> bytes:
    """The audio the synthesizer makes when it encodes the voice's wav itself (as before features)."""
    voice = live.server.voices.voice(voice_id)
    synth = live.server.engine.synthesizers["speech-02-hd"]
    request = SynthesisRequest(TEXT, reference=str(voice.reference), prompt_text=voice.transcript,
                               sampling=SamplingSetting(**GREEDY), audio=AudioSetting(**PCM))  # fmt: skip
    with live.server.engine.lock(synth):
        return synth.synthesize(request).to_bytes()


ENCODED_ONCE = {"ar_speaker": 1, "fm_speaker": 1, "tokens": 1}


@pytest.fixture
def config(assets, tmp_path):
    return make_config(assets, tmp_path / "store")


def test_a_cloned_voice_is_encoded_once_even_across_restarts(config, assets):
    first = LiveServer(config)
    try:
        calls = spy(first)
        file_id = upload(first, assets["upload"])["file"]["file_id"]
        clone = {"file_id": file_id, "voice_id": "Once_voice", "transcript": TRANSCRIPT, "text": TEXT}
        assert code(post(first, "/v1/voice_clone", clone)) == 0
        assert calls == ENCODED_ONCE  # at clone time; the demo audio used what the clone encoded
        before = speak(first, "Once_voice")
        assert speak(first, "Once_voice") == before
        assert calls == ENCODED_ONCE, "a request encoded the reference again"
        assert before == encoded_from_the_wav(first, "Once_voice")  # the same audio as encoding per request
        stored = sorted(p.name for p in (first.server.voices.root / "voices").iterdir())
        suffix = first.server.features["speech-02-hd"].file_suffix
        assert stored == sorted(["Once_voice.wav", f"Once_voice.{suffix}"])
    finally:
        first.stop()
    second = LiveServer(config)
    try:
        calls = spy(second)
        assert speak(second, "Once_voice") == before
        assert speak(second, "Once_voice") == before
        assert calls == {}, "the restarted server encoded the reference instead of loading its features"
    finally:
        second.stop()


def test_features_of_other_checkpoints_are_encoded_again_once(config, assets, monkeypatch):
    first = LiveServer(config)
    try:
        file_id = upload(first, assets["upload"])["file"]["file_id"]
        clone = {"file_id": file_id, "voice_id": "Moved_voice", "transcript": TRANSCRIPT}
        assert code(post(first, "/v1/voice_clone", clone)) == 0
        before = speak(first, "Moved_voice")
        old_id = first.server.features["speech-02-hd"].model_id
    finally:
        first.stop()
    voices = first.server.voices.root / "voices"
    old_file = voices / f"Moved_voice.{old_id[:16]}.pt"

    # other checkpoints: another model id, so another file name; the old file stays for the old checkpoints
    monkeypatch.setattr(features_module, "model_id", lambda synth: "f" * 64)
    second = LiveServer(config)
    try:
        calls = spy(second)
        assert speak(second, "Moved_voice") == before  # the same weights here: the same audio
        assert speak(second, "Moved_voice") == before
        assert calls == ENCODED_ONCE
        assert old_file.is_file() and (voices / f"Moved_voice.{'f' * 16}.pt").is_file()
    finally:
        second.stop()
    monkeypatch.undo()

    # a file under this checkpoints' name that says another made it is not used: encoded again, rewritten
    state = torch.load(old_file, weights_only=True)
    torch.save({**state, "model_id": "0" * 64}, old_file)
    for expected in (ENCODED_ONCE, {}):
        live = LiveServer(config)
        try:
            calls = spy(live)
            assert speak(live, "Moved_voice") == before
            assert calls == expected
        finally:
            live.stop()
    assert torch.load(old_file, weights_only=True)["model_id"] == old_id


def test_a_system_voice_is_encoded_once(config):
    live = LiveServer(config)
    try:
        calls = spy(live)
        first = speak(live, "system_voice_oneshot")
        assert speak(live, "system_voice_oneshot") == first
        assert calls == ENCODED_ONCE
        speak(live, SYSTEM_VOICE)
        speak(live, SYSTEM_VOICE)
        assert calls == {"ar_speaker": 2, "fm_speaker": 2, "tokens": 1}  # zero-shot: no prompt tokens
        assert first == encoded_from_the_wav(live, "system_voice_oneshot")
    finally:
        live.stop()


def test_a_clone_of_silence_is_refused_before_it_is_stored(config, tmp_path):
    import numpy as np
    import soundfile as sf

    live = LiveServer(config)
    try:
        path = tmp_path / "silence.wav"
        sf.write(path, np.zeros(16000 * 11, dtype=np.float32), 16000)
        file_id = upload(live, path)["file"]["file_id"]
        reply = post(live, "/v1/voice_clone", {"file_id": file_id, "voice_id": "Silent_voice"})
        assert code(reply) == 2013 and "file_id: the audio is silent" in reply["base_resp"]["status_msg"]
        assert list((live.server.voices.root / "voices").iterdir()) == []
    finally:
        live.stop()
