"""The emotion job: one LoRA adapter per emotion on the main job's tiny AR model, and what each one does.

    bash scripts/jobs/run_emotion_tiny.sh [hydra overrides for every stage, e.g. paths.data_dir=/scratch/data]

(``run_emotion_tiny.sh`` installs the environment and runs the main job first; a finished main job is kept
and takes seconds.) The adapters build on the models the main job names in
``logs/pipeline_tiny/checkpoints.json`` (whatever its budgets and options). The graph::

    emotive renditions -> prepare (base BPE) -> token cache -> adapter per emotion -> clone the subset
                          (+ alignments, for an aligned base) ----/            with the emotion ---\\
                                                  clone the subset without an adapter ---------+-> prosody
                                                                                                \\-> WER/SIM

The test subset is the first ``EVAL_PER_SPEAKER`` (3) utterances of each ``test-synth-en`` speaker, cloned
zero-shot with the same seed and batches with and without each adapter, so an adapter is the only
difference. ``eval/emotion_eval.py`` sets the prosody shift of each emotion (F0, duration and loudness
against the base model's output) beside the shift in its training renditions; ``eval/seedtts_eval.py``
scores WER/SIM of every run. Budgets from the environment: ``ADAPTER_STEPS`` (300), ``EMOTIONS`` (the eight
of the corpus, comma-separated), ``EVAL_ASR`` (``whisper_ct2``: Whisper tiny.en, the main job's judge).
Everything is safe to run again.
Outputs: ``logs/pipeline_emotion_tiny/`` (a log per task, ``timings.md``, ``results.md``, ``prosody.png``);
the adapters in ``logs/ar_emotion_tiny/<base AR model's sha256[:12]>/<emotion>/``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from speech.data.meta_list import read_meta_list, write_meta_list
from speech.lit.resolvers import MAIN_JOB_CHECKPOINTS, main_job
from speech.runner import Task, run_job

OUT = Path("logs/pipeline_emotion_tiny")
META = Path("data/synthetic_tiny/test-synth-en/meta.lst")
CORPUS = Path("data/synthetic_emotion_tiny")
EMOTIONS = ("happy", "sad", "angry", "fearful", "disgusted", "surprised", "calm", "fluent")
BASE = "base"  # the run without an adapter


@dataclass(frozen=True)
class Base:
    """The main job's models the adapters build on: its tokenizer, flow matching and AR checkpoints, and
    whether the AR model reads text-aligned hints (its adapters then train on the alignments too)."""

    tokenizer: Path
    flow_matching: Path
    ar: Path
    aligned: bool

    @classmethod
    def read(cls) -> Base:
        """The models the main job listed when it ended (``speech.lit.resolvers.MAIN_JOB_CHECKPOINTS``).

        Raises:
            FileNotFoundError: the main job has not ended here, or a checkpoint it lists is gone; the message
                says to run it (again).
        """
        tokenizer, flow_matching, ar = (Path(main_job(s, ".")) for s in ("tokenizer", "flow_matching", "ar"))
        aligned = json.loads(MAIN_JOB_CHECKPOINTS.read_text())["ar_aligned"]
        return cls(tokenizer, flow_matching, ar, bool(aligned))

    @property
    def experiment(self) -> str:
        return "ar_emotion_tiny_aligned" if self.aligned else "ar_emotion_tiny"

    @functools.cached_property
    def adapters(self) -> str:
        """The run folder of this base model's adapters, ``ar_emotion_tiny/<its sha256[:12]>``: an adapter
        cannot continue on another base (``ARAdapterModule`` refuses), so a retrained base gets new ones."""
        return f"ar_emotion_tiny/{hashlib.sha256(self.ar.read_bytes()).hexdigest()[:12]}"

    def adapter_ckpt(self, emotion: str) -> Path:
        return Path(f"logs/{self.adapters}/{emotion}/checkpoints/last.ckpt")

    @functools.cached_property
    def clones(self) -> Path:
        """Where this AR + flow-matching pair writes its clones: a rerun after more training makes new ones
        (hashed once per job, not at every command that names the folder)."""
        digest = hashlib.sha256(self.ar.read_bytes() + self.flow_matching.read_bytes()).hexdigest()[:12]
        return OUT / digest


def run_dir(base: Base, emotion: str) -> Path:
    """The clones of one emotion (or ``BASE``), keyed by its adapter's bytes as well."""
    if emotion == BASE:
        return base.clones / BASE
    digest = hashlib.sha256(base.adapter_ckpt(emotion).read_bytes()).hexdigest()[:8]
    return base.clones / f"{emotion}-{digest}"


def subset_meta(per_speaker: int) -> Path:
    """The first ``per_speaker`` utterances of every test-synth-en speaker, as a meta.lst of their own."""
    if not META.is_file():
        raise FileNotFoundError(f"{META} not found: run the main job first (bash scripts/run_tiny.sh)")
    by_speaker = defaultdict(list)
    for entry in read_meta_list(META):
        by_speaker[entry.utt.rsplit("-", 2)[0]].append(entry)  # ids are <speaker>-<language>-<n>
    chosen = [e for entries in by_speaker.values() for e in entries[:per_speaker]]
    return write_meta_list(OUT / f"test-synth-en-{per_speaker}-per-speaker.lst", chosen)


