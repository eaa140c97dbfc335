"""Speed of the Flow-VAE on this machine: encode/decode as multiples of real time, training steps/s.

python scripts/bench/bench_codecs.py --model configs/model/flow_vae_tiny.yaml [--seconds 4] [--repeats 5]

Reports medians over ``--repeats`` timed runs after one warm-up. A training step is one generator update
(forward, multi-resolution mel + STFT + KL loss, backward, AdamW step) on ``--batch`` crops of
``--segment`` seconds, without the discriminator (the part before ``disc_start_step``).

Flags (argparse) rather than Hydra overrides, as in every ``scripts/bench/`` script: a benchmark is a
measurement for developers, not a pipeline step; its knobs are sizes, repeats, threads and lists to
sweep in one process (``--threads 2 --repeats 3``), and it prints a table instead of writing a run folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from speech.lit.flow_vae import MultiResolutionMelLoss, MultiResolutionSTFTLoss

SAMPLE_RATE = 16000


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="configs/model/flow_vae_tiny.yaml")
    parser.add_argument("--seconds", type=float, default=4.0, help="audio length for encode/decode")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--segment", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = instantiate(OmegaConf.load(args.model))
    n = int(args.seconds * SAMPLE_RATE)
    audio, lens = 0.1 * torch.randn(1, n), torch.tensor([n])
    model.eval()
    with torch.no_grad():
        latents, latent_lens = model.encode(audio, lens)
        t_enc = median_seconds(lambda: model.encode(audio, lens), args.repeats)
        t_dec = median_seconds(lambda: model.decode(latents, latent_lens), args.repeats)
    model.train()
    mel_loss = MultiResolutionMelLoss(SAMPLE_RATE, [256, 512, 1024, 2048], [20, 40, 80, 160])
    stft_loss = MultiResolutionSTFTLoss([512, 1024, 2048])
    seg = int(args.segment * SAMPLE_RATE)
    batch, batch_lens = 0.1 * torch.randn(args.batch, seg), torch.full((args.batch,), seg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step():
        out = model(batch, batch_lens)
        ref = batch[:, : out.audio.shape[1]]
        loss = 15 * mel_loss(out.audio, ref, out.audio_lens) + stft_loss(out.audio, ref, out.audio_lens)
        opt.zero_grad()
        (loss + 0.1 * out.kl).backward()
        opt.step()

    t_step = median_seconds(train_step, args.repeats)
    result = {
        "model": args.model,
        "threads": torch.get_num_threads(),
        "encode_x_realtime": args.seconds / t_enc,
        "decode_x_realtime": args.seconds / t_dec,
        "train_steps_per_s": 1 / t_step,
        "train_batch": f"{args.batch} x {args.segment} s",
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
