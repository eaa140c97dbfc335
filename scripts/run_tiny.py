"""The main job: the whole pipeline on the built-in tiny corpus, on CPU, with a short training budget.

    bash scripts/run_tiny.sh [hydra overrides for every stage, e.g. paths.data_dir=/scratch/data]

(``run_tiny.sh`` installs the environment, then runs this file.) The graph::

    corpus -> prepare -> tokenizer -> token cache ----> AR + speaker encoder ----> render test-synth-en:
                      \\                       \\                             /     zero-shot, one-shot
                       -> Flow-VAE -> latent cache -> flow matching ----------> render its ground truth:
                                                                                resynthesis, oracle tokens
                                                                                (no AR model)
                                                                                -> WER / SIM of each
    prepare -> WER / SIM of the ground truth (whenever a core is free)           -> one table

Tasks run on ``SLOTS`` CPU slots (default: every core), one thread each unless noted, as soon as what they
need is done (``speech.runner``). Everything is safe to run again: trained stages resume at their last
checkpoint and stop at once when done, caches and generated wavs are skipped, and so are the scores of wavs
that were kept.
Budgets come from the environment: ``TOKENIZER_STEPS`` (1500; the long recipe of docs/main_job.md trains
it to 3000; each budget gets AR and flow-matching runs of its own, ``Plan.tokens_tag``), ``VAE_STEPS``
(7000 steps of 2 s crops, reconstruction and KL only: the GAN phase cost 2.5x per step on CPU and did not
lower the resynthesis WER; docs/main_job_levers.md), ``AR_STEPS`` (1500), ``FM_STEPS`` (2400); the
defaults fill the job's 45 minutes (39-45 by the box's speed; the constants below);
``TOKENIZER_CODEBOOKS`` (1: residual codes per audio token, ``model.quantizer.codebooks``; 2 measured no
better, docs/main_job_levers.md; another count gets a tokenizer, AR and flow-matching runs of its own,
``Plan.tokens_tag``); within this budget the AR model trains on the corpus's English cuts only (754 of
1,439: the test set is English, and a 4M-parameter model has little capacity to spare on five more
languages; docs/main_job_levers.md);
``EVAL_ASR`` picks the WER judge (``whisper_ct2``: Whisper tiny.en, see
docs/evaluation.md). ``CORPUS`` picks another built-in corpus (a ``configs/data`` name, e.g.
``synthetic_natural_tiny``; its runs go to ``logs/<corpus>/``) and scores its English test set;
``TEST_CORPUS`` renders and scores another corpus's English test set with the models trained on ``CORPUS``
(under ``pipeline_tiny/on_<test corpus>/``). ``AR_CORPUS`` (e.g. ``synthetic_en60``: 7,200 different English
sentences) gives the AR model a corpus of its own, built, prepared and tokenized here (its token cache in
``cache/<AR_CORPUS>/``, its run in ``logs/ar_tiny_<AR_CORPUS>/``) while the other stages keep ``CORPUS``;
``AR_ARGS`` adds Hydra overrides to the AR command only (e.g. ``"model.align_weight=1.0"``);
the AR model trains with text-aligned hints (``experiment=ar_tiny_aligned``, in
``logs/ar_tiny_aligned[_<AR_CORPUS>]/``), after the tokenizer's CTC alignments of its corpus (docs/ar.md:
its clones carry words above chance, docs/main_job.md); ``AR_ALIGNED=0`` trains the earlier model with
hints spread evenly over the audio (``experiment=ar_tiny``, ``logs/ar_tiny/``). Besides the
clones, two ceiling rows render the test set's ground truth through the stages after the AR model
(``infer.py mode=resynthesis|oracle_tokens``, which load no AR model, so they start when flow matching ends):
the table then shows which stage loses the speech. Each row's wavs and scores go to a folder keyed by the
checkpoints it reads (``Plan.row_dir``).
Outputs: ``logs/pipeline_tiny/`` (a log per task, ``timings.md``, ``results.md``, and ``checkpoints.json``:
the trained stages' checkpoints, which the emotion job and ``serve.py``'s default models read).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from speech.checkpoints import load_checkpoint
from speech.lit.resolvers import MAIN_JOB_CHECKPOINTS
from speech.runner import Task, run_job

# The corpus (a configs/data name) and where its runs go: the default corpus keeps the plain layout
# (logs/<stage>_tiny/, logs/pipeline_tiny/); another one gets its own tree, logs/<corpus>/..., so runs on two
# corpora never resume each other's checkpoints
DEFAULT_CORPUS = "synthetic_tiny"
# The main job's training budgets (steps), sized so that the whole job fills its 45 minutes on 2 cores (39:23
# measured on a fast day, about 45 at the slowest box speed measured), each stage about where its validation
# curve flattens
# (docs/main_job.md, "The main job given its 45 minutes"): the tokenizer (its lane ends with the AR model's),
# the Flow-VAE (2 s crops, Vocos encoder, reconstruction and KL only), the AR model and flow matching
TOKENIZER_STEPS, VAE_STEPS, AR_STEPS, FM_STEPS = 1500, 7000, 1500, 2400
# infer.py mode -> row of the table: the ceiling rows first, then the clones
ROWS = {"resynthesis": "resynthesis", "oracle_tokens": "oracle tokens", "zero_shot": "zero-shot",
        "one_shot": "one-shot"}  # fmt: skip
# The trained stages whose checkpoints each row's wavs depend on: its folder is keyed by their bytes, and the
# ceiling rows, which read no AR model, are rendered as soon as flow matching is done
AFTER_AR = ("tokenizer", "flow_vae", "flow_matching")
CLONE = (*AFTER_AR, "ar")
READS = {"resynthesis": ("flow_vae",), "oracle_tokens": AFTER_AR, "zero_shot": CLONE, "one_shot": CLONE}
# The goals for the main job (zero-shot, on the English test set, Whisper tiny.en and resemblyzer)
GOAL_WER_RATIO, GOAL_SIM = 2.0, 0.75


def test_set_prefix(corpus: str) -> str:
    """The corpus's test-set prefix (``test-synth`` for synthetic_tiny), from its data config."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(Path("configs").resolve()), version_base=None):
        cfg = compose("entry/make_synthetic_corpus", overrides=[f"data={corpus}"])
        return cfg.data.synthetic.test_set_prefix


