"""The GPU check's sections (``gpu_check.py`` runs each in a process of its own; docs/gpu_check.md). A
benchmark, not a test: argparse, like the other scripts of scripts/bench/. One section alone:

    python scripts/bench/gpu_check_sections.py ar_decode --record /tmp/ar_decode.json --device cuda
    python scripts/bench/gpu_check_sections.py train_ar --record /tmp/train_ar.json --device cpu --quick

A section writes its numbers to ``--record`` as soon as it has each. Models have random weights and read
random tensors made in memory (no corpus); sizes are the ``<stage>_base`` experiments' (bf16 on CUDA), or the
``<stage>_tiny`` ones with ``--quick`` (``SIZES``).

Sections:
    train_<stage>  a short bf16-autocast Lightning run of each stage's real module (tokenizer; flow_vae, its
                   discriminators on from step 0; ar; flow_matching): steps/s, seconds of audio/s, the
                   stage's frames or tokens/s, MFU, peak memory.
    ar_mfu         the AR Transformer's training step alone (fixed batch, no prompt), eager and with its
                   blocks compiled: MFU against the goal of 40 % (base size).
    ddp, fsdp      the AR stage under the DDP and FSDP trainers' strategies (configs/trainer/) on all the
                   devices present (world size 1 with one), then a checkpoint of the weights. FSDP: CUDA only.
    ar_decode      generated tokens/s at batch 1 and 16: ours (eager; each step replayed as one CUDA
                   graph; ``torch.compile(mode="reduce-overhead")``) against transformers'
                   ``LlamaForCausalLM.generate`` with the same dims (its default dynamic cache, and its
                   static cache); goal: ours >= 5x HF (default cache) at batch 1.
    fm_rtf         real-time factor of flow matching and of the Flow-VAE decoder (batch 1, float32).
    stream         end-to-end real-time factor of ``Synthesizer.synthesize`` and the first chunk latency of
                   ``Synthesizer.stream`` (random-weight models of the same size, zero-shot).

FLOPs: the AR Transformer's are counted by formula, ``6 N T`` for the ``N`` block parameters over the ``T``
positions of a step, ``6 N_head`` per predicted token for the output head, and causal attention
``6 L d S^2`` per row of ``S`` positions (half of PaLM's ``12 L d S``, as causal masking skips half the
scores). The other stages' FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` over one whole
training step (matrix products, convolutions and attention, forward and backward; it counts CUDA's
attention kernels unmasked, and not the CPU's flash kernel). MFU = FLOPs per step x steps/s / the
device's dense bf16 peak (``PEAK_BF16``).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from speech.profiling import peak_memory_mib, sync, timed

ROOT = Path(__file__).resolve().parents[2]
# dense bf16 tensor-core peaks from the vendor's data sheets, by a part of torch.cuda.get_device_name()
PEAK_BF16 = [("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12)]
TEXT_VOCAB = 1024  # the text BPE's size comes from the prepared corpus; any size will do here
TOKEN_RATE, TEXT_RATE, CHARS_RATE = 25, 4, 12  # audio tokens, BPE tokens and characters per second of speech
REF_SECONDS = 3.0  # reference audio per row (speaker encoders)
WORDS = "the quiet harbor woke before sunrise and the fishing boats slipped out one by one".split()

# per mode: rows (None: the experiment's max_duration) x seconds per training batch, warm-up and timed
# steps, decoding and inference sizes
SIZES = {
    "full": {"size": "base", "rows": None, "seconds": 10.0, "warmup": 3, "steps": 10, "text_len": 32,
             "new_tokens": 128, "batches": [1, 16], "repeats": 2, "fm_seconds": 10.0},
    "quick": {"size": "tiny", "rows": 2, "seconds": 1.0, "warmup": 1, "steps": 2, "text_len": 6,
              "new_tokens": 8, "batches": [1, 4], "repeats": 1, "fm_seconds": 1.0},
}  # fmt: skip


class Record:
    """A section's results, rewritten to its JSON file at every ``put``: a section stopped at its time limit
    keeps what it had measured."""

    def __init__(self, path: Path | None) -> None:
        self.path, self.data = path, {}

    def put(self, **values) -> None:
        self.data.update(values)
        if self.path is not None:
            self.path.write_text(json.dumps(self.data, indent=1, default=str))


# ---------------------------------------------------------------------------------------------- helpers
def peak_flops(device: torch.device) -> float | None:
    """The device's dense bf16 peak in FLOP/s, or None (a CPU, an unlisted GPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for part, peak in PEAK_BF16 if part in name), None)


