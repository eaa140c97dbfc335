"""The MiniMax T2A routes, the seed's /v3 routes and the OpenAI route, over real HTTP (conftest.py)."""

import base64
import io
import json
import threading
import time

import httpx
import numpy as np
import pytest
import soundfile as sf
from conftest import KEY, SYSTEM_VOICE

TEXT = "alpha beta gamma delta."


def body(**overrides) -> dict:
    base = {
        "model": "speech-02-hd",
        "text": TEXT,
        "voice_setting": {"voice_id": SYSTEM_VOICE},
        "audio_setting": {"format": "wav", "sample_rate": 16000},
    }
    base.update(overrides)
    return base


def post(live, payload, path="/v1/t2a_v2", **kwargs) -> dict:
    reply = live.client.post(path, json=payload, **kwargs)
    assert reply.status_code == 200, reply.text
    return reply.json()


def expect_error(reply: dict, code: int, *words: str) -> None:
    assert reply["base_resp"]["status_code"] == code, reply
    for word in words:
        assert word in reply["base_resp"]["status_msg"], reply


def sse_events(response: httpx.Response) -> list[dict]:
    return [json.loads(line[len("data: ") :]) for line in response.iter_lines() if line.startswith("data: ")]


def test_health_and_models(live):
    health = httpx.get(f"{live.url}/health").json()  # no key needed
    assert health == {"status": "ok", "models": ["speech-02-hd", "speech-02-turbo"]}
    models = live.client.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["speech-02-hd", "speech-02-turbo"]
    assert models["base_resp"]["status_code"] == 0


def test_hex_reply_shape_and_audio(live):
    reply = post(live, body())
    assert reply["base_resp"] == {"status_code": 0, "status_msg": "success"}
    assert reply["data"]["status"] == 2 and reply["trace_id"]
    audio = bytes.fromhex(reply["data"]["audio"])
    wav, rate = sf.read(io.BytesIO(audio))
    info = reply["extra_info"]
    assert rate == 16000 == info["audio_sample_rate"]
    assert info["audio_size"] == len(audio) and info["audio_format"] == "wav" and info["audio_channel"] == 1
    assert info["audio_length"] == round(1000 * len(wav) / rate) > 0
    assert info["word_count"] == 4 and info["usage_characters"] == len(TEXT)


def test_default_audio_is_minimax_mp3(live):
    reply = post(live, body(audio_setting=None))
    info = reply["extra_info"]
    assert (info["audio_format"], info["audio_sample_rate"], info["bitrate"]) == ("mp3", 32000, 128000)
    _, rate = sf.read(io.BytesIO(bytes.fromhex(reply["data"]["audio"])))
    assert rate == 32000


def test_url_output_serves_the_same_audio(live):
    hex_reply = post(live, body())
    url_reply = post(live, body(output_format="url"))
    url = url_reply["data"]["audio"]
    assert url.startswith(live.url + "/v1/audio/files/")
    fetched = httpx.get(url)  # the URL alone fetches it, as MiniMax's signed URLs
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "audio/wav"
    assert fetched.content.hex() == hex_reply["data"]["audio"]
    assert httpx.get(f"{live.url}/v1/audio/files/{'0' * 32}.wav").status_code == 404
    assert httpx.get(f"{live.url}/v1/audio/files/..%2Fstore.sqlite").status_code == 404


def test_url_audio_expires(live):
    url = post(live, body(output_format="url"))["data"]["audio"]
    files = live.server.files
    ttl, files.ttl_s = files.ttl_s, 0
    try:
        assert httpx.get(url).status_code == 404
    finally:
        files.ttl_s = ttl


def test_stream_chunks_join_into_the_aggregated_audio(live):
    payload = body(stream=True, audio_setting={"format": "pcm", "sample_rate": 16000})
    with live.client.stream("POST", "/v1/t2a_v2", json=payload) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    statuses = [e["data"]["status"] for e in events]
    assert statuses[-1] == 2 and set(statuses[:-1]) == {1} and len(statuses) >= 3
    chunks = b"".join(bytes.fromhex(e["data"]["audio"]) for e in events[:-1])
    assert chunks == bytes.fromhex(events[-1]["data"]["audio"])
    info = events[-1]["extra_info"]
    assert info["audio_size"] == len(chunks) and info["audio_length"] == round(1000 * len(chunks) / 2 / 16000)


