"""Benchmark of the AR Transformer (a benchmark, not a test): decoding tokens/s of ``ARTransformer.generate``
next to Hugging Face ``LlamaForCausalLM.generate`` with the same dims and random weights, then training
tokens/s of the AR stage and peak memory. Prints a markdown table (docs/ar.md).

    python scripts/bench/bench_ar.py --threads 2
    python scripts/bench/bench_ar.py --device cuda --batch-sizes 1 16 64

Both decoders run greedy with the KV cache, the same prefix lengths and exactly ``--new-tokens`` new tokens
(EOS masked until then, stopped there). Batches above 1 are left-padded (prefix lengths vary by row) and pass
an attention mask to both. Times are medians of ``--repeats`` runs after one warm-up.

Flags (argparse) rather than Hydra overrides, as in every ``scripts/bench/`` script: a benchmark is a
measurement for developers, not a pipeline step; its knobs are sizes, repeats, threads and lists to
sweep in one process (``--batch-sizes 1 16 64``), and it prints a table instead of writing a run folder.
"""

from __future__ import annotations

import argparse

import torch

from speech.audio.mel import LogMelSpectrogram
from speech.lit.ar import ARModule
from speech.models.ar_transformer import ARTransformer
from speech.models.speaker_encoder import SpeakerEncoder
from speech.modules.transformer import swiglu_hidden
from speech.profiling import peak_memory_mib, reset_peak_memory, timed

TEXT_VOCAB, AUDIO_VOCAB = 1024, 1024


def build_ours(args, device: str) -> ARTransformer:
    spk = SpeakerEncoder(80, dim=64, layers=1, heads=2, out_dim=64)
    model = ARTransformer(spk, text_vocab_size=TEXT_VOCAB, audio_vocab_size=AUDIO_VOCAB, dim=args.dim,
                          layers=args.layers, heads=args.heads, max_len=4096)  # fmt: skip
    return model.to(device).eval()


def build_hf(args, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=AUDIO_VOCAB + 2, hidden_size=args.dim,
                      intermediate_size=swiglu_hidden(args.dim), num_hidden_layers=args.layers,
                      num_attention_heads=args.heads, num_key_value_heads=args.heads,
                      max_position_embeddings=4096, tie_word_embeddings=False,
                      pad_token_id=0, bos_token_id=AUDIO_VOCAB + 1, eos_token_id=AUDIO_VOCAB)  # fmt: skip
    return LlamaForCausalLM(cfg).to(device).eval()


def prefix_lens(batch: int, text_len: int) -> torch.Tensor:
    """Text lengths: all ``text_len`` at batch 1, else spread over [text_len / 2, text_len] (left padding)."""
    if batch == 1:
        return torch.tensor([text_len])
    return torch.linspace(text_len // 2, text_len, batch).round().long()


def bench_decode(args, batch: int, device: str) -> tuple[float, float]:
    """(ours, HF) generated tokens per second at this batch size."""
    g = torch.Generator().manual_seed(0)
    text_lens = prefix_lens(batch, args.text_len)
    text = torch.randint(3, TEXT_VOCAB, (batch, args.text_len), generator=g)
    text = text.masked_fill(torch.arange(args.text_len)[None] >= text_lens[:, None], 0).to(device)
    speaker = torch.randn(batch, 64, generator=g).to(device)
    ours = build_ours(args, device)
    n = args.new_tokens

    def run_ours():
        tokens, lens = ours.generate(speaker=speaker, text=text, text_lens=text_lens.to(device),
                                     temperature=0, min_tokens_per_text=1e6, max_tokens_per_text=1e6,
                                     max_tokens=n)  # fmt: skip
        assert int(lens.min()) == n == tokens.shape[1]

    t_ours = timed(run_ours, device, args.repeats)
    hf = build_hf(args, device)
    t = args.text_len + 2  # speaker + text + BOS, as in our prefix
    ids = torch.randint(3, AUDIO_VOCAB, (batch, t), generator=g)
    mask = torch.arange(t)[None] >= (t - (text_lens + 2))[:, None]  # left padding
    ids, mask = ids.masked_fill(~mask, 0).to(device), mask.long().to(device)

    @torch.inference_mode()
    def run_hf():
        out = hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, use_cache=True,
                          max_new_tokens=n, min_new_tokens=n)  # fmt: skip
        assert out.shape[1] == t + n

    t_hf = timed(run_hf, device, args.repeats)
    return batch * n / t_ours, batch * n / t_hf