def mfu(flops_per_step: float, steps_per_s: float, device: torch.device) -> float | None:
    peak = peak_flops(device)
    return None if peak is None else flops_per_step * steps_per_s / peak


def counted_flops(fn) -> int:
    """FLOPs of ``fn()`` (forward and backward) as ``FlopCounterMode`` counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def experiment(stage: str, quick: bool, overrides=()):
    """The composed training config of ``<stage>_tiny`` (quick) or ``<stage>_base``; for the AR and
    flow-matching stages with the sizes that come from the data and upstream checkpoints set
    (``derived_sizes``)."""
    from hydra import compose, initialize_config_dir

    from speech.lit.resolvers import register_resolvers

    register_resolvers()
    name = f"{stage}_{SIZES['quick' if quick else 'full']['size']}"
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("entry/train", overrides=[f"experiment={name}", *overrides])
    if stage in ("ar", "flow_matching"):
        for key, value in derived_sizes(quick).items():
            if key in cfg.model:
                cfg.model[key] = value
    return cfg


def derived_sizes(quick: bool) -> dict[str, int]:
    """Vocabularies and the latent dim, from the tokenizer and Flow-VAE configs of the same size."""
    quantizer = experiment("tokenizer", quick).model.quantizer
    books = quantizer.get("codebooks", 1)
    codes = quantizer.vq.codebook_size**books if quantizer.kind == "vq" else math.prod(quantizer.fsq.levels)
    latent = experiment("flow_vae", quick).model.decoder.in_channels
    return {"text_vocab_size": TEXT_VOCAB, "audio_vocab_size": codes, "token_vocab_size": codes,
            "audio_codebooks": books, "token_codebooks": books, "latent_dim": latent}  # fmt: skip


def build(cfg, device: torch.device):
    """``(model, stage module)`` as train.py builds them, on ``device``."""
    from hydra.utils import instantiate

    model = instantiate(cfg.model)
    module = instantiate(cfg.stage, model=model, mel=instantiate(cfg.data.mel))
    return model, module.to(device)


def noise_audio(
    rows: int, seconds: float, rate: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    t = int(seconds * rate)
    return 0.1 * torch.randn(rows, t, generator=g), torch.full((rows,), t)


def stage_batch(stage: str, cfg, rows: int, seconds: float, device: torch.device) -> dict:
    """A random batch in the layout of ``SpeechDataModule``'s for ``stage``, on ``device``."""
    g = torch.Generator().manual_seed(0)
    sr, k, n = cfg.data.sample_rate, int(seconds * TOKEN_RATE), max(2, int(seconds * TEXT_RATE))
    batch: dict = {"ids": [f"row{i}" for i in range(rows)]}
    if stage in ("tokenizer", "flow_vae"):
        batch["audio"], batch["audio_lens"] = noise_audio(rows, seconds, sr, g)
        words = int(seconds * CHARS_RATE / 5)
        batch["texts"] = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(words)) for i in range(rows)]
        batch["languages"] = ["en"] * rows
    else:
        batch["ref_audio"], batch["ref_audio_lens"] = noise_audio(rows, REF_SECONDS, sr, g)
        vocab = cfg.model.get("audio_vocab_size") or cfg.model.token_vocab_size
        batch["tokens"], batch["tokens_lens"] = (
            torch.randint(0, vocab, (rows, k), generator=g),
            torch.full((rows,), k),
        )
    if stage == "ar":
        for prefix in ("", "ref_"):
            batch[f"{prefix}text_tokens"] = torch.randint(3, TEXT_VOCAB, (rows, n), generator=g)
            batch[f"{prefix}text_lens"] = torch.full((rows,), n)
        batch["ref_tokens"], batch["ref_tokens_lens"] = batch["tokens"].clone(), batch["tokens_lens"].clone()
    if stage == "flow_matching":
        frames = cfg.model.frames_per_token * k
        batch["latents"] = torch.randn(rows, frames, cfg.model.latent_dim, generator=g)
        batch["latents_lens"] = torch.full((rows,), frames)
    return {key: v.to(device) if torch.is_tensor(v) else v for key, v in batch.items()}


