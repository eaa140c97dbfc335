"""configs/entry/serve.yaml builds a server, auth settings, and the engine's queue: overload and shutdown."""

import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

import httpx
import pytest
from conftest import LiveServer, make_config
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from speech.inference import SynthesisRequest
from speech.serve.engine import Engine
from speech.serve.errors import ApiError
from speech.serve.server import build_server

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_serve_yaml_builds_a_server(assets, tmp_path):
    ckpts = assets["ckpts"]
    overrides = [
        f"models.speech-02-hd.ar_ckpt={ckpts['ar']}",
        f"models.speech-02-hd.fm_ckpt={ckpts['fm']}",
        f"store={tmp_path / 'store'}",
        "auth=false",
        "device=cpu",
    ]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIGS)):
        cfg = compose("entry/serve", overrides=overrides)
    config = OmegaConf.to_container(cfg, resolve=True)
    assert config["models"]["speech-02-turbo"] == config["models"]["speech-02-hd"]
    # the default voices are wavs of the main job's corpus, which a test machine may not have built (an
    # override `system_voices={}` would merge into them, not replace them)
    assert all("test-synth-en/prompt-wavs" in v["wav"] for v in config["system_voices"].values())
    config["system_voices"] = {}
    server = build_server(config)
    try:
        assert server.models == ["speech-02-hd", "speech-02-turbo"] and not server.auth
        synths = server.engine.synthesizers
        assert synths["speech-02-hd"] is synths["speech-02-turbo"]  # one set of checkpoints, loaded once
    finally:
        server.close()


def test_auth_needs_a_key_or_an_explicit_no_auth(assets, tmp_path):
    with pytest.raises(ValueError, match="no API key is set.*auth=false"):
        build_server(make_config(assets, tmp_path, api_keys=[]))


def test_no_auth_mode_and_keys_from_the_environment(assets, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_SPEECH_KEYS", "env-key-1, env-key-2")
    live = LiveServer(make_config(assets, tmp_path / "a", api_keys=[], api_keys_env="TEST_SPEECH_KEYS"))
    try:
        ok = httpx.get(f"{live.url}/v1/models", headers={"Authorization": "Bearer env-key-2"}).json()
        assert ok["base_resp"]["status_code"] == 0
        assert httpx.get(f"{live.url}/v1/models").json()["base_resp"]["status_code"] == 1004
    finally:
        live.stop()
    live = LiveServer(make_config(assets, tmp_path / "b", auth=False, api_keys=[]))
    try:
        assert httpx.get(f"{live.url}/v1/models").json()["base_resp"]["status_code"] == 0
    finally:
        live.stop()


class BlockingSynth:
    """Stands in for a Synthesizer: each batch waits for ``release`` and returns the texts."""

    def __init__(self) -> None:
        self.release, self.started, self.batches = threading.Event(), threading.Event(), []

    def synthesize_batch(self, requests, batch_size):
        self.started.set()
        self.release.wait(10)
        self.batches.append(len(requests))
        return [r.text for r in requests]


def test_a_full_queue_is_an_overload_error_and_shutdown_finishes_what_waits():
    synth = BlockingSynth()
    engine = Engine({"m": synth}, max_batch=2, queue_size=2, wait_s=0.0)
    first = engine.submit("m", SynthesisRequest("one"))
    assert synth.started.wait(10)  # the worker holds the first request; the queue is empty again
    waiting = [engine.submit("m", SynthesisRequest(text)) for text in ("two", "three")]
    with pytest.raises(ApiError, match="busy: 2 requests are waiting") as err:
        engine.submit("m", SynthesisRequest("four"))
    assert err.value.code == 1002 and err.value.openai()[0] == 429
    synth.release.set()
    engine.close()  # returns once every queued request is done
    assert [f.result(0) for f in (first, *waiting)] == ["one", "two", "three"]
    assert synth.batches == [1, 2]  # the two that waited went together


def test_a_request_the_synthesizer_refuses_fails_alone():
    from speech.inference import RequestError

    class Refusing:
        def synthesize_batch(self, requests, batch_size):
            for i, r in enumerate(requests):
                if r.text == "bad":
                    raise RequestError("reference", "is silent", i)
            return [r.text for r in requests]

    engine = Engine({"m": Refusing()}, max_batch=4, wait_s=0.2)
    futures: list[Future] = [engine.submit("m", SynthesisRequest(t)) for t in ("a", "bad", "c")]
    engine.close()
    assert futures[0].result(0) == "a" and futures[2].result(0) == "c"
    with pytest.raises(RequestError, match="^reference: is silent"):
        futures[1].result(0)


@pytest.mark.parametrize("threads", ["0", "two", "true"])
def test_serve_refuses_a_bad_thread_count_before_loading_anything(threads, tmp_path):
    root = CONFIGS.parent
    done = subprocess.run(
        [sys.executable, str(root / "serve.py"), f"threads={threads}", f"store={tmp_path}", "auth=false"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "threads: must be an integer >= 1 or null (torch's default), got" in done.stderr


def test_serve_without_the_main_jobs_checkpoints_says_to_run_it(tmp_path):
    """The default models are the ones the main job lists; where it has not run, the server stops at once
    with what to do, not a traceback."""
    done = subprocess.run(
        [sys.executable, str(CONFIGS.parent / "serve.py"), f"store={tmp_path}", "auth=false"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "checkpoints.json not found: run the main job (bash scripts/run_tiny.sh)" in done.stderr
