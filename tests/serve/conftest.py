"""Fixtures of tests/serve: the server on a free loopback port over tiny random checkpoints (tiny_pipeline.py
of tests/inference), with greedy, noiseless sampling so that its audio is deterministic."""

import importlib.util
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import uvicorn

from speech.serve.app import create_app
from speech.serve.server import build_server

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "tiny_pipeline", ROOT / "tests" / "inference" / "tiny_pipeline.py"
)
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)

KEY = "test-key-123"
SYSTEM_VOICE = "system_voice_a"
GREEDY = {"temperature": 0, "noise_scale": 0, "seed": 0, "max_tokens": 20, "steps": 2}


class LiveServer:
    """uvicorn serving ``create_app(build_server(config))`` in a thread on a free loopback port."""

    def __init__(self, config: dict) -> None:
        self.server = build_server(config)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.uvicorn = uvicorn.Server(uvicorn.Config(create_app(self.server), log_level="warning"))
        self.thread = threading.Thread(target=self.uvicorn.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.uvicorn.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)

    def stop(self) -> None:
        self.client.close()
        self.uvicorn.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    """Tiny checkpoints, reference wavs and an 11 s upload."""
    root = tmp_path_factory.mktemp("serve_assets")
    ckpts = tiny.write_checkpoints(root)
    refs = tiny.write_references(root)
    rng = np.random.default_rng(1)
    t = np.arange(int(tiny.SR * 11)) / tiny.SR
    upload = root / "upload.wav"
    wav = 0.3 * np.sin(2 * np.pi * 150 * t) + 0.05 * rng.standard_normal(t.shape)
    sf.write(upload, wav.astype(np.float32), tiny.SR)
    return {"ckpts": ckpts, "refs": refs, "upload": upload}


def make_config(assets, store, **overrides) -> dict:
    ckpts = assets["ckpts"]
    model = {"ar_ckpt": str(ckpts["ar"]), "fm_ckpt": str(ckpts["fm"])}
    config = {
        "models": {"speech-02-hd": model, "speech-02-turbo": model},
        "device": "cpu",
        "auth": True,
        "api_keys": [KEY],
        "store": str(store),
        "system_voices": {
            SYSTEM_VOICE: {"wav": str(assets["refs"][2]), "name": "A", "description": "a test tone"},
            "system_voice_oneshot": {"wav": str(assets["refs"][1]), "transcript": "alpha beta gamma"},
        },
        "batching": {"max_batch": 8, "queue_size": 64, "wait_ms": 20, "max_streams": 4},
        "sampling": GREEDY,
        "stream_chunk_tokens": 5,
    }
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def live(assets, tmp_path_factory):
    """A running server (auth on, key ``KEY``) shared by a test module."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    server = LiveServer(make_config(assets, tmp_path_factory.mktemp("store")))
    yield server
    server.stop()
    torch.set_num_threads(threads)