def test_stream_mp3_chunks_decode_alone_and_aggregate_can_be_left_out(live):
    payload = body(stream=True, audio_setting={"format": "mp3", "sample_rate": 32000},
                   stream_options={"exclude_aggregated_audio": True})  # fmt: skip
    with live.client.stream("POST", "/v1/t2a_v2", json=payload) as response:
        events = sse_events(response)
    for event in events[:-1]:
        wav, rate = sf.read(io.BytesIO(bytes.fromhex(event["data"]["audio"])))
        assert rate == 32000 and len(wav) > 0
    assert events[-1]["data"] == {"audio": "", "status": 2}


def test_stream_refuses_wav(live):
    payload = body(stream=True)
    expect_error(post(live, payload), 2013, "audio_setting.format", "'wav' cannot be streamed")


def test_a_disconnect_mid_stream_stops_generation(live, monkeypatch):
    """The client reads one chunk and leaves: generation stops soon after and frees the model."""
    engine = live.server.engine
    synth = engine.synthesizers["speech-02-hd"]
    made = []
    stream_batch = synth.stream_batch

    def counted(*args, **kwargs):  # 20 ms a chunk, so that "soon" can be told from "at the end"
        for event in stream_batch(*args, **kwargs):
            made.append(len(event.audio))
            time.sleep(0.02)
            yield event

    monkeypatch.setattr(synth, "stream_batch", counted)
    payload = body(stream=True, text=" ".join([TEXT] * 16), audio_setting={"format": "pcm"})
    with live.client.stream("POST", "/v1/t2a_v2", json=payload) as response:
        whole = len(sse_events(response)) - 1
    made.clear()
    with live.client.stream("POST", "/v1/t2a_v2", json=payload) as response:
        next(response.iter_lines())
    lock = engine._locks[id(synth)]
    assert lock.acquire(timeout=10), "the abandoned stream still holds the model"
    lock.release()
    assert whole >= 20 and len(made) <= whole // 2, (len(made), whole)
    assert post(live, body())["base_resp"]["status_code"] == 0


def test_a_client_that_leaves_cancels_its_waiting_request(live, monkeypatch):
    """Two clients give up while the model is busy: the one whose request was taken into a batch and the one
    still queued. The queued one leaves the queue at once; neither is generated."""
    engine = live.server.engine
    synth = engine.synthesizers["speech-02-hd"]
    generated = []
    synthesize_batch = synth.synthesize_batch

    def counted(requests, **kwargs):
        generated.extend(r.text for r in requests)
        return synthesize_batch(requests, **kwargs)

    monkeypatch.setattr(synth, "synthesize_batch", counted)
    timeouts = []

    def leave(text):
        with httpx.Client(
            base_url=live.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=1.5
        ) as client:
            try:
                client.post("/v1/t2a_v2", json=body(text=text))
            except httpx.ReadTimeout:
                timeouts.append(text)  # the client gives up and closes its connection

    def until(condition, what):
        deadline = time.monotonic() + 10
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.01)

    assert post(live, body())["base_resp"]["status_code"] == 0  # the voice is encoded (features.py)
    generated.clear()
    lock = engine.lock(synth)
    lock.acquire()  # the model is busy
    try:
        taken = threading.Thread(target=leave, args=("alpha left.",))
        taken.start()
        until(lambda: engine.waiting == 0, "the first request was not taken")
        time.sleep(0.2)  # past wait_ms: its batch is closed and waits for the model
        queued = threading.Thread(target=leave, args=("beta left.",))
        queued.start()
        until(lambda: engine.waiting == 1, "the second request was not queued")
        taken.join()
        queued.join()
        until(lambda: engine.waiting == 0, "the request of a client that left is still queued")
    finally:
        lock.release()
    assert sorted(timeouts) == ["alpha left.", "beta left."]
    assert post(live, body())["base_resp"]["status_code"] == 0
    assert generated == [TEXT], "a request whose client had left was generated"


def test_seed_v3_routes(live):
    reply = post(live, body(model=None), path="/v3/minimax-speech-02-turbo")
    assert set(reply) >= {"audio", "status"} and reply["status"] == 2
    assert sf.read(io.BytesIO(bytes.fromhex(reply["audio"])))[0].size > 0
    payload = body(model=None, stream=True, audio_setting={"format": "pcm"})
    with live.client.stream("POST", "/v3/minimax-speech-02-hd", json=payload) as response:
        events = sse_events(response)
    assert events[-1] == {"status": 2}
    assert all(e["status"] == 1 and e["audio"] for e in events[:-1]) and len(events) >= 2


