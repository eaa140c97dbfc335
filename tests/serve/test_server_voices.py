"""Uploads, cloning, listing and deleting voices, their persistence across a restart, and voice_id rules."""

import threading

import httpx
import pytest
from conftest import KEY, SYSTEM_VOICE, LiveServer, make_config

from speech.serve.errors import ApiError
from speech.serve.voices import VoiceStore, check_voice_id


def upload(live, path, name="voice.wav", purpose="voice_clone") -> dict:
    with open(path, "rb") as f:
        reply = live.client.post("/v1/files/upload", files={"file": (name, f)}, data={"purpose": purpose})
    assert reply.status_code == 200
    return reply.json()


def post(live, path, payload) -> dict:
    reply = live.client.post(path, json=payload)
    assert reply.status_code == 200
    return reply.json()


def code(reply) -> int:
    return reply["base_resp"]["status_code"]


def speak(live, voice_id) -> dict:
    payload = {"model": "speech-02-hd", "text": "alpha beta.", "voice_setting": {"voice_id": voice_id}}
    return post(live, "/v1/t2a_v2", payload)


@pytest.fixture
def server(assets, tmp_path):
    live = LiveServer(make_config(assets, tmp_path / "store"))
    yield live
    live.stop()


def test_upload_retrieve_clone_list_speak_delete(server, assets):
    reply = upload(server, assets["upload"])
    file = reply["file"]
    assert code(reply) == 0 and file["purpose"] == "voice_clone" and file["filename"] == "voice.wav"
    assert file["bytes"] == assets["upload"].stat().st_size and isinstance(file["file_id"], int)
    retrieved = server.client.get("/v1/files/retrieve", params={"file_id": file["file_id"]}).json()
    assert retrieved["file"] == file

    cloned = post(server, "/v1/voice_clone", {"file_id": file["file_id"], "voice_id": "MyVoice_01",
                                              "text": "alpha beta gamma."})  # fmt: skip
    assert code(cloned) == 0 and cloned["demo_audio"].startswith(server.url + "/v1/audio/files/")
    assert httpx.get(cloned["demo_audio"]).status_code == 200
    assert code(speak(server, "MyVoice_01")) == 0

    voices = post(server, "/v1/get_voice", {"voice_type": "all"})
    assert [v["voice_id"] for v in voices["voice_cloning"]] == ["MyVoice_01"]
    assert voices["voice_cloning"][0]["created_time"] > 0
    system = {v["voice_id"]: v for v in voices["system_voice"]}
    expected = {"voice_id": SYSTEM_VOICE, "voice_name": "A", "description": ["a test tone"]}
    assert system[SYSTEM_VOICE] == expected
    assert "voice_cloning" not in post(server, "/v1/get_voice", {"voice_type": "system"})

    again = post(server, "/v1/voice_clone", {"file_id": file["file_id"], "voice_id": "MyVoice_01"})
    assert code(again) == 2039 and "already exists" in again["base_resp"]["status_msg"]
    assert code(post(server, "/v1/delete_voice", {"voice_id": "MyVoice_01"})) == 0
    assert "unknown voice" in speak(server, "MyVoice_01")["base_resp"]["status_msg"]
    gone = post(server, "/v1/delete_voice", {"voice_id": "MyVoice_01"})
    assert code(gone) == 2013 and "no cloned voice" in gone["base_resp"]["status_msg"]
    system_delete = post(server, "/v1/delete_voice", {"voice_id": SYSTEM_VOICE})
    assert "system voice" in system_delete["base_resp"]["status_msg"]


def test_cloned_voices_persist_across_a_restart(assets, tmp_path):
    config = make_config(assets, tmp_path / "store")
    first = LiveServer(config)
    try:
        file_id = upload(first, assets["upload"])["file"]["file_id"]
        assert code(post(first, "/v1/voice_clone", {"file_id": file_id, "voice_id": "Kept_voice"})) == 0
        before = speak(first, "Kept_voice")["data"]["audio"]
    finally:
        first.stop()
    second = LiveServer(config)
    try:
        listed = post(second, "/v1/get_voice", {"voice_type": "voice_cloning"})["voice_cloning"]
        assert [v["voice_id"] for v in listed] == ["Kept_voice"]
        assert speak(second, "Kept_voice")["data"]["audio"] == before
        assert second.client.get("/v1/files/retrieve", params={"file_id": file_id}).json()["file"]["file_id"]
    finally:
        second.stop()


@pytest.mark.parametrize(
    "voice_id",
    ["../../etc/passwd", "voices/../x12345", "short1", "1startsdigit", "ends_with_", "ends-with-", "a" * 257,
     "has space in", "has.dot.here", "..", "/abs/olute_path", "back\\slash\\x", "", None, 12345678],
)  # fmt: skip
def test_voice_id_rules_refuse_before_touching_disk(server, assets, voice_id):
    file_id = upload(server, assets["upload"])["file"]["file_id"]
    store = server.server.voices.root / "voices"
    before = sorted(store.iterdir())
    reply = post(server, "/v1/voice_clone", {"file_id": file_id, "voice_id": voice_id})
    assert code(reply) == 2013 and "voice_id" in reply["base_resp"]["status_msg"]
    assert "8-256 characters" in reply["base_resp"]["status_msg"]
    assert sorted(store.iterdir()) == before
    assert code(post(server, "/v1/delete_voice", {"voice_id": voice_id})) == 2013


