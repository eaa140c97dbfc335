"""The emotion job: one LoRA adapter per emotion on the main job's tiny AR model, and what each one does.

    bash scripts/jobs/run_emotion_tiny.sh [hydra overrides for every stage, e.g. paths.data_dir=/scratch/data]

(``run_emotion_tiny.sh`` installs the environment and runs the main job first; a finished main job is kept
and takes seconds.) The graph::

    emotive renditions -> prepare (base BPE) -> token cache -> adapter per emotion -> clone the subset
                                                                              with the emotion ---\\
                                                  clone the subset without an adapter ---------+-> prosody
                                                                                                \\-> WER/SIM

The test subset is the first ``EVAL_PER_SPEAKER`` (3) utterances of each ``test-synth-en`` speaker, cloned
zero-shot with the same seed and batches with and without each adapter, so an adapter is the only
difference. ``eval/emotion_eval.py`` sets the prosody shift of each emotion (F0, duration and loudness
against the base model's output) beside the shift in its training renditions; ``eval/seedtts_eval.py``
scores WER/SIM of every run. Budgets from the environment: ``ADAPTER_STEPS`` (300), ``EMOTIONS`` (the eight
of the corpus, comma-separated), ``EVAL_ASR`` (``pocketsphinx_fast``). Everything is safe to run again.
Outputs: ``logs/pipeline_emotion_tiny/`` (a log per task, ``timings.md``, ``results.md``, ``prosody.png``).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections import defaultdict
from pathlib import Path

from speech.data.meta_list import read_meta_list, write_meta_list
from speech.runner import Task, run_job

OUT = Path("logs/pipeline_emotion_tiny")
META = Path("data/synthetic_tiny/test-synth-en/meta.lst")
CORPUS = Path("data/synthetic_emotion_tiny")
TOKENIZER_CKPT = Path("logs/tokenizer_tiny/checkpoints/last.ckpt")
AR_CKPT = Path("logs/ar_tiny/checkpoints/last.ckpt")
FM_CKPT = Path("logs/flow_matching_tiny/checkpoints/last.ckpt")
EMOTIONS = ("happy", "sad", "angry", "fearful", "disgusted", "surprised", "calm", "fluent")
BASE = "base"  # the run without an adapter


def adapter_ckpt(emotion: str) -> Path:
    return Path(f"logs/ar_emotion_tiny/{emotion}/checkpoints/last.ckpt")


def generated_dir() -> Path:
    """Where this AR + flow-matching pair writes its clones: a rerun after more training makes new ones."""
    digest = hashlib.sha256(AR_CKPT.read_bytes() + FM_CKPT.read_bytes()).hexdigest()[:12]
    return OUT / digest


def run_dir(emotion: str) -> Path:
    """The clones of one emotion (or ``BASE``), keyed by its adapter's bytes as well."""
    if emotion == BASE:
        return generated_dir() / BASE
    return generated_dir() / f"{emotion}-{hashlib.sha256(adapter_ckpt(emotion).read_bytes()).hexdigest()[:8]}"


def subset_meta(per_speaker: int) -> Path:
    """The first ``per_speaker`` utterances of every test-synth-en speaker, as a meta.lst of their own."""
    if not META.is_file():
        raise FileNotFoundError(f"{META} not found: run the main job first (bash scripts/run_tiny.sh)")
    by_speaker = defaultdict(list)
    for entry in read_meta_list(META):
        by_speaker[entry.utt.rsplit("-", 2)[0]].append(entry)  # ids are <speaker>-<language>-<n>
    chosen = [e for entries in by_speaker.values() for e in entries[:per_speaker]]
    return write_meta_list(OUT / f"test-synth-en-{per_speaker}-per-speaker.lst", chosen)