def at_once(fn, args: list) -> list:
    """``[fn(a) for a in args]``, each call in its own thread, all released together."""
    results: list = [None] * len(args)
    gate = threading.Barrier(len(args))

    def run(i):
        gate.wait()
        results[i] = fn(args[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(args))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_requests_give_the_audio_of_one_at_a_time(live):
    """Greedy, noiseless sampling: a batch is one request at a time up to float rounding (a few steps)."""
    texts = ["alpha beta.", "gamma delta epsilon.", "zeta eta theta iota.", "kappa lambda.", "mu alpha."]

    def pcm(text):
        reply = post(live, body(text=text, audio_setting={"format": "pcm", "sample_rate": 16000}))
        return np.frombuffer(bytes.fromhex(reply["data"]["audio"]), dtype="<i2").astype(int)

    alone = [pcm(t) for t in texts]
    live.server.engine.batch_sizes.clear()
    together = at_once(pcm, texts)
    assert max(live.server.engine.batch_sizes) > 1, "the requests were not generated together"
    for a, b in zip(together, alone, strict=True):
        assert a.shape == b.shape and np.abs(a - b).max() <= 4


def test_concurrent_streams_are_generated_together_with_the_audio_of_one_at_a_time(live):
    """Streams that arrive together share a stream batch; greedy, noiseless: each its audio alone."""
    texts = ["alpha beta gamma.", "delta epsilon.", "zeta eta theta iota kappa.", "lambda mu."]

    def streamed(text):
        payload = body(text=text, stream=True, audio_setting={"format": "pcm", "sample_rate": 16000})
        with live.client.stream("POST", "/v1/t2a_v2", json=payload) as response:
            events = sse_events(response)
        chunks = [bytes.fromhex(e["data"]["audio"]) for e in events[:-1]]
        assert all(e["data"]["status"] == 1 for e in events[:-1]) and events[-1]["data"]["status"] == 2
        return np.frombuffer(b"".join(chunks), dtype="<i2").astype(int)

    alone = [streamed(t) for t in texts]
    engine = live.server.engine
    engine.stream_batch_sizes.clear()
    together = at_once(streamed, texts)
    assert max(engine.stream_batch_sizes) > 1, "the streams were not generated together"
    for a, b in zip(together, alone, strict=True):
        assert a.shape == b.shape and np.abs(a - b).max() <= 4


def test_auth(live):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        reply = httpx.post(f"{live.url}/v1/t2a_v2", json=body(), headers=headers)
        assert reply.status_code == 200
        expect_error(reply.json(), 1004, "authorization failed")
    reply = httpx.post(f"{live.url}/v1/audio/speech", json={}, headers={"Authorization": "Bearer wrong"})
    assert reply.status_code == 401 and reply.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"text": ""}, ["text"]),
        ({"text": "a" * 10_001}, ["text: must be at most 10000 characters, got 10001"]),
        ({"text": "alpha <#0.5 beta"}, ["text"]),
        ({"voice_setting": {"voice_id": SYSTEM_VOICE, "speed": 3}}, ["voice_setting.speed", "[0.5, 2.0]"]),
        ({"voice_setting": {"voice_id": SYSTEM_VOICE, "vol": 0}}, ["voice_setting.vol", "(0, 10]"]),
        ({"voice_setting": {"voice_id": SYSTEM_VOICE, "pitch": 13}}, ["voice_setting.pitch", "[-12, 12]"]),
        ({"voice_setting": {"voice_id": SYSTEM_VOICE, "emotion": "sleepy"}}, ["voice_setting.emotion"]),
        ({"voice_setting": {"voice_id": "nobody_here_1"}}, ["voice_setting.voice_id", "unknown voice"]),
        ({"voice_setting": {"voice_id": "../../etc/passwd"}}, ["voice_setting.voice_id", "8-256 characters"]),
        ({"voice_setting": {}}, ["voice_setting.voice_id", "is required"]),
        ({"model": "speech-01"}, ["model", "unknown model 'speech-01'", "speech-02-hd", "speech-02-turbo"]),
        ({"model": None}, ["model", "is required"]),
        ({"audio_setting": {"sample_rate": 12345}}, ["audio_setting.sample_rate", "22050"]),
        ({"audio_setting": {"format": "ogg"}}, ["audio_setting.format", "'mp3'"]),
        ({"audio_setting": {"format": "mp3", "bitrate": 1000}}, ["audio_setting.bitrate"]),
        ({"audio_setting": {"channel": 3}}, ["audio_setting.channel"]),
        ({"timbre_weights": [{"voice_id": SYSTEM_VOICE, "weight": 10}] * 5}, ["timbre_weights", "at most 4"]),
        ({"timbre_weights": [{"voice_id": SYSTEM_VOICE, "weight": 0}]}, ["timbre_weights[0].weight"]),
        ({"output_format": "base64"}, ["output_format", "'hex'"]),
        ({"language_boost": "Klingon"}, ["language_boost"]),
        ({"voice_setting": "alice"}, ["voice_setting", "must be an object"]),
        ({"pronunciation_dict": {"tone": ["no slash"]}}, ["pronunciation_dict.tone[0]", "written/spoken"]),
    ],
)
def test_bad_inputs_are_2013_naming_the_field(live, change, words):
    payload = body(**change)
    if "timbre_weights" in change:
        payload["voice_setting"] = {}
    expect_error(post(live, payload), 2013, *words)