@dataclass(frozen=True)
class Plan:
    """Where one main job reads and writes: the training corpus, the corpus whose English test set is
    rendered (the same one unless ``TEST_CORPUS`` crosses them), that test set, the WER judge and the log
    tree. ``tokenizer_steps`` is what the job's tokenizer will have trained: its budget, or more where its
    checkpoint already has more (it never trains back)."""

    corpus: str = DEFAULT_CORPUS
    test_corpus: str = DEFAULT_CORPUS
    test_set: str = "test-synth-en"
    asr: str = "whisper_ct2"
    ar_corpus: str | None = None
    ar_aligned: bool = True
    tokenizer_steps: int = TOKENIZER_STEPS
    tokenizer_codebooks: int = 1

    @classmethod
    def from_env(cls, env: dict) -> Plan:
        corpus = env.get("CORPUS", DEFAULT_CORPUS)
        test_corpus = env.get("TEST_CORPUS", corpus)
        test_set = f"{test_set_prefix(test_corpus)}-en"
        aligned = env.get("AR_ALIGNED", "1")
        if aligned not in ("0", "1"):
            raise ValueError(f"AR_ALIGNED={aligned!r}: 1 (text-aligned hints) or 0 (hints spread evenly)")
        steps = whole_number(env, "TOKENIZER_STEPS", TOKENIZER_STEPS, "training steps")
        codebooks = whole_number(env, "TOKENIZER_CODEBOOKS", 1, "residual codebooks")
        plan = cls(corpus, test_corpus, test_set, env.get("EVAL_ASR", cls.asr), env.get("AR_CORPUS") or None,
                   aligned == "1", steps, codebooks)  # fmt: skip
        # a tokenizer trained further already (the long recipe's 3000 steps) stays so, and its tokens are
        # what the AR and flow-matching runs learn: their folders name its steps, not the budget
        trained = trained_steps(plan.ckpt("tokenizer"))
        return replace(plan, tokenizer_steps=trained) if trained > steps else plan

    @property
    def crossed(self) -> bool:
        return self.test_corpus != self.corpus

    @property
    def logs(self) -> Path:
        return Path("logs") if self.corpus == DEFAULT_CORPUS else Path("logs") / self.corpus

    @property
    def out(self) -> Path:
        out = self.logs / "pipeline_tiny"
        return out / f"on_{self.test_corpus}" if self.crossed else out

    @property
    def meta(self) -> str:
        return f"data/{self.test_corpus}/{self.test_set}/meta.lst"

    @property
    def ar_experiment(self) -> str:
        return "ar_tiny_aligned" if self.ar_aligned else "ar_tiny"

    @property
    def codebooks_tag(self) -> str:
        """``""`` for one codebook, else ``_cb<count>``: a tokenizer of another count cannot continue the
        default one's checkpoint, so it trains in a folder of its own."""
        return "" if self.tokenizer_codebooks == 1 else f"_cb{self.tokenizer_codebooks}"

    @property
    def tokens_tag(self) -> str:
        """``_tok<steps>[_cb<count>]``: which tokenizer made the tokens the AR and flow-matching runs learn
        (its steps after the job). A tokenizer trained longer (a larger ``TOKENIZER_STEPS``, or a new
        default) or with other codebooks makes other tokens, on which a run trained on the old ones would
        refuse to continue (``speech.checkpoints.ResumeCheck``): so its runs train in folders of their own,
        beside the old."""
        return f"_tok{self.tokenizer_steps}{self.codebooks_tag}"

    def run(self, stage: str) -> str:
        """The run folder of a trained stage (``tokenizer``, ``flow_vae``, ``flow_matching``, ``ar``): the
        AR model's is its experiment's, with its own corpus (``AR_CORPUS``); the AR and flow-matching runs
        carry the tokenizer's ``tokens_tag``, the tokenizer its ``codebooks_tag`` (more steps continue it)."""
        if stage == "ar":
            corpus = "" if self.ar_corpus is None else f"_{self.ar_corpus}"
            return f"{self.ar_experiment}{corpus}{self.tokens_tag}"
        tag = {"flow_matching": self.tokens_tag, "tokenizer": self.codebooks_tag}.get(stage, "")
        return f"{stage}_tiny{tag}"

    def ckpt(self, stage: str) -> Path:
        return self.logs / f"{self.run(stage)}/checkpoints/last.ckpt"

    def checkpoints(self) -> dict:
        """What builds on this job reads (``MAIN_JOB_CHECKPOINTS``): each trained stage's checkpoint, and
        whether the AR model reads text-aligned hints (its adapters then train on alignments too)."""
        stages = ("tokenizer", "flow_vae", "flow_matching", "ar")
        return {
            "checkpoints": {stage: str(self.ckpt(stage)) for stage in stages},
            "ar_aligned": self.ar_aligned,
        }

    def overrides(self) -> list[str]:
        """What every Hydra command of this job is given before the user's overrides."""
        return [] if self.corpus == DEFAULT_CORPUS else [f"paths.log_dir={self.logs}"]

    def row_dir(self, mode: str) -> Path:
        """Where a row of the table (an ``infer.py`` mode) writes its wavs (``<mode>/``) and scores
        (``eval/<mode>/``): a folder keyed by the checkpoints its wavs depend on (``READS``), so a rerun after
        more training of any of them makes new ones instead of mixing them with the old, and one after
        more training of the AR model alone keeps the ceiling rows."""
        digest = hashlib.sha256()
        for stage in READS[mode]:
            digest.update(self.ckpt(stage).read_bytes())
        return self.out / digest.hexdigest()[:12]

    def generated_dir(self) -> Path:
        """The clones' folder, which also holds the job's ``results.md``."""
        return self.row_dir("zero_shot")

    @property
    def truth_dir(self) -> Path:
        """Where the test set's ground truth is scored with the run's judge."""
        return self.out / f"ground_truth_{self.asr}"

    @property
    def truth_summary(self) -> Path:
        return self.truth_dir / self.test_set / "en/summary.json"  # what score_ground_truth.py writes