def tasks(extra: list[str], env: dict, slots: int) -> list[Task]:
    """The emotion job's graph; ``extra`` Hydra overrides go to every Hydra command."""
    emotions = [e.strip() for e in env.get("EMOTIONS", ",".join(EMOTIONS)).split(",") if e.strip()]
    steps = env.get("ADAPTER_STEPS", 300)
    asr = env.get("EVAL_ASR", "pocketsphinx_fast")
    meta = subset_meta(int(env.get("EVAL_PER_SPEAKER", 3)))
    data = "data=synthetic_emotion_tiny"

    def hydra(script: str, *args) -> list[str]:
        return [sys.executable, script, *map(str, args), *extra]

    def clone(emotion: str):
        def command():
            args = [f"ar_ckpt={AR_CKPT}", f"fm_ckpt={FM_CKPT}", f"meta={meta}", "mode=zero_shot",
                    f"out_dir={run_dir(emotion)}", "progress=false"]  # fmt: skip
            if emotion != BASE:
                args += [f"emotion_adapters=[{adapter_ckpt(emotion)}]", f"voice.emotion={emotion}"]
            return hydra("infer.py", *args)

        return command

    def scored(emotion: str):
        def command():
            gen = run_dir(emotion)
            out = gen.parent / "eval" / gen.name
            return hydra("eval/seedtts_eval.py", f"meta={meta}", "language=en", f"asr={asr}",
                         f"gen_dir={gen}", f"out_dir={out}", "ground_truth=false",
                         "progress=false")  # fmt: skip

        return command

    def prosody() -> list[str]:
        runs = "emotions={" + ", ".join(f"{e}: {run_dir(e)}" for e in emotions) + "}"
        return [sys.executable, "eval/emotion_eval.py", runs, f"base={run_dir(BASE)}",
                f"corpus={CORPUS}", f"out={generated_dir() / 'prosody'}", "progress=false"]  # fmt: skip

    def table() -> list[str]:
        runs = ", ".join(f"{label}: {run_dir(label).parent / 'eval' / run_dir(label).name}"
                         for label in (BASE, *emotions))  # fmt: skip
        return [
            sys.executable,
            "eval/compare_runs.py",
            f"runs={{{runs}}}",
            f"out={generated_dir() / 'wer_sim.md'}",
        ]

    graph = [
        Task("emotion_corpus", hydra("scripts/corpus/make_emotion_corpus.py", data), threads=min(2, slots)),
        Task("prepare", hydra("scripts/prepare_data.py", data), after=("emotion_corpus",)),
        Task(
            "encode_tokens",
            hydra("scripts/encode.py", "kind=tokens", data, f"ckpt={TOKENIZER_CKPT}", "progress=false"),
            after=("prepare",),
        ),  # fmt: skip
        Task(f"clone_{BASE}", clone(BASE)),
    ]
    for emotion in emotions:
        train = hydra(
            "train.py", "experiment=ar_emotion_tiny", f"emotion={emotion}", f"trainer.max_steps={steps}"
        )
        graph += [
            Task(f"adapter_{emotion}", train, after=("encode_tokens",)),
            Task(f"clone_{emotion}", clone(emotion), after=(f"adapter_{emotion}",)),
        ]
    graph += [Task(f"eval_{e}", scored(e), after=(f"clone_{e}",)) for e in (BASE, *emotions)]
    graph += [
        Task("prosody", prosody, after=tuple(f"clone_{e}" for e in (BASE, *emotions))),
        Task("table", table, after=tuple(f"eval_{e}" for e in (BASE, *emotions))),
    ]
    return graph


def main() -> int:
    for path in (AR_CKPT, FM_CKPT, TOKENIZER_CKPT):
        if not path.is_file():
            print(f"{path} not found: run the main job first (bash scripts/run_tiny.sh)", file=sys.stderr)
            return 1
    slots = int(os.environ.get("SLOTS", os.cpu_count() or 1))
    timing = run_job(tasks(sys.argv[1:], dict(os.environ), slots), slots=slots, log_dir=OUT)
    if timing is None:
        return 1
    gen = generated_dir()
    results = (gen / "prosody" / "prosody.md").read_text() + "\n" + (gen / "wer_sim.md").read_text()
    (OUT / "results.md").write_text(results)
    (OUT / "prosody.png").write_bytes((gen / "prosody" / "prosody.png").read_bytes())
    print(f"\n{timing}\n{results}\nwavs, per-utterance scores and the plot: {gen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