def units(stage: str, cfg, model, rows: int, seconds: float) -> tuple[float, str, float]:
    """``(seconds of audio, unit, units)`` one training batch of ``stage`` holds."""
    if stage == "flow_vae":  # the module trains on crops
        seconds = min(seconds, cfg.stage.segment_seconds or seconds)
        return rows * seconds, "latent frames", rows * seconds * cfg.data.sample_rate / model.hop_length
    if stage == "tokenizer":
        rate, unit = cfg.data.sample_rate / cfg.data.mel.hop_length, "mel frames"
    elif stage == "ar":
        rate, unit = TOKEN_RATE, "audio tokens"
    else:
        rate, unit = TOKEN_RATE * cfg.model.frames_per_token, "latent frames"
    return rows * seconds, unit, rows * seconds * rate


def batch_rows(cfg, sizes: dict) -> int:
    """Rows of a training batch: the experiment's ``max_duration`` in rows of ``seconds`` (full size)."""
    if sizes["rows"]:
        return sizes["rows"]
    return max(1, int(cfg.data.datamodule.max_duration // sizes["seconds"]))


class Repeated(Dataset):
    """The same batch ``steps`` times."""

    def __init__(self, batch: dict, steps: int) -> None:
        self.batch, self.steps = batch, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> dict:
        return self.batch


class RandomData(L.LightningDataModule):
    """One batch ``steps`` times, and the text BPE that ``SpeechDataModule`` would give (an AR checkpoint
    carries it)."""

    def __init__(self, batch: dict, steps: int) -> None:
        super().__init__()
        self.batch, self.steps, self.bpe = batch, steps, text_bpe()

    def train_dataloader(self) -> DataLoader:
        return DataLoader(Repeated(self.batch, self.steps), batch_size=None)


def text_bpe():
    """A text BPE learned from ``WORDS`` (vocabulary 300)."""
    from speech.text.bpe import TextBPE

    return TextBPE.train([" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))], vocab_size=300,
                         min_frequency=1)  # fmt: skip


class StepClock(L.Callback):
    """Times the training batches after the first ``warmup`` (device-synchronized) and counts the FLOPs of
    the first one with ``FlopCounterMode`` (``count``)."""

    def __init__(self, warmup: int, count: bool = True) -> None:
        self.warmup, self.count = warmup, count
        self.start = self.end = self.flops = self._counter = None
        self.timed = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0 and self.count:
            from torch.utils.flop_counter import FlopCounterMode

            self._counter = FlopCounterMode(display=False)
            self._counter.__enter__()
        if batch_idx == self.warmup:
            sync(pl_module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.flops, self._counter = self._counter.get_total_flops(), None
        if batch_idx >= self.warmup:
            sync(pl_module.device)
            self.end, self.timed = time.perf_counter(), batch_idx + 1 - self.warmup

    @property
    def steps_per_s(self) -> float:
        return self.timed / (self.end - self.start)


class ParamSpread(L.Callback):
    """At the end of training, the spread over the ranks of a checksum of the parameters (0: DDP kept every
    rank's copy equal)."""

    spread: float | None = None

    def on_train_end(self, trainer, pl_module) -> None:
        checksum = torch.stack([p.detach().double().sum() for p in pl_module.parameters()]).sum()
        gathered = pl_module.all_gather(checksum)
        self.spread = float(gathered.max() - gathered.min())


def lightning_fit(module, batch: dict, device, steps: int, callbacks, *, grad_clip=None, strategy="auto",
                  devices: int = 1) -> L.Trainer:  # fmt: skip
    """``steps`` bf16-autocast training steps of ``module`` on ``batch`` (every step the same)."""
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=devices, strategy=strategy,
        precision="bf16-mixed", max_steps=steps, gradient_clip_val=grad_clip, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0, callbacks=callbacks,
    )  # fmt: skip
    trainer.fit(module, datamodule=RandomData(batch, steps))
    return trainer


# --------------------------------------------------------------------------------------------- sections
def train_section(stage: str):
    """Section ``train_<stage>``: a short Lightning run of the stage's module on one random batch."""

    def section(rec: Record, args) -> None:
        sizes = SIZES["quick" if args.quick else "full"]
        overrides = ["stage.disc_start_step=0"] if stage == "flow_vae" else []  # the full GAN step
        cfg = experiment(stage, args.quick, overrides)
        rows, seconds = batch_rows(cfg, sizes), sizes["seconds"]
        model, module = build(cfg, args.device)
        audio_s, unit, count = units(stage, cfg, model, rows, seconds)
        rec.put(experiment=cfg.name, parameters_m=sum(p.numel() for p in model.parameters()) / 1e6,
                batch=f"{rows} rows x {seconds:g} s", precision="bf16-mixed")  # fmt: skip
        clock = StepClock(sizes["warmup"])
        batch = stage_batch(stage, cfg, rows, seconds, args.device)
        steps = sizes["warmup"] + sizes["steps"]
        lightning_fit(
            module, batch, args.device, steps, [clock], grad_clip=cfg.trainer.get("gradient_clip_val")
        )
        rate = clock.steps_per_s
        rec.put(steps_per_s=rate, audio_seconds_per_s=audio_s * rate,
                **{f"{unit.replace(' ', '_')}_per_s": count * rate}, flops_per_step_counted=clock.flops,
                mfu_percent=percent(mfu(clock.flops, rate, args.device)),
                peak_memory_mib=peak_memory_mib(args.device))  # fmt: skip

    return section


def percent(fraction: float | None) -> float | None:
    return None if fraction is None else 100 * fraction


def ar_train_flops(model, rows: int, n: int, k: int) -> float:
    """Training FLOPs of one step of the AR Transformer over ``rows`` rows of speaker, ``n`` text tokens,
    BOS and ``k`` audio tokens (no prompt): see the module docstring."""
    s = 1 + n + 1 + k
    blocks = sum(
        p.numel() for p in model.blocks.parameters() if p.dim() > 1
    )  # weights (norm gains: no matmul)
    d, layers = model.head.in_features, len(model.blocks)
    return (
        6 * blocks * rows * s + 6 * model.head.weight.numel() * rows * (k + 1) + 6 * layers * d * s * s * rows
    )


def section_ar_mfu(rec: Record, args) -> None:
    """The AR Transformer's own training step (bf16 autocast, fused AdamW on CUDA), eager and compiled."""
    from hydra.utils import instantiate

    sizes, device = SIZES["quick" if args.quick else "full"], args.device
    cfg = experiment("ar", args.quick)
    model = instantiate(cfg.model).to(device).train()
    rows, k, n = batch_rows(cfg, sizes), int(sizes["seconds"] * TOKEN_RATE), int(sizes["seconds"] * TEXT_RATE)
    g = torch.Generator().manual_seed(0)
    inputs = {"speaker": torch.randn(rows, model.speaker_encoder.out_dim, generator=g),
              "text": torch.randint(3, TEXT_VOCAB, (rows, n), generator=g),
              "text_lens": torch.full((rows,), n),
              "audio_tokens": torch.randint(0, model.audio_vocab_size, (rows, k), generator=g),
              "audio_lens": torch.full((rows,), k)}  # fmt: skip
    inputs = {key: v.to(device) for key, v in inputs.items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(**inputs).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    flops, positions = ar_train_flops(model, rows, n, k), rows * (n + k + 2)
    rec.put(experiment=cfg.name, parameters_m=sum(p.numel() for p in model.parameters()) / 1e6,
            batch=f"{rows} rows x {n + k + 2} positions", flops_per_step=flops,
            flops_per_step_counted=counted_flops(step))  # fmt: skip
    # inductor on CUDA; on the CPU (--quick) only the tracing, which is what the toy run checks
    backend = "inductor" if device.type == "cuda" else "eager"
    for variant in ("eager", "compiled"):
        if variant == "compiled":
            for block in model.blocks:  # identical blocks: one compilation serves them all
                block.compile(backend=backend, dynamic=False)
        seconds = timed(step, device, sizes["steps"], warmup=sizes["warmup"])
        rec.put(**{variant: {"steps_per_s": 1 / seconds, "positions_per_s": positions / seconds,
                             "mfu_percent": percent(mfu(flops, 1 / seconds, device))}})  # fmt: skip
    peak = peak_flops(device)
    rec.put(compile_backend=backend, peak_bf16_tflops=None if peak is None else peak / 1e12)
    if peak is not None:
        rec.put(best_mfu_percent=max(rec.data[v]["mfu_percent"] for v in ("eager", "compiled")))


def parallel_section(trainer_name: str):
    """Section ``ddp`` or ``fsdp``: the AR stage under the strategy of ``configs/trainer/<trainer_name>.yaml``
    on every device present, then a checkpoint of its weights (FSDP: the full state dict, gathered)."""

    def section(rec: Record, args) -> None:
        sizes, device = SIZES["quick" if args.quick else "full"], args.device
        if trainer_name == "fsdp" and device.type != "cuda":
            rec.put(not_run="FSDP needs CUDA: Lightning and torch refuse it on the CPU (docs/training.md)")
            return
        from hydra.utils import instantiate

        devices = torch.cuda.device_count() if device.type == "cuda" else 1
        cfg = experiment("ar", args.quick, [f"trainer={trainer_name}"])
        rows, seconds = batch_rows(cfg, sizes), sizes["seconds"]
        module = build(cfg, torch.device("cpu"))[1]  # the strategy puts each rank's copy on its device
        clock, spread = StepClock(sizes["warmup"], count=False), ParamSpread()
        callbacks = [clock] + ([spread] if trainer_name == "ddp" else [])  # FSDP ranks hold shards
        batch = stage_batch("ar", cfg, rows, seconds, torch.device("cpu"))
        trainer = lightning_fit(module, batch, device, sizes["warmup"] + sizes["steps"], callbacks,
                                strategy=instantiate(cfg.trainer.strategy), devices=devices)  # fmt: skip
        # the same path on every rank: rank 0 writes the weights (FSDP: gathered from the shards)
        checkpoint, start = (
            Path(tempfile.gettempdir()) / f"gpu_check_{trainer_name}.ckpt",
            time.perf_counter(),
        )
        trainer.save_checkpoint(checkpoint, weights_only=True)
        if trainer.global_rank != 0:
            return
        rec.put(
            checkpoint_seconds=time.perf_counter() - start, checkpoint_mib=checkpoint.stat().st_size / 2**20
        )
        tokens = rows * seconds * TOKEN_RATE * clock.steps_per_s
        rec.put(experiment=cfg.name, strategy=type(trainer.strategy).__name__, devices_present=devices,
                world_size=trainer.world_size, batch_per_device=f"{rows} rows x {seconds:g} s",
                steps_per_s=clock.steps_per_s, audio_tokens_per_s_per_device=tokens,
                audio_tokens_per_s_total=tokens * trainer.world_size,
                peak_memory_mib=peak_memory_mib(device))  # fmt: skip
        if spread.spread is not None:
            rec.put(parameter_checksum_spread=spread.spread)
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
        checkpoint.unlink()
        with torch.device("meta"):  # the unwrapped model's names and shapes
            full = instantiate(cfg.model).state_dict()
        whole = all(state.get(f"model.{k}", torch.empty(0)).shape == v.shape for k, v in full.items())
        rec.put(checkpoint_has_every_full_tensor=whole)
        if trainer.world_size == 1:
            rec.put(note="one device: world size 1 (the process group, the strategy's wrapper and its "
                    "collectives run; nothing crosses devices)")  # fmt: skip

    return section


class GraphedStep:
    """Replays a static-shape decoding step (``ARTransformer._decode_step``) as one CUDA graph.

    The first call with new shapes (or new KV caches, ``caches()`` names them) runs the step eagerly on a side
    stream, which gives its real result and warms its kernels up, then captures it. A capture runs nothing, so
    the caches' slots and fill level, which the step updates in place, move once per call. Later calls copy
    their inputs into the captured ones and replay the graph.
    """

    def __init__(self, step, caches) -> None:
        self.step, self.caches = step, caches
        self.key = self.graph = self.inputs = self.output = None

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        key = (tuple(a.shape for a in args), self.caches())
        if key == self.key:
            for static, value in zip(self.inputs, args, strict=True):
                static.copy_(value)
            self.graph.replay()
            return self.output
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = self.step(*args)
        torch.cuda.current_stream().wait_stream(side)
        out.record_stream(torch.cuda.current_stream())  # made on the side stream, read on this one
        self.inputs, self.graph = [a.clone() for a in args], torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = self.step(*self.inputs)
        self.key = key
        return out


def decoding_variants(model, device) -> dict:
    """Our decoding step per variant name: a callable that makes it (None: the model's own)."""
    eager = model._decode_step
    variants = {"ours_eager": None}
    if device.type == "cuda":  # the CPU decodes through the blocks' lean step instead
        variants["ours_cuda_graph"] = lambda: GraphedStep(
            eager, lambda: model.blocks[0].attn.kv_cache.kv.data_ptr()
        )
        variants["ours_compiled"] = lambda: compiled_step(eager)
    return variants


def compiled_step(step):
    """``step`` through ``torch.compile(mode="reduce-overhead")``: Inductor's kernels replayed as CUDA graphs;
    every call starts a new graph step (the caller is done with the previous step's logits)."""
    compiled = torch.compile(step, mode="reduce-overhead", fullgraph=True, dynamic=False)

    def run(*args):
        torch.compiler.cudagraph_mark_step_begin()
        return compiled(*args)

    return run


def hf_llama(model, dtype, device):
    """transformers' Llama with our AR model's dims and vocabulary (random weights)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    block = model.blocks[0]
    cfg = LlamaConfig(vocab_size=model.audio_vocab_size + 2, hidden_size=model.head.in_features,
                      intermediate_size=block.ffn.w2.in_features, num_hidden_layers=len(model.blocks),
                      num_attention_heads=block.attn.heads, num_key_value_heads=block.attn.heads,
                      max_position_embeddings=model.max_len, tie_word_embeddings=False, pad_token_id=0,
                      bos_token_id=model.bos_id, eos_token_id=model.eos_id)  # fmt: skip
    return LlamaForCausalLM(cfg).to(device, dtype).eval()


def section_ar_decode(rec: Record, args) -> None:
    """Generated tokens/s, ours against HF Llama, greedy, exactly ``new_tokens`` per row. The quick
    variants of every batch size come first, the ones that compile last (``DECODE_ORDER``)."""
    from hydra.utils import instantiate

    sizes, device = SIZES["quick" if args.quick else "full"], args.device
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cfg = experiment("ar", args.quick)
    ours = instantiate(cfg.model).to(device, dtype).eval()
    hf = hf_llama(ours, dtype, device)
    n, text_len, batches = sizes["new_tokens"], sizes["text_len"], sizes["batches"]
    dims = f"dim {ours.head.in_features}, {len(ours.blocks)} layers, {ours.blocks[0].attn.heads} heads"
    rec.put(experiment=cfg.name, dims=f"{dims}, vocab {ours.audio_vocab_size + 2}", dtype=str(dtype),
            new_tokens=n, text_tokens=text_len)  # fmt: skip
    runs = {batch: decode_runs(ours, hf, batch, n, text_len, device, dtype) for batch in batches}
    for group in DECODE_ORDER:
        for batch in batches:
            for name in (v for v in group if v in runs[batch]):
                results = rec.data.setdefault(f"batch_{batch}_tokens_per_s", {})
                try:  # one variant's failure (a transformers without a static cache, say) leaves the others
                    results[name] = batch * n / timed(runs[batch][name], device, sizes["repeats"])
                except Exception as err:  # noqa: BLE001 - written into the report
                    results[name] = f"failed: {type(err).__name__}: {err}"[:300]
                rec.put(**decode_goal(rec.data.get(f"batch_{batches[0]}_tokens_per_s", {})))


DECODE_ORDER = [("ours_eager", "ours_cuda_graph", "hf_dynamic_cache"), ("ours_compiled", "hf_static_cache")]


def decode_goal(first: dict) -> dict:
    """The goal's ratio, our best over HF with its default cache, from the first batch size's tokens/s."""
    ours = [v for k, v in first.items() if k.startswith("ours") and isinstance(v, float)]
    if not ours or not isinstance(first.get("hf_dynamic_cache"), float):
        return {}
    ratio = max(ours) / first["hf_dynamic_cache"]
    return {"batch_1_ratio_vs_hf": ratio}


def decode_runs(ours, hf, batch: int, n: int, text_len: int, device, dtype) -> dict:
    """Callables that generate ``n`` tokens for ``batch`` rows (left-padded prefixes of varied lengths above
    batch 1), by variant; ours install their decoding step around the call."""
    g = torch.Generator().manual_seed(0)
    text_lens = (
        torch.tensor([text_len]) if batch == 1 else torch.linspace(text_len // 2, text_len, batch).long()
    )
    text = torch.randint(3, TEXT_VOCAB, (batch, text_len), generator=g)
    text = text.masked_fill(torch.arange(text_len)[None] >= text_lens[:, None], 0).to(device)
    speaker = torch.randn(batch, ours.speaker_encoder.out_dim, generator=g).to(device, dtype)
    t = text_len + 2  # speaker + text + BOS, as in our prefix
    ids = torch.randint(3, ours.audio_vocab_size, (batch, t), generator=g)
    mask = torch.arange(t)[None] >= (t - (text_lens + 2))[:, None]  # left padding
    ids, mask = ids.masked_fill(~mask, 0).to(device), mask.long().to(device)
    runs = {}
    for name, install in decoding_variants(ours, device).items():
        step = install() if install else None

        def run_ours(step=step):
            if step is not None:
                ours._decode_step = step
            try:
                tokens, lens = ours.generate(speaker=speaker, text=text, text_lens=text_lens.to(device),
                                             temperature=0, min_tokens_per_text=1e6, max_tokens_per_text=1e6,
                                             max_tokens=n)  # fmt: skip
            finally:
                ours.__dict__.pop("_decode_step", None)  # back to the class's eager step
            assert int(lens.min()) == n == tokens.shape[1]

        runs[name] = run_ours
    for name, extra in (("hf_dynamic_cache", {}), ("hf_static_cache", {"cache_implementation": "static"})):

        @torch.inference_mode()
        def run_hf(extra=extra):
            out = hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n,
                              min_new_tokens=n, **extra)  # fmt: skip
            assert out.shape[1] == t + n

        runs[name] = run_hf
    return runs


def section_fm_rtf(rec: Record, args) -> None:
    """Real-time factors (compute seconds per second of audio) of flow matching's sampling and of the
    Flow-VAE decoder, batch 1, float32 (as ``Synthesizer`` runs them)."""
    from hydra.utils import instantiate

    sizes, device = SIZES["quick" if args.quick else "full"], args.device
    fm_cfg, vae_cfg = experiment("flow_matching", args.quick), experiment("flow_vae", args.quick)
    fm, vae = instantiate(fm_cfg.model).to(device).eval(), instantiate(vae_cfg.model).to(device).eval()
    seconds = sizes["fm_seconds"]
    k = int(seconds * TOKEN_RATE)
    g = torch.Generator(device).manual_seed(0)
    tokens = torch.randint(0, fm.token_vocab_size, (1, k), device=device, generator=g)
    lens, speaker = (
        torch.tensor([k], device=device),
        torch.randn(1, fm.speaker_encoder.out_dim, device=device),
    )
    with torch.inference_mode():
        sample = lambda: fm.sample(tokens=tokens, token_lens=lens, speaker=speaker, generator=g)
        t_fm = timed(sample, device, sizes["repeats"])
        z, z_lens = sample()
        t_dec = timed(lambda: vae.decode(z, z_lens), device, sizes["repeats"])
    rec.put(experiments=f"{fm_cfg.name}, {vae_cfg.name}", audio_seconds=seconds,
            solver="FlowMatching.sample defaults (10 Euler steps, CFG 0.7)", flow_matching_rtf=t_fm / seconds,
            decoder_rtf=t_dec / seconds)  # fmt: skip


def section_stream(rec: Record, args) -> None:
    """``Synthesizer`` end to end on random-weight models of the check's size, zero-shot, seeded sampling."""
    import numpy as np
    from hydra.utils import instantiate

    from speech.inference import SamplingSetting, SynthesisRequest, Synthesizer

    device, text, bpe = args.device, " ".join(WORDS), text_bpe()
    cfgs = {
        stage: experiment(stage, args.quick) for stage in ("ar", "flow_matching", "tokenizer", "flow_vae")
    }
    models = [instantiate(cfg.model).to(device).eval() for cfg in cfgs.values()]
    sr = cfgs["ar"].data.sample_rate
    synth = Synthesizer(*models, bpe, instantiate(cfgs["ar"].data.mel).to(device))
    t = np.arange(int(REF_SECONDS * sr)) / sr
    reference = 0.3 * np.sin(2 * np.pi * 150 * t) + 0.02 * np.random.default_rng(0).standard_normal(t.shape)
    request = SynthesisRequest(text, reference=reference.astype(np.float32), reference_sample_rate=sr,
                               sampling=SamplingSetting(seed=0))  # fmt: skip
    synth.synthesize(request)  # warm-up (also measures the streaming decoder's context)
    list(synth.stream(request))
    sync(device)
    start = time.perf_counter()
    result = synth.synthesize(request)
    whole = time.perf_counter() - start
    rec.put(experiments=", ".join(cfg.name for cfg in cfgs.values()), text_words=len(WORDS),
            audio_seconds=result.duration, synthesize_seconds=whole, end_to_end_rtf=whole / result.duration,
            ar_decoding="eager (as Synthesizer runs it)")  # fmt: skip
    start, first, samples = time.perf_counter(), None, 0
    for chunk in synth.stream(request):
        first = time.perf_counter() - start if first is None else first
        samples += chunk.shape[0]
    total = time.perf_counter() - start
    rec.put(first_chunk_seconds=first, stream_seconds=total, stream_rtf=total / (samples / synth.sample_rate))


STAGES = ("tokenizer", "flow_vae", "ar", "flow_matching")
SECTION_FUNCTIONS = {f"train_{stage}": train_section(stage) for stage in STAGES}
SECTION_FUNCTIONS.update(ddp=parallel_section("ddp"), fsdp=parallel_section("fsdp"))
SECTION_FUNCTIONS.update(ar_mfu=section_ar_mfu, ar_decode=section_ar_decode, fm_rtf=section_fm_rtf,
                         stream=section_stream)  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("section", choices=sorted(SECTION_FUNCTIONS))
    parser.add_argument("--record", type=Path, help="JSON file of the results (rewritten as they come)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--quick", action="store_true", help="toy sizes (the tiny experiments)")
    args = parser.parse_args(argv)
    args.device = torch.device(args.device)
    torch.manual_seed(0)
    SECTION_FUNCTIONS[args.section](Record(args.record), args)


if __name__ == "__main__":
    main()