def scored_before(summary: Path, wavs: Path, meta: str, asr: str) -> str | None:
    """Why ``summary`` (written by ``eval/seedtts_eval.py``) already scores the wavs of the folder ``wavs``
    against ``meta`` with the judge ``asr``; ``None`` when it does not: no summary, another test set, judge or
    folder, or a wav written after it (a render that was completed or redone since)."""
    if not summary.exists():
        return None
    said = json.loads(summary.read_text())
    if (said.get("meta"), said.get("asr")) != (meta, asr):
        return None
    if Path(said.get("gen_dir", "")).resolve() != wavs.resolve():
        return None
    newest = max((wav.stat().st_mtime for wav in wavs.glob("*.wav")), default=None)
    if newest is None or newest > summary.stat().st_mtime:
        return None
    return f"{summary} scores these wavs"


def trained_steps(ckpt: Path) -> int:
    """The training steps a stage's checkpoint holds; 0 where it has none yet."""
    return int(load_checkpoint(ckpt).get("global_step", 0)) if ckpt.is_file() else 0


def whole_number(env: dict, name: str, default: int, what: str) -> int:
    """The environment variable ``name`` as a whole number >= 1 (``default`` when unset)."""
    value = env.get(name, str(default))
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{name}={value!r}: a whole number of {what}, at least 1")
    return int(value)