def test_bad_json_and_content_type(live):
    reply = live.client.post("/v1/t2a_v2", content=b"{not json", headers={"Content-Type": "application/json"})
    expect_error(reply.json(), 2013, "body", "not valid JSON")
    reply = live.client.post("/v1/t2a_v2", content=json.dumps(body()), headers={"Content-Type": "text/plain"})
    expect_error(reply.json(), 2013, "Content-Type", "application/json")
    expect_error(post(live, [1, 2]), 2013, "body", "JSON object")


def test_timbre_mix_and_one_shot_voice(live):
    mix = [{"voice_id": SYSTEM_VOICE, "weight": 30}, {"voice_id": "system_voice_oneshot", "weight": 70}]
    assert post(live, body(voice_setting={}, timbre_weights=mix))["base_resp"]["status_code"] == 0
    one_shot = post(live, body(voice_setting={"voice_id": "system_voice_oneshot"}))
    assert one_shot["base_resp"]["status_code"] == 0


def test_voice_design_is_not_available(live):
    reply = post(live, {"prompt": "a warm voice", "preview_text": "hello"}, path="/v1/voice_design")
    expect_error(reply, 2061, "not available on this server")


def test_openai_speech(live):
    payload = {"model": "speech-02-turbo", "input": TEXT, "voice": SYSTEM_VOICE, "response_format": "wav"}
    reply = live.client.post("/v1/audio/speech", json=payload)
    assert reply.status_code == 200 and reply.headers["content-type"] == "audio/wav"
    wav, rate = sf.read(io.BytesIO(reply.content))
    assert rate == 24000 and np.abs(wav).max() > 0


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        ({"input": ""}, 400, ["input"]),
        ({"speed": 4.0}, 400, ["speed", "[0.5, 2.0]"]),
        ({"voice": "nobody_here_1"}, 400, ["voice", "unknown voice"]),
        ({"model": "tts-1"}, 400, ["model", "speech-02-hd"]),
        ({"response_format": "opus"}, 400, ["response_format", "'mp3'"]),
    ],
)
def test_openai_errors(live, change, status, words):
    payload = {"model": "speech-02-turbo", "input": TEXT, "voice": SYSTEM_VOICE, **change}
    reply = live.client.post("/v1/audio/speech", json=payload)
    assert reply.status_code == status
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error"
    for word in words:
        assert word in error["message"], error


def test_openai_speech_sse(live):
    payload = {"model": "speech-02-hd", "input": TEXT, "voice": SYSTEM_VOICE, "response_format": "pcm",
               "stream_format": "sse"}  # fmt: skip
    with live.client.stream("POST", "/v1/audio/speech", json=payload) as response:
        assert response.status_code == 200
        events = sse_events(response)
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1) and len(events) >= 2
    assert events[-1]["type"] == "speech.audio.done" and events[-1]["usage"]["input_tokens"] == 4
    pcm = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert len(pcm) % 2 == 0 and np.abs(np.frombuffer(pcm, dtype="<i2")).max() > 0
    for change, field in (
        ({"stream_format": "chunks"}, "stream_format"),
        ({"response_format": "wav"}, "sse"),
    ):
        reply = live.client.post("/v1/audio/speech", json={**payload, **change})
        assert reply.status_code == 400 and field in reply.json()["error"]["message"]
