"""Benchmark of the flow-matching model (a measurement, not a test): sampling speed, training throughput
and peak memory of the ``flow_matching_<size>`` model configs, with random weights and inputs.

    python scripts/bench/bench_flow_matching.py --sizes tiny base --device cpu --threads 2
    python scripts/bench/bench_flow_matching.py --sizes tiny small base large --device cuda --dtype bf16

Sampling: ``--seconds`` of new audio (25 tokens/s) after a ``--prompt-seconds`` prompt, ``--steps`` solver
steps, Euler and midpoint, classifier-free guidance on (one batched call per estimator evaluation).
Speed is seconds of audio per second of compute (higher is better; RTF = its inverse). Training: one
AdamW step on ``--train-rows`` rows of ``--train-seconds`` each (plus a 3 s reference through the speaker
encoder), reported as latent frames per second. Peak memory: CUDA max allocated per measurement; on CPU
the process's peak resident set size so far (sizes run from small to large, so it is each size's peak).

Flags (argparse) rather than Hydra overrides, as in every ``scripts/bench/`` script: a benchmark is a
measurement for developers, not a pipeline step; its knobs are sizes, repeats, threads and lists to
sweep in one process (``--sizes tiny small base large``), and it prints a table instead of writing a run
folder.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from speech.profiling import peak_memory_mib, reset_peak_memory, sync

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
LATENT_DIM = {"tiny": 16, "small": 64, "base": 64, "large": 64}  # configs/model/flow_vae_{tiny,base}.yaml
TOKENS_PER_SECOND, REF_SECONDS, MEL_RATE = 25, 3.0, 100


def build(size: str, vocab: int):
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("entry/train", overrides=[f"experiment=flow_matching_{size}",
                                          f"model.token_vocab_size={vocab}",
                                          "model.token_codebooks=1",
                                          f"model.latent_dim={LATENT_DIM[size]}"])  # fmt: skip
    return instantiate(cfg.model), cfg.data.mel.n_mels


def bench_sample(model, n_mels, args, solver: str, device, dtype) -> tuple[float, float]:
    """Audio seconds per compute second and peak MB of ``model.sample``."""
    prompt_tokens = int(args.prompt_seconds * TOKENS_PER_SECOND)
    k = prompt_tokens + int(args.seconds * TOKENS_PER_SECOND)
    fpt = model.frames_per_token
    tokens = torch.randint(0, model.token_vocab_size, (1, k), device=device)
    mel = torch.randn(1, int(REF_SECONDS * MEL_RATE), n_mels, device=device)
    prompt = torch.randn(1, fpt * prompt_tokens, model.latent_dim, device=device) if prompt_tokens else None
    times = []
    reset_peak_memory(device)
    for _ in range(args.repeats + 1):  # the first run warms up
        sync(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            speaker = model.speaker_vector(mel, torch.tensor([mel.shape[1]], device=device))
            model.sample(tokens=tokens, token_lens=torch.tensor([k], device=device), speaker=speaker,
                         prompt_latents=prompt, steps=args.steps, solver=solver,
                         cfg_scale=args.cfg_scale)  # fmt: skip
        sync(device)
        times.append(time.perf_counter() - start)
    return args.seconds / min(times[1:]), peak_memory_mib(device)


def bench_train(model, n_mels, args, device, dtype) -> tuple[float, float]:
    """Latent frames per second of forward + backward + AdamW step, and peak MB."""
    b, k = args.train_rows, int(args.train_seconds * TOKENS_PER_SECOND)
    fpt = model.frames_per_token
    batch = {
        "tokens": torch.randint(0, model.token_vocab_size, (b, k), device=device),
        "token_lens": torch.full((b,), k, device=device),
        "latents": torch.randn(b, fpt * k, model.latent_dim, device=device),
        "latent_lens": torch.full((b,), fpt * k, device=device),
    }
    mel = torch.randn(b, int(REF_SECONDS * MEL_RATE), n_mels, device=device)
    mel_lens = torch.full((b,), mel.shape[1], device=device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    reset_peak_memory(device)
    for _ in range(args.repeats + 1):
        sync(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(**batch, speaker=model.speaker_vector(mel, mel_lens)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync(device)
        times.append(time.perf_counter() - start)
    model.eval()
    return b * fpt * k / min(times[1:]), peak_memory_mib(device)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base"], choices=list(LATENT_DIM))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of new audio to sample")
    parser.add_argument("--prompt-seconds", type=float, default=0.0)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--cfg-scale", type=float, default=0.7)
    parser.add_argument("--train-rows", type=int, default=4)
    parser.add_argument("--train-seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs after one warm-up (best is kept)")
    parser.add_argument("--vocab", type=int, default=4096)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
          f"{args.dtype}, threads {torch.get_num_threads()}, {args.seconds:g} s new audio, "
          f"prompt {args.prompt_seconds:g} s, {args.steps} steps, cfg {args.cfg_scale}")  # fmt: skip
    print("| size | params | euler x real time | midpoint x real time | train frames/s | peak MB |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        torch.manual_seed(0)
        model, n_mels = build(size, args.vocab)
        model = model.to(device).eval()
        params = sum(p.numel() for p in model.parameters()) / 1e6
        euler, mem_e = bench_sample(model, n_mels, args, "euler", device, dtype)
        midpoint, mem_m = bench_sample(model, n_mels, args, "midpoint", device, dtype)
        frames, mem_t = bench_train(model, n_mels, args, device, dtype)
        print(f"| {size} | {params:.1f} M | {euler:.2f} | {midpoint:.2f} | {frames:.0f} | "
              f"{max(mem_e, mem_m):.0f} sample / {mem_t:.0f} train |", flush=True)  # fmt: skip
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