def tasks(base: Base, extra: list[str], env: dict, slots: int) -> list[Task]:
    """The emotion job's graph on the main job's models ``base``; ``extra`` Hydra overrides go to every Hydra
    command."""
    emotions = [e.strip() for e in env.get("EMOTIONS", ",".join(EMOTIONS)).split(",") if e.strip()]
    steps = env.get("ADAPTER_STEPS", 300)
    asr = env.get("EVAL_ASR", "whisper_ct2")
    meta = subset_meta(int(env.get("EVAL_PER_SPEAKER", 3)))
    data = "data=synthetic_emotion_tiny"

    def hydra(script: str, *args) -> list[str]:
        return [sys.executable, script, *map(str, args), *extra]

    def encode(kind: str) -> list[str]:
        return hydra("scripts/encode.py", f"kind={kind}", data, f"ckpt={base.tokenizer}", "progress=false")

    kinds = ("tokens", "alignments") if base.aligned else ("tokens",)

    def clone(emotion: str):
        def command():
            args = [f"ar_ckpt={base.ar}", f"fm_ckpt={base.flow_matching}", f"meta={meta}", "mode=zero_shot",
                    f"out_dir={run_dir(base, emotion)}", "progress=false"]  # fmt: skip
            if emotion != BASE:
                args += [f"emotion_adapters=[{base.adapter_ckpt(emotion)}]", f"voice.emotion={emotion}"]
            return hydra("infer.py", *args)

        return command

    def scored(emotion: str):
        def command():
            gen = run_dir(base, emotion)
            out = gen.parent / "eval" / gen.name
            return hydra("eval/seedtts_eval.py", f"meta={meta}", "language=en", f"asr={asr}",
                         f"gen_dir={gen}", f"out_dir={out}", "ground_truth=false",
                         "progress=false")  # fmt: skip

        return command

    def prosody() -> list[str]:
        runs = "emotions={" + ", ".join(f"{e}: {run_dir(base, e)}" for e in emotions) + "}"
        return [sys.executable, "eval/emotion_eval.py", runs, f"base={run_dir(base, BASE)}",
                f"corpus={CORPUS}", f"out={base.clones / 'prosody'}", "progress=false"]  # fmt: skip

    def table() -> list[str]:
        runs = ", ".join(f"{label}: {run_dir(base, label).parent / 'eval' / run_dir(base, label).name}"
                         for label in (BASE, *emotions))  # fmt: skip
        return [
            sys.executable,
            "eval/compare_runs.py",
            f"runs={{{runs}}}",
            f"out={base.clones / 'wer_sim.md'}",
        ]

    graph = [
        Task("emotion_corpus", hydra("scripts/corpus/make_emotion_corpus.py", data), threads=min(2, slots)),
        Task("prepare", hydra("scripts/prepare_data.py", data), after=("emotion_corpus",)),
        # the base tokenizer's tokens of the emotive cuts, and for an aligned base model their alignments
        *(Task(f"encode_{kind}", encode(kind), after=("prepare",)) for kind in kinds),
        Task(f"clone_{BASE}", clone(BASE)),
    ]
    for emotion in emotions:
        train = hydra("train.py", f"experiment={base.experiment}", f"emotion={emotion}",
                      f"trainer.max_steps={steps}", f"upstream.ar={base.ar}",
                      f"upstream.tokenizer={base.tokenizer}", f"name={base.adapters}/{emotion}")  # fmt: skip
        graph += [
            Task(f"adapter_{emotion}", train, after=tuple(f"encode_{kind}" for kind in kinds)),
            Task(f"clone_{emotion}", clone(emotion), after=(f"adapter_{emotion}",)),
        ]
    graph += [Task(f"eval_{e}", scored(e), after=(f"clone_{e}",)) for e in (BASE, *emotions)]
    graph += [
        Task("prosody", prosody, after=tuple(f"clone_{e}" for e in (BASE, *emotions))),
        Task("table", table, after=tuple(f"eval_{e}" for e in (BASE, *emotions))),
    ]
    return graph


def main() -> int:
    try:
        base = Base.read()
    except FileNotFoundError as err:
        print(err, file=sys.stderr)
        return 1
    slots = int(os.environ.get("SLOTS", os.cpu_count() or 1))
    timing = run_job(tasks(base, sys.argv[1:], dict(os.environ), slots), slots=slots, log_dir=OUT)
    if timing is None:
        return 1
    gen = base.clones
    results = (gen / "prosody" / "prosody.md").read_text() + "\n" + (gen / "wer_sim.md").read_text()
    (OUT / "results.md").write_text(results)
    (OUT / "prosody.png").write_bytes((gen / "prosody" / "prosody.png").read_bytes())
    print(f"\n{timing}\n{results}\nwavs, per-utterance scores and the plot: {gen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