def bench_train(args, device: str) -> tuple[float, float, float]:
    """(target audio tokens/s, sequence positions/s, peak memory MiB) of AR-stage training steps."""
    torch.manual_seed(0)
    spk = SpeakerEncoder(80, dim=args.train_spk_dim, layers=2, heads=2, out_dim=args.train_spk_dim)
    model = ARTransformer(spk, text_vocab_size=TEXT_VOCAB, audio_vocab_size=AUDIO_VOCAB, dim=args.train_dim,
                          layers=args.train_layers, heads=args.train_heads, dropout=0.1)  # fmt: skip
    module = ARModule(model, LogMelSpectrogram(), prompt_prob=0.5).to(device)
    opt = module.configure_optimizers()["optimizer"]
    b, k, n = args.train_batch, args.train_tokens, args.text_len
    batch = {
        "ids": [str(i) for i in range(b)],
        "text_tokens": torch.randint(3, TEXT_VOCAB, (b, n)), "text_lens": torch.full((b,), n),
        "tokens": torch.randint(0, AUDIO_VOCAB, (b, k)), "tokens_lens": torch.full((b,), k),
        "ref_text_tokens": torch.randint(3, TEXT_VOCAB, (b, n)), "ref_text_lens": torch.full((b,), n),
        "ref_tokens": torch.randint(0, AUDIO_VOCAB, (b, k)), "ref_tokens_lens": torch.full((b,), k),
        "ref_audio": 0.1 * torch.randn(b, 16000 * 3), "ref_audio_lens": torch.full((b,), 16000 * 3),
    }  # fmt: skip
    batch = {key: v.to(device) if torch.is_tensor(v) else v for key, v in batch.items()}
    use = torch.arange(b, device=device) % 2 == 0  # prompt_prob 0.5, fixed for a steady measurement
    module.train()

    def step():
        out = module._forward(batch, module._speaker(batch), module._prompt(batch, use))
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    reset_peak_memory(device)
    seconds = timed(step, device, args.repeats)
    peak = peak_memory_mib(device)
    positions = b * (1 + n + 1 + k) + (b // 2) * (n + k)
    return b * (k + 1) / seconds, positions / seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--text-len", type=int, default=32, help="BPE tokens of the prefix text")
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-dim", type=int, default=192, help="training bench: ar_tiny's dims")
    parser.add_argument("--train-layers", type=int, default=4)
    parser.add_argument("--train-heads", type=int, default=4)
    parser.add_argument("--train-spk-dim", type=int, default=128)
    parser.add_argument("--train-batch", type=int, default=10, help="rows of ~4 s (ar_tiny: 40 s batches)")
    parser.add_argument("--train-tokens", type=int, default=100, help="target audio tokens per row")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {args.device}, threads {torch.get_num_threads()}, torch {torch.__version__}; decode: dim "
          f"{args.dim}, {args.layers} layers, {args.heads} heads, {args.text_len} text + {args.new_tokens} "
          f"new tokens, median of {args.repeats}\n")  # fmt: skip
    print("| batch | ours tokens/s | HF Llama tokens/s | ratio |\n| ---: | ---: | ---: | ---: |")
    for batch in args.batch_sizes:
        ours, hf = bench_decode(args, batch, args.device)
        print(f"| {batch} | {ours:.0f} | {hf:.0f} | {ours / hf:.2f}x |", flush=True)
    audio, positions, peak = bench_train(args, args.device)
    print(f"\ntraining (dim {args.train_dim}, {args.train_layers} layers, batch {args.train_batch} x "
          f"{args.train_tokens} tokens, prompt on half the rows): {audio:.0f} target tokens/s, "
          f"{positions:.0f} positions/s, peak memory {peak:.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
