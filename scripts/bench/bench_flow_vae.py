"""Benchmark of a Flow-VAE training step (a measurement, not a test): where the time of one generator step
goes (encoder, decoder, spectral losses) for each ``configs/model`` Flow-VAE given, side by side in one
run, with random weights and inputs; with ``--encoder-from``, each model again with that config's encoder.
docs/flow_vae.md ("Two encoders") quotes it.

    python scripts/bench/bench_flow_vae.py --models flow_vae_tiny --encoder-from flow_vae_tiny_dac
    python scripts/bench/bench_flow_vae.py --models flow_vae_base --device cuda --rows 16 --encoder-from ''

A step is what ``FlowVAEModule`` runs before the GAN phase: encode ``--rows`` crops of ``--seconds``,
reparameterize, KL (through the flow), decode, multi-resolution mel and log-STFT losses, backward. The
parts are timed alone, forward and backward each. Times are medians of ``--repeats`` runs after one
warm-up, in milliseconds.

Flags (argparse) rather than Hydra overrides, as in every ``scripts/bench/`` script: a benchmark is a
measurement for developers, not a pipeline step; its knobs are sizes, repeats and threads, and it prints a
table instead of writing a run folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from speech.lit.flow_vae import MultiResolutionMelLoss, MultiResolutionSTFTLoss
from speech.profiling import timed

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SAMPLE_RATE = 16000


def parts(name: str, encoder_from: str | None, args) -> dict[str, float]:
    """Median milliseconds of a whole step and of its parts for the model config ``name``, with the encoder
    of the config ``encoder_from`` if given."""
    cfg = OmegaConf.load(CONFIGS / "model" / f"{name}.yaml")
    if encoder_from:
        cfg.encoder = OmegaConf.load(CONFIGS / "model" / f"{encoder_from}.yaml").encoder
    model = instantiate(cfg).to(args.device)
    stage = OmegaConf.load(CONFIGS / "stage" / "flow_vae.yaml")  # the spectral losses and their weights
    mel = MultiResolutionMelLoss(SAMPLE_RATE, stage.mel_windows, stage.mel_bins).to(args.device)
    stft = MultiResolutionSTFTLoss(stage.stft_sizes).to(args.device)
    w_mel, w_stft = stage.mel_weight, stage.stft_weight
    samples = int(args.seconds * SAMPLE_RATE) // model.hop_length * model.hop_length
    audio = 0.1 * torch.randn(args.rows, samples, device=args.device)
    lens = torch.full((args.rows,), samples, device=args.device)
    frames = samples // model.hop_length
    z = torch.randn(args.rows, frames, model.latent_dim, device=args.device, requires_grad=True)
    fake = audio.clone().requires_grad_(True)

    def step():
        out = model(audio, lens)
        loss = w_mel * mel(out.audio, audio, out.audio_lens) + w_stft * stft(out.audio, audio, out.audio_lens)
        (loss + out.kl).backward()

    def encoder():
        mu, log_sigma, _ = model.posterior(audio, lens)
        (mu.sum() + log_sigma.sum()).backward()

    def decoder():
        model.decode(z, torch.full((args.rows,), frames, device=args.device)).sum().backward()

    def losses():
        (w_mel * mel(fake, audio, lens) + w_stft * stft(fake, audio, lens)).backward()

    params = sum(p.numel() for p in model.encoder.parameters()) / 1e6
    times = {k: 1000 * timed(fn, args.device, args.repeats) for k, fn in
             {"step": step, "encoder": encoder, "decoder": decoder, "losses": losses}.items()}  # fmt: skip
    return {"encoder params (M)": params, **times}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["flow_vae_tiny"], help="configs/model names")
    parser.add_argument("--encoder-from", default="flow_vae_tiny_dac",
                        help="also time each model with this config's encoder ('': no)")  # fmt: skip
    parser.add_argument("--rows", type=int, default=3, help="crops per step (a 12 s batch of ~4 s cuts: 3)")
    parser.add_argument("--seconds", type=float, default=2.0, help="crop length (stage.segment_seconds)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"{args.rows} crops of {args.seconds} s, {args.threads} thread(s), {args.device}; medians in ms\n")
    print("| model | encoder params (M) | step | encoder fwd+bwd | decoder fwd+bwd | losses fwd+bwd |")
    print("|---|---:|---:|---:|---:|---:|")
    runs = [(name, None) for name in args.models]
    runs += [(name, args.encoder_from) for name in args.models if args.encoder_from]
    for name, encoder_from in runs:
        r = parts(name, encoder_from, args)
        label = f"{name}, encoder of {encoder_from}" if encoder_from else name
        share = 100 * r["encoder"] / r["step"]
        print(f"| {label} | {r['encoder params (M)']:.2f} | {r['step']:.0f} "
              f"| {r['encoder']:.0f} ({share:.0f} %) | {r['decoder']:.0f} | {r['losses']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
