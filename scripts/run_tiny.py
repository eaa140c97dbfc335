"""The main job: the whole pipeline on the built-in tiny corpus, on CPU, with a short training budget.

    bash scripts/run_tiny.sh [hydra overrides for every stage, e.g. paths.data_dir=/scratch/data]

(``run_tiny.sh`` installs the environment, then runs this file.) The graph::

    corpus -> prepare -> tokenizer -> token cache ----> AR + speaker encoder ---\\
                      \\                       \\                              +-> clone test-synth-en
                       -> Flow-VAE -> latent cache -> flow matching -----------/   zero-shot | one-shot
                                                                                   -> WER / SIM of each
    prepare -> WER / SIM of the ground truth (whenever a core is free)              -> one table

Tasks run on ``SLOTS`` CPU slots (default: every core), one thread each unless noted, as soon as what they
need is done (``speech.runner``). Everything is safe to run again: trained stages resume at their last
checkpoint and stop at once when done, caches and generated wavs are skipped, a scored ground truth is kept.
Budgets come from the environment: ``TOKENIZER_STEPS`` (600), ``VAE_STEPS`` (2000), ``AR_STEPS`` (800),
``FM_STEPS`` (1200); ``EVAL_ASR`` picks the WER judge (``pocketsphinx_fast``, see docs/evaluation.md).
Outputs: ``logs/pipeline_tiny/`` (a log per task, ``timings.md``, ``results.md``).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speech.runner import Task, run_job  # noqa: E402

OUT = Path("logs/pipeline_tiny")
META = "data/synthetic_tiny/test-synth-en/meta.lst"
TOKENIZER_CKPT = Path("logs/tokenizer_tiny/checkpoints/last.ckpt")
VAE_CKPT = Path("logs/flow_vae_tiny/checkpoints/last.ckpt")
AR_CKPT = Path("logs/ar_tiny/checkpoints/last.ckpt")
FM_CKPT = Path("logs/flow_matching_tiny/checkpoints/last.ckpt")


def generated_dir() -> Path:
    """Where this pair of AR + flow-matching checkpoints writes its wavs and scores: a rerun after more
    training makes new ones instead of mixing them with the old."""
    digest = hashlib.sha256(AR_CKPT.read_bytes() + FM_CKPT.read_bytes()).hexdigest()[:12]
    return OUT / digest


def tasks(extra: list[str], env: dict, slots: int) -> list[Task]:
    """The main job's graph; ``extra`` Hydra overrides go to every Hydra command."""

    def hydra(script: str, *args) -> list[str]:
        return [sys.executable, script, *map(str, args), *extra]

    def train(experiment: str, budget: str, default: int, *args) -> list[str]:
        steps = env.get(budget, default)
        return hydra("train.py", f"experiment={experiment}", f"trainer.max_steps={steps}", *args)

    asr = env.get("EVAL_ASR", "pocketsphinx_fast")
    truth_dir = OUT / f"ground_truth_{asr}"

    def clone(mode: str):
        def command():
            out_dir = generated_dir() / mode
            ckpts = (f"ar_ckpt={AR_CKPT}", f"fm_ckpt={FM_CKPT}")
            return hydra(
                "infer.py", *ckpts, f"meta={META}", f"mode={mode}", f"out_dir={out_dir}", "progress=false"
            )

        return command

    def scored(mode: str):
        def command():
            gen = generated_dir()
            dirs = (f"gen_dir={gen / mode}", f"out_dir={gen / 'eval' / mode}")
            return hydra("eval/seedtts_eval.py", f"meta={META}", "language=en", f"asr={asr}", *dirs,
                         "ground_truth=false", "progress=false")  # fmt: skip

        return command

    def table() -> list[str]:
        gen = generated_dir()
        runs = (f"zero-shot={gen / 'eval/zero_shot'}", f"one-shot={gen / 'eval/one_shot'}")
        truth = f"--ground-truth={truth_dir / 'test-synth-en/en'}"
        return [sys.executable, "eval/compare_runs.py", *runs, truth, f"--out={gen / 'results.md'}"]

    corpus = ("scripts/make_synthetic_corpus.py", "data=synthetic_tiny")
    return [
        Task("corpus", hydra(*corpus), threads=min(2, slots)),  # it renders in two processes
        Task("prepare", hydra("scripts/prepare_data.py", "data=synthetic_tiny"), after=("corpus",)),
        Task("tokenizer", train("tokenizer_tiny", "TOKENIZER_STEPS", 600), after=("prepare",)),
        Task("flow_vae", train("flow_vae_tiny", "VAE_STEPS", 2000), after=("prepare",)),
        Task(
            "encode_tokens",
            hydra("scripts/encode_tokens.py", f"ckpt={TOKENIZER_CKPT}", "progress=false"),
            after=("tokenizer",),
        ),  # fmt: skip
        Task(
            "encode_latents",
            hydra("scripts/encode_latents.py", "kind=latents", f"ckpt={VAE_CKPT}", "progress=false"),
            after=("flow_vae",),
        ),  # fmt: skip
        Task(
            "ar",
            train("ar_tiny", "AR_STEPS", 800, "data.datamodule.max_duration=20"),
            after=("encode_tokens",),
        ),
        Task(
            "flow_matching",
            train("flow_matching_tiny", "FM_STEPS", 1200),
            after=("encode_tokens", "encode_latents"),
        ),  # fmt: skip
        Task("zero_shot", clone("zero_shot"), after=("ar", "flow_matching")),
        Task("one_shot", clone("one_shot"), after=("ar", "flow_matching")),
        Task("eval_zero_shot", scored("zero_shot"), after=("zero_shot",)),
        Task("eval_one_shot", scored("one_shot"), after=("one_shot",)),
        # needs only the test set, but waits for the token cache: from then on it starts only when no task
        # earlier in this list is ready, i.e. in the gap one training lane leaves while the other finishes
        Task(
            "eval_ground_truth",
            hydra(
                "scripts/score_ground_truth.py", f"asr={asr}", "sets=[test-synth-en]", f"out_dir={truth_dir}"
            ),
            after=("encode_tokens",),
            done_if=truth_dir / "test-synth-en/en/summary.json",
        ),  # fmt: skip
        Task("table", table, after=("eval_zero_shot", "eval_one_shot", "eval_ground_truth")),
    ]


def main() -> int:
    slots = int(os.environ.get("SLOTS", os.cpu_count() or 1))
    timing = run_job(tasks(sys.argv[1:], dict(os.environ), slots), slots=slots, log_dir=OUT)
    if timing is None:
        return 1
    results = (generated_dir() / "results.md").read_text()
    (OUT / "results.md").write_text(results)
    print(f"\n{timing}\n{results}\nwavs and per-utterance scores: {generated_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