def goals(plan: Plan) -> str:
    """Whether zero-shot cloning met the main job's goals, in two lines."""
    truth = json.loads(plan.truth_summary.read_text())["ground_truth"]
    clone = json.loads((plan.generated_dir() / "eval/zero_shot/summary.json").read_text())["generated"]
    ratio = clone["wer"]["estimate"] / truth["wer"]["estimate"]
    sim = clone["sim"]["estimate"]
    return (
        f"goal: zero-shot WER at most x{GOAL_WER_RATIO:.2f} the ground truth's: x{ratio:.2f}, "
        f"{'met' if ratio <= GOAL_WER_RATIO else 'not met'}\n"
        f"goal: zero-shot SIM at least {GOAL_SIM:.2f}: {sim:.3f}, {'met' if sim >= GOAL_SIM else 'not met'}\n"
    )


def is_data_override(override: str) -> bool:
    """Whether a Hydra override sets the data config (``data.bpe.vocab_size=400``, ``+data.x=1``)."""
    key = override.lstrip("+~").split("=", 1)[0]
    return key == "data" or key.startswith("data.")


def tasks(plan: Plan, extra: list[str], env: dict, slots: int) -> list[Task]:
    """The main job's graph; ``extra`` Hydra overrides go to every Hydra command, those of ``data.*`` only to
    the commands that compose a data config (corpus, prepare, encode, train: the others have none)."""

    def hydra(script: str, *args, data: bool = False) -> list[str]:
        given = [o for o in extra if data or not is_data_override(o)]
        return [sys.executable, script, *map(str, args), *plan.overrides(), *given]

    def on_data(script: str, *args, corpus: str | None = None) -> list[str]:  # the scripts that read a corpus
        return hydra(script, f"data={corpus or plan.corpus}", *args, data=True)

    def train(experiment: str, budget: str, default: int, *args, corpus: str | None = None) -> list[str]:
        steps = env.get(budget, default)
        return on_data(
            "train.py", f"experiment={experiment}", f"trainer.max_steps={steps}", *args, corpus=corpus
        )

    def named(stage: str) -> str:  # the run folder (its experiment's name, or with the plan's tags)
        return f"name={plan.run(stage)}"

    vae_steps = env.get("VAE_STEPS", VAE_STEPS)
    # the stages that read tokens read them of the job's tokenizer (its folder carries its codebooks_tag)
    tokenizer = f"upstream.tokenizer=${{paths.log_dir}}/{plan.run('tokenizer')}/checkpoints/last.ckpt"

    def clone(mode: str):
        def command():
            out_dir = f"out_dir={plan.row_dir(mode) / mode}"
            ar = (f"ar_ckpt={plan.ckpt('ar')}",) if "ar" in READS[mode] else ()
            fm = f"fm_ckpt={plan.ckpt('flow_matching')}"
            return hydra("infer.py", *ar, fm, f"meta={plan.meta}", f"mode={mode}", out_dir, "progress=false")

        return command

    def scored(mode: str):
        def command():
            gen = plan.row_dir(mode)
            dirs = (f"gen_dir={gen / mode}", f"out_dir={gen / 'eval' / mode}")
            return hydra("eval/seedtts_eval.py", f"meta={plan.meta}", "language=en", f"asr={plan.asr}", *dirs,
                         "ground_truth=false", "progress=false")  # fmt: skip

        return command

    def scored_already(mode: str):  # a row's wavs kept (its checkpoints did not change): so are its scores
        def check() -> str | None:
            gen = plan.row_dir(mode)
            return scored_before(gen / "eval" / mode / "summary.json", gen / mode, plan.meta, plan.asr)

        return check

    def table() -> list[str]:
        rows = ", ".join(f"{label}: {plan.row_dir(mode) / 'eval' / mode}" for mode, label in ROWS.items())
        truth_row = f"ground_truth={plan.truth_summary.parent}"
        out = f"out={plan.generated_dir() / 'results.md'}"
        return [sys.executable, "eval/compare_runs.py", "runs={" + rows + "}", truth_row, out]

    # a crossed test set comes from the other corpus, built here too (its test speakers only matter)
    test_data = ("test_corpus",) if plan.crossed else ("corpus",)
    ar_options = (
        tokenizer,
        "data.datamodule.max_duration=20",
        "data.datamodule.languages=[en]",
        *env.get("AR_ARGS", "").split(),
    )

    def rendered(mode: str) -> Task:  # a ceiling row reads no AR model: it waits for flow matching only
        ar = ("ar",) if "ar" in READS[mode] else ()
        return Task(mode, clone(mode), after=(*ar, "flow_matching", *test_data))

    def encode(kind: str, *args, corpus: str | None = None) -> list[str]:  # a cache of the tokenizer's
        return on_data("scripts/encode.py", *args, f"kind={kind}", f"ckpt={plan.ckpt('tokenizer')}",
                       "progress=false", corpus=corpus)  # fmt: skip

    # the tokenizer's caches the AR model reads: its tokens, and with AR_ALIGNED their alignments
    kinds = ("tokens", "alignments") if plan.ar_aligned else ("tokens",)
    if plan.ar_corpus is None:
        ar = train(plan.ar_experiment, "AR_STEPS", AR_STEPS, named("ar"), *ar_options)
        ar_lane = [
            *(Task(f"encode_{kind}", encode(kind), after=("tokenizer",)) for kind in kinds[1:]),
            Task("ar", ar, after=tuple(f"encode_{kind}" for kind in kinds)),
        ]
    else:  # its own corpus, cache folder (cut ids repeat across corpora) and run folder
        cache = f"paths.cache_dir=${{paths.root_dir}}/cache/{plan.ar_corpus}"
        ar = train(
            plan.ar_experiment, "AR_STEPS", AR_STEPS, cache, named("ar"), *ar_options, corpus=plan.ar_corpus
        )
        ar_lane = [
            # one rendering process: the other core trains the Flow-VAE meanwhile
            Task("ar_corpus", on_data("scripts/corpus/make_synthetic_corpus.py", "num_workers=1",
                                      corpus=plan.ar_corpus), after=("corpus",)),
            Task("ar_prepare", on_data("scripts/prepare_data.py", corpus=plan.ar_corpus),
                 after=("ar_corpus",)),
            *(Task(f"ar_encode_{kind}", encode(kind, cache, corpus=plan.ar_corpus),
                   after=("tokenizer", "ar_prepare")) for kind in kinds),
            Task("ar", ar, after=tuple(f"ar_encode_{kind}" for kind in kinds)),
        ]  # fmt: skip
    return [
        *(
            [
                Task(
                    "test_corpus",
                    on_data("scripts/corpus/make_synthetic_corpus.py", corpus=plan.test_corpus),
                )
            ]
            if plan.crossed
            else []
        ),  # fmt: skip
        # the corpus renders in two processes
        Task("corpus", on_data("scripts/corpus/make_synthetic_corpus.py"), threads=min(2, slots)),
        Task("prepare", on_data("scripts/prepare_data.py"), after=("corpus",)),
        Task(
            "tokenizer",
            train(
                "tokenizer_tiny",
                "TOKENIZER_STEPS",
                TOKENIZER_STEPS,
                f"model.quantizer.codebooks={plan.tokenizer_codebooks}",
                named("tokenizer"),
            ),
            after=("prepare",),
        ),  # fmt: skip
        # the discriminator would start at the budget's end: reconstruction and KL only
        Task(
            "flow_vae",
            train("flow_vae_tiny", "VAE_STEPS", VAE_STEPS, f"stage.disc_start_step={vae_steps}"),
            after=("prepare",),
        ),  # fmt: skip
        Task("encode_tokens", encode("tokens"), after=("tokenizer",)),
        Task(
            "encode_latents",
            on_data("scripts/encode.py", "kind=latents", f"ckpt={plan.ckpt('flow_vae')}", "progress=false"),
            after=("flow_vae",),
        ),  # fmt: skip
        *ar_lane,
        Task(
            "flow_matching",
            train("flow_matching_tiny", "FM_STEPS", FM_STEPS, named("flow_matching"), tokenizer),
            after=("encode_tokens", "encode_latents"),
        ),  # fmt: skip
        *(rendered(mode) for mode in ROWS),
        *(Task(f"eval_{mode}", scored(mode), after=(mode,), done_if=scored_already(mode)) for mode in ROWS),
        # needs only the test set, but waits for the token cache: from then on it starts only when no task
        # earlier in this list is ready, i.e. in the gap one training lane leaves while the other finishes
        Task(
            "eval_ground_truth",
            hydra(
                "scripts/score_ground_truth.py",
                f"asr={plan.asr}",
                f"corpus_root=data/{plan.test_corpus}",
                f"sets=[{plan.test_set}]",
                f"out_dir={plan.truth_dir}",
            ),
            after=("encode_tokens", *test_data),
            done_if=plan.truth_summary,
        ),  # fmt: skip
        Task("table", table, after=(*(f"eval_{mode}" for mode in ROWS), "eval_ground_truth")),
    ]


def main() -> int:
    slots = int(os.environ.get("SLOTS", os.cpu_count() or 1))
    env = dict(os.environ)
    plan = Plan.from_env(env)
    timing = run_job(tasks(plan, sys.argv[1:], env, slots), slots=slots, log_dir=plan.out)
    if timing is None:
        return 1
    results = (plan.generated_dir() / "results.md").read_text() + "\n" + goals(plan)
    (plan.out / "results.md").write_text(results)
    # for what builds on this job (the emotion job, serve.py's default models): which run folders it trained
    (plan.out / MAIN_JOB_CHECKPOINTS.name).write_text(json.dumps(plan.checkpoints(), indent=1) + "\n")
    print(f"\n{timing}\n{results}\nwavs and per-utterance scores: {plan.generated_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