def test_voice_id_rule_accepts_minimax_ids():
    for voice_id in ("abcdefgh", "Voice-01_x", "a" * 256):
        assert check_voice_id(voice_id) == voice_id


@pytest.mark.parametrize(
    ("name", "purpose", "seconds", "words"),
    [
        ("voice.ogg", "voice_clone", 11, ["file", ".wav"]),
        ("voice.wav", "fine_tune", 11, ["purpose", "voice_clone"]),
        ("voice.wav", "voice_clone", 2, ["file", "10 s to 300 s", "2.00 s"]),
    ],
)
def test_upload_refusals(server, assets, tmp_path, name, purpose, seconds, words):
    import numpy as np
    import soundfile as sf

    path = tmp_path / "u.wav"
    sf.write(path, np.random.default_rng(0).uniform(-0.3, 0.3, 16000 * seconds).astype(np.float32), 16000)
    reply = upload(server, path, name=name, purpose=purpose)
    assert code(reply) == 2013
    for word in words:
        assert word in reply["base_resp"]["status_msg"]


def test_upload_that_is_not_audio_and_not_multipart(server, tmp_path):
    path = tmp_path / "fake.wav"
    path.write_text("not audio")
    reply = upload(server, path)
    assert code(reply) == 2013 and "not decodable audio" in reply["base_resp"]["status_msg"]
    reply = server.client.post("/v1/files/upload", json={"purpose": "voice_clone"}).json()
    assert code(reply) == 2013 and "multipart/form-data" in reply["base_resp"]["status_msg"]
    bad = server.client.get("/v1/files/retrieve", params={"file_id": "../x"}).json()
    assert code(bad) == 2013 and "file_id" in bad["base_resp"]["status_msg"]


def test_concurrent_clones_and_deletes_keep_the_store_consistent(server, assets):
    file_id = upload(server, assets["upload"])["file"]["file_id"]
    ids = [f"Voice_{i:04d}" for i in range(6)]
    results: dict = {}

    def clone_and_maybe_delete(voice_id, delete):
        results[voice_id] = code(post(server, "/v1/voice_clone", {"file_id": file_id, "voice_id": voice_id}))
        if delete:
            post(server, "/v1/delete_voice", {"voice_id": voice_id})

    threads = [threading.Thread(target=clone_and_maybe_delete, args=(v, i % 2)) for i, v in enumerate(ids)]
    threads += [threading.Thread(target=clone_and_maybe_delete, args=(ids[0], False))]  # a duplicate
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    voices = post(server, "/v1/get_voice", {"voice_type": "voice_cloning"})["voice_cloning"]
    listed = [v["voice_id"] for v in voices]
    assert sorted(listed) == ids[0::2]
    files = sorted(p.name for p in (server.server.voices.root / "voices").iterdir())
    features = server.server.features["speech-02-hd"].file_suffix  # both models share one synthesizer
    assert files == sorted(f"{v}.{ext}" for v in listed for ext in ("wav", features))


def test_a_crash_mid_clone_leaves_no_half_voice(assets, tmp_path, monkeypatch):
    """The wav and features are in place but the row insert fails (a crash between them): no voice, and no
    file of it after a restart's sweep."""
    store_dir = tmp_path / "store"
    store = VoiceStore(store_dir, {})
    file_id = store.upload("v.wav", assets["upload"].read_bytes(), "voice_clone")["file_id"]
    (store_dir / "voices" / "Orphan_voice.wav").write_bytes(b"left by a crash")
    (store_dir / "voices" / "Orphan_voice.0123456789abcdef.pt").write_bytes(b"left by a crash")
    (store_dir / "voices" / "Other_voice.wav.tmp").write_bytes(b"half written")
    store.close()
    store = VoiceStore(store_dir, {})
    assert list((store_dir / "voices").iterdir()) == []
    monkeypatch.setattr(store, "_transaction", lambda: (_ for _ in ()).throw(RuntimeError("crash")))
    made = []

    def features(wav, one_shot):
        made.append(wav.read_bytes()[:4])
        return {"0123456789abcdef.pt": b"features"}, lambda final: made.append(final)

    with pytest.raises(RuntimeError):
        store.clone(file_id, "Crashed_voice", files=features)
    assert made == [b"RIFF"]  # the features were made of the wav; the clone never completed
    assert store.cloned() == [] and list((store_dir / "voices").iterdir()) == []


def test_auth_on_voice_routes(server):
    headers = {"Authorization": "x"}
    reply = httpx.post(f"{server.url}/v1/get_voice", json={"voice_type": "all"}, headers=headers)
    assert code(reply.json()) == 1004
    assert KEY not in reply.text


