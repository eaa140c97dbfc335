"""Benchmark of the HTTP server (a measurement, not a test): N concurrent clients on loopback against the
same requests sent one at a time, in one run, sync (``/v1/t2a_v2``) and streaming (SSE). Prints a markdown
table: p50/p95 latency, time to the first streamed chunk, requests/s and failures.

    python scripts/bench/bench_server.py --clients 8 --requests 32
    python scripts/bench/bench_server.py --clients 1 8 32 --threads 2
    python scripts/bench/bench_server.py --ar logs/ar_tiny_aligned_tok1500/checkpoints/last.ckpt \\
        --fm logs/flow_matching_tiny_tok1500/checkpoints/last.ckpt    # the main job's, default budgets

Without ``--ar``/``--fm`` the server runs tiny random checkpoints made in a temporary folder
(tests/inference/tiny_pipeline.py) with ``--max-tokens`` capping each segment, as on the 2-core CI box.
The server runs in this process (uvicorn in a thread on a free loopback port), auth off, greedy sampling.
Client counts and requests are bounded (``MAX_CLIENTS``, ``MAX_REQUESTS``), and every request times out.

Flags (argparse) rather than Hydra overrides, as in every ``scripts/bench/`` script: a benchmark is a
measurement for developers, not a pipeline step; its knobs are sizes, repeats, threads and lists to
sweep in one process (``--clients 1 8 32``), and it prints a table instead of writing a run folder.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch
import uvicorn

from speech.serve.app import create_app
from speech.serve.server import build_server

ROOT = Path(__file__).resolve().parents[2]
MAX_CLIENTS, MAX_REQUESTS, TIMEOUT_S = 64, 512, 120
TEXTS = ["alpha beta gamma delta.", "epsilon zeta eta theta iota.", "kappa lambda mu alpha beta."]


def tiny_assets(root: Path) -> tuple[dict, list[Path]]:
    spec = importlib.util.spec_from_file_location("tiny_pipeline", ROOT / "tests/inference/tiny_pipeline.py")
    tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny)
    return tiny.write_checkpoints(root), tiny.write_references(root)


def start(config: dict) -> tuple[str, uvicorn.Server, threading.Thread]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(build_server(config)), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return f"http://127.0.0.1:{sock.getsockname()[1]}", server, thread


def one(client: httpx.Client, i: int, stream: bool) -> tuple[bool, float, float | None]:
    """``(ok, seconds, seconds to the first chunk)`` of request ``i``."""
    body = {"model": "speech-02-hd", "text": TEXTS[i % len(TEXTS)], "stream": stream,
            "voice_setting": {"voice_id": "bench_voice_1"}, "audio_setting": {"format": "pcm"}}  # fmt: skip
    start, first, ok = time.perf_counter(), None, False
    try:
        if not stream:
            reply = client.post("/v1/t2a_v2", json=body)
            ok = reply.json()["base_resp"]["status_code"] == 0
        else:
            with client.stream("POST", "/v1/t2a_v2", json=body) as reply:
                for line in reply.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    event = json.loads(line[6:])
                    first = first or time.perf_counter() - start
                    ok = event.get("base_resp", {}).get("status_code") == 0 and event["data"]["status"] == 2
    except httpx.HTTPError:
        ok = False
    return ok, time.perf_counter() - start, first


def run(url: str, clients: int, requests: int, stream: bool) -> dict:
    with httpx.Client(
        base_url=url, timeout=TIMEOUT_S, limits=httpx.Limits(max_connections=clients)
    ) as client:
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(lambda i: one(client, i, stream), range(requests)))
        wall = time.perf_counter() - start
    latencies = sorted(r[1] for r in results if r[0])
    firsts = sorted(r[2] for r in results if r[0] and r[2] is not None)

    def pct(values, q):
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

    return {"clients": clients, "mode": "stream" if stream else "sync", "p50": pct(latencies, 0.5),
            "p95": pct(latencies, 0.95), "first_p50": pct(firsts, 0.5), "rps": len(latencies) / wall,
            "failures": sum(not r[0] for r in results), "requests": requests}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--requests", type=int, default=32, help="requests per row")
    parser.add_argument("--ar"), parser.add_argument("--fm"), parser.add_argument("--reference")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: fastest on 2 cores)")
    parser.add_argument("--max-tokens", type=int, default=20)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--chunk-tokens", type=int, default=5)
    args = parser.parse_args()
    clients = [min(max(1, c), MAX_CLIENTS) for c in args.clients]
    requests = min(args.requests, MAX_REQUESTS)
    torch.set_num_threads(args.threads)
    logging.getLogger("speech.inference").setLevel(logging.ERROR)  # the tiny references' level warnings
    with tempfile.TemporaryDirectory() as tmp:
        if args.ar:
            ckpts, reference = {"ar": args.ar, "fm": args.fm}, args.reference
        else:
            made, refs = tiny_assets(Path(tmp))
            ckpts, reference = made, args.reference or str(refs[2])
        config = {
            "models": {"speech-02-hd": {"ar_ckpt": str(ckpts["ar"]), "fm_ckpt": str(ckpts["fm"])}},
            "auth": False, "store": str(Path(tmp) / "store"), "stream_chunk_tokens": args.chunk_tokens,
            "system_voices": {"bench_voice_1": {"wav": reference}},
            "batching": {"max_batch": args.max_batch, "queue_size": MAX_REQUESTS, "max_streams": MAX_CLIENTS},
            "sampling": {"temperature": 0, "noise_scale": 0, "seed": 0, "max_tokens": args.max_tokens},
        }  # fmt: skip
        url, server, thread = start(config)
        run(url, 1, 2, False)  # warm-up
        rows = []
        for stream in (False, True):
            rows.append(run(url, 1, requests, stream))
            rows += [run(url, c, requests, stream) for c in clients if c > 1]
        server.should_exit = True
        thread.join()
    header = ["mode", "clients", "requests", "p50 (s)", "p95 (s)", "first chunk p50 (s)", "req/s",
              "x one-at-a-time", "failures"]  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("| --- |" + " ---: |" * (len(header) - 1))
    for row in rows:
        base = next(r for r in rows if r["mode"] == row["mode"] and r["clients"] == 1)
        cells = [row["mode"], row["clients"], row["requests"], f"{row['p50']:.3f}", f"{row['p95']:.3f}",
                 f"{row['first_p50']:.3f}", f"{row['rps']:.2f}", f"{row['rps'] / base['rps']:.2f}",
                 row["failures"]]  # fmt: skip
        print("| " + " | ".join(map(str, cells)) + " |")


if __name__ == "__main__":
    main()