def write_m4a(path, seconds: float, rate: int = 16000) -> None:
    """An AAC-in-MP4 file made with PyAV's encoder: a tone in noise."""
    av = pytest.importorskip("av")  # the serve extra's; m4a uploads are refused without it
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    wav = 0.3 * np.sin(2 * np.pi * 150 * t) + 0.05 * np.random.default_rng(2).standard_normal(t.shape)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate, layout="mono")
        for start in range(0, len(wav), 1024):
            frame = av.AudioFrame.from_ndarray(
                wav[None, start : start + 1024].astype(np.float32), "flt", "mono"
            )
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def test_m4a_upload_is_decoded_and_cloned(server, tmp_path):
    path = tmp_path / "voice.m4a"
    write_m4a(path, 11)
    assert path.read_bytes()[4:8] == b"ftyp"  # an MP4 container, which libsndfile cannot read
    reply = upload(server, path, name="voice.m4a")
    assert code(reply) == 0, reply
    cloned = post(server, "/v1/voice_clone", {"file_id": reply["file"]["file_id"], "voice_id": "From_m4a"})
    assert code(cloned) == 0, cloned
    wav = server.server.voices.voice("From_m4a").reference
    import soundfile as sf

    assert 11.0 <= sf.info(str(wav)).duration <= 11.2  # the AAC encoder's padding at most
    assert code(speak(server, "From_m4a")) == 0

    short = tmp_path / "short.m4a"
    write_m4a(short, 3)
    reply = upload(server, short, name="short.m4a")
    assert code(reply) == 2013 and "10 s to 300 s" in reply["base_resp"]["status_msg"]
    corrupt = tmp_path / "corrupt.m4a"
    corrupt.write_bytes(path.read_bytes()[:200] + b"\0" * 5000)
    reply = upload(server, corrupt, name="corrupt.m4a")
    message = reply["base_resp"]["status_msg"]
    assert code(reply) == 2013 and "invalid params, file: not decodable audio (FFmpeg: " in message, reply


def _raw_request(url: str, head: bytes, body_chunks=()) -> tuple[int, dict]:
    """Sends ``head`` and the chunks over a socket, then reads the answer, without ending the body."""
    import json
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)
        for chunk in body_chunks:
            sock.sendall(chunk)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        headers, _, body = answer.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in headers.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))  # fmt: skip
        while len(body) < length:
            body += sock.recv(65536)
    return int(headers.split()[1]), json.loads(body)


def test_an_oversized_upload_is_refused_as_it_arrives(server):
    limit = server.server.voices.limits.max_bytes
    head = (f"POST /v1/files/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Type: multipart/form-data; boundary=XyZ\r\n").encode()  # fmt: skip
    # a Content-Length over the limit: answered before any of the body is sent
    status, reply = _raw_request(server.url, head + f"Content-Length: {limit + 10**6}\r\n\r\n".encode())
    assert status == 200 and code(reply) == 2013
    assert f"file: must be at most {limit} bytes; the request body is {limit + 10**6}" in reply["base_resp"][
        "status_msg"]  # fmt: skip
    # no Content-Length (chunked): answered once the bytes received pass the limit, the body never ended
    part = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
    megabyte = b"\0" * 2**20
    chunks = [b"%x\r\n%s\r\n" % (len(part), part)]
    chunks += [b"%x\r\n%s\r\n" % (len(megabyte), megabyte)] * (limit // 2**20 + 1)
    status, reply = _raw_request(server.url, head + b"Transfer-Encoding: chunked\r\n\r\n", chunks)
    assert status == 200 and code(reply) == 2013
    assert f"file: must be at most {limit} bytes; the request body passed" in reply["base_resp"]["status_msg"]
    # an ordinary client sending the whole body gets the same answer, and the server goes on
    files = {"file": ("big.wav", megabyte * (limit // 2**20 + 1))}
    reply = server.client.post("/v1/files/upload", files=files, data={"purpose": "voice_clone"}).json()
    assert code(reply) == 2013 and f"must be at most {limit} bytes" in reply["base_resp"]["status_msg"]
    assert code(post(server, "/v1/get_voice", {"voice_type": "all"})) == 0


def test_decoding_stops_past_the_longest_upload(tmp_path, assets):
    from speech.serve.decoding import decode_audio

    m4a = tmp_path / "long.m4a"
    write_m4a(m4a, 11)
    with pytest.raises(
        ApiError, match=r"^invalid params, file: must hold at most 2 s of audio, got more than 3 s"
    ):
        decode_audio(m4a.read_bytes(), ".m4a", "file", max_seconds=2)
    with pytest.raises(ApiError, match=r"^invalid params, file: must hold at most 2 s of audio, got 11.00 s"):
        decode_audio(assets["upload"].read_bytes(), ".wav", "file", max_seconds=2)
    wav, rate = decode_audio(m4a.read_bytes(), ".m4a", "file")
    assert rate == 16000 and wav.dtype == "float32" and 11 * rate <= len(wav) <= 11.2 * rate
