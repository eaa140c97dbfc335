"""scripts/run_tiny.py: the main job's task graph for the default corpus and for another one."""

import json
import os
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = runpy.run_path(str(ROOT / "scripts" / "run_tiny.py"))


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the job runs from the repository root


def commands(env: dict) -> dict[str, list[str]]:
    plan = SCRIPT["Plan"].from_env(env)
    return {t.name: t.command for t in SCRIPT["tasks"](plan, ["seed=7"], env, 2) if not callable(t.command)}


def test_the_default_corpus_keeps_the_plain_layout():
    plan = SCRIPT["Plan"].from_env({})
    assert (plan.corpus, plan.test_set) == ("synthetic_tiny", "test-synth-en")
    assert plan.ckpt("ar") == Path("logs/ar_tiny_aligned_tok1500/checkpoints/last.ckpt")
    assert plan.out == Path("logs/pipeline_tiny")
    tokenizer = commands({})["tokenizer"]
    assert "data=synthetic_tiny" in tokenizer and not any(a.startswith("paths.log_dir") for a in tokenizer)
    assert tokenizer[-1] == "seed=7"  # the user's overrides come last, so they win


def test_budgets_and_the_tokenizers_codebooks_come_from_the_environment():
    default = commands({})
    assert (
        "trainer.max_steps=1500" in default["tokenizer"]
        and "model.quantizer.codebooks=1" in default["tokenizer"]
    )
    changed = commands({"TOKENIZER_STEPS": "900", "TOKENIZER_CODEBOOKS": "2", "AR_STEPS": "50"})
    assert (
        "trainer.max_steps=900" in changed["tokenizer"]
        and "model.quantizer.codebooks=2" in changed["tokenizer"]
    )
    assert "trainer.max_steps=50" in changed["ar"]


def test_another_codebook_count_gets_a_tokenizer_and_runs_of_its_own():
    """A tokenizer of two codebooks cannot continue the one-codebook checkpoint: it trains in a folder of its
    own, and the AR and flow-matching runs on its tokens read it there and train in folders of their own."""
    cases = [
        ({}, "tokenizer_tiny", "_tok1500"),
        ({"TOKENIZER_CODEBOOKS": "2"}, "tokenizer_tiny_cb2", "_tok1500_cb2"),
        ({"TOKENIZER_CODEBOOKS": "2", "TOKENIZER_STEPS": "3000"}, "tokenizer_tiny_cb2", "_tok3000_cb2"),
    ]
    for env, tokenizer, tag in cases:
        plan, cmds = SCRIPT["Plan"].from_env(env), commands(env)
        assert plan.ckpt("tokenizer") == Path(f"logs/{tokenizer}/checkpoints/last.ckpt")
        assert f"name={tokenizer}" in cmds["tokenizer"]
        assert (plan.run("ar"), plan.run("flow_matching")) == (
            f"ar_tiny_aligned{tag}",
            f"flow_matching_tiny{tag}",
        )
        reads = f"upstream.tokenizer=${{paths.log_dir}}/{tokenizer}/checkpoints/last.ckpt"
        assert reads in cmds["ar"] and reads in cmds["flow_matching"]
        assert f"ckpt={plan.ckpt('tokenizer')}" in cmds["encode_tokens"]
    for wrong in ("two", "0", ""):
        with pytest.raises(ValueError, match=f"TOKENIZER_CODEBOOKS={wrong!r}: a whole number of residual"):
            SCRIPT["Plan"].from_env({"TOKENIZER_CODEBOOKS": wrong})


def test_a_longer_trained_tokenizer_gets_ar_and_flow_matching_runs_of_their_own():
    """Raising TOKENIZER_STEPS after a main job (or a checkout whose default is larger) continues the
    tokenizer in place, and its new tokens go to new AR and flow-matching runs: the old ones would refuse
    to continue on them. Every budget is named, so the default's runs are no exception."""
    default, longer = SCRIPT["Plan"].from_env({}), SCRIPT["Plan"].from_env({"TOKENIZER_STEPS": "3000"})
    assert (
        longer.ckpt("tokenizer")
        == default.ckpt("tokenizer")
        == Path("logs/tokenizer_tiny/checkpoints/last.ckpt")
    )
    assert longer.ckpt("flow_vae") == default.ckpt("flow_vae")
    assert longer.ckpt("ar") == Path("logs/ar_tiny_aligned_tok3000/checkpoints/last.ckpt")
    assert longer.ckpt("flow_matching") == Path("logs/flow_matching_tiny_tok3000/checkpoints/last.ckpt")
    for env in ({}, {"TOKENIZER_STEPS": "3000"}, {"TOKENIZER_STEPS": "3000", "AR_CORPUS": "synthetic_en60"}):
        plan, cmds = SCRIPT["Plan"].from_env(env), commands(env)
        for stage in ("ar", "flow_matching"):  # each command trains in the folder the renders read
            assert f"name={plan.ckpt(stage).parents[1].name}" in cmds[stage]
    assert default.run("ar") == "ar_tiny_aligned_tok1500"  # not the folder of the old default's runs
    old_default = SCRIPT["Plan"].from_env({"TOKENIZER_STEPS": "1000"})
    assert old_default.run("flow_matching") == "flow_matching_tiny_tok1000"
    assert SCRIPT["Plan"].from_env({"TOKENIZER_STEPS": "3000", "AR_CORPUS": "synthetic_en60"}).run("ar") == (
        "ar_tiny_aligned_synthetic_en60_tok3000"
    )
    for wrong in ("3e3", "0", "-5", ""):
        with pytest.raises(ValueError, match=f"TOKENIZER_STEPS={wrong!r}: a whole number"):
            SCRIPT["Plan"].from_env({"TOKENIZER_STEPS": wrong})


def test_the_ar_model_can_train_on_a_corpus_of_its_own_with_options_of_its_own():
    env = {"AR_CORPUS": "synthetic_en60", "AR_ARGS": "model.align_weight=1.0 stage.prompt_prob=0.3",
           "AR_ALIGNED": "0"}  # fmt: skip
    plan, cmds = SCRIPT["Plan"].from_env(env), commands(env)
    assert plan.ckpt("ar") == Path("logs/ar_tiny_synthetic_en60_tok1500/checkpoints/last.ckpt")
    assert plan.ckpt("flow_matching") == Path("logs/flow_matching_tiny_tok1500/checkpoints/last.ckpt")
    cache = "paths.cache_dir=${paths.root_dir}/cache/synthetic_en60"
    assert "data=synthetic_en60" in cmds["ar_corpus"] and "num_workers=1" in cmds["ar_corpus"]
    assert "data=synthetic_en60" in cmds["ar_prepare"]
    assert {"data=synthetic_en60", cache, "ckpt=logs/tokenizer_tiny/checkpoints/last.ckpt"} <= set(
        cmds["ar_encode_tokens"]
    )
    ar = cmds["ar"]
    assert {"data=synthetic_en60", cache, "model.align_weight=1.0"} <= set(ar)
    assert "name=ar_tiny_synthetic_en60_tok1500" in ar
    assert "stage.prompt_prob=0.3" in ar and ar[-1] == "seed=7"
    # the other stages keep the job's corpus and cache; AR_ARGS reach the AR command only
    for task in ("tokenizer", "flow_matching", "encode_tokens"):
        assert "data=synthetic_tiny" in cmds[task] and cache not in cmds[task]
        assert "model.align_weight=1.0" not in cmds[task]
    graph = {t.name: t.after for t in SCRIPT["tasks"](plan, [], env, 2)}
    assert graph["ar"] == ("ar_encode_tokens",) and set(graph["ar_encode_tokens"]) == {
        "tokenizer",
        "ar_prepare",
    }
    assert "zero_shot" in graph and "ar" in graph["zero_shot"]
    plain = commands({})
    assert (
        "ar_corpus" not in plain
        and "data=synthetic_tiny" in plain["ar"]
        and "name=ar_tiny_aligned_tok1500" in plain["ar"]
    )


def test_both_caches_are_filled_by_the_one_encode_entry():
    cmds = commands({})
    for task, kind, upstream in (
        ("encode_tokens", "tokens", "tokenizer"),
        ("encode_latents", "latents", "flow_vae"),
    ):
        assert cmds[task][1] == "scripts/encode.py", cmds[task]
        assert (
            f"kind={kind}" in cmds[task] and f"ckpt=logs/{upstream}_tiny/checkpoints/last.ckpt" in cmds[task]
        )


def test_another_corpus_gets_its_own_log_tree_and_test_set():
    env = {"CORPUS": "synthetic_natural_tiny"}
    plan = SCRIPT["Plan"].from_env(env)
    assert plan.test_set == "test-natural-en"  # from the corpus config's test_set_prefix
    assert plan.meta == "data/synthetic_natural_tiny/test-natural-en/meta.lst"
    assert plan.ckpt("flow_vae") == Path("logs/synthetic_natural_tiny/flow_vae_tiny/checkpoints/last.ckpt")
    assert plan.truth_summary == Path(
        "logs/synthetic_natural_tiny/pipeline_tiny/ground_truth_whisper_ct2/test-natural-en/en/summary.json"
    )
    cmds = commands(env)
    for name in ("corpus", "prepare", "tokenizer", "flow_vae", "encode_tokens", "encode_latents", "ar"):
        assert "data=synthetic_natural_tiny" in cmds[name], name
    for name, command in cmds.items():
        assert "paths.log_dir=logs/synthetic_natural_tiny" in command, name
    truth = cmds["eval_ground_truth"]
    assert "sets=[test-natural-en]" in truth and "corpus_root=data/synthetic_natural_tiny" in truth
    assert not any(a.startswith("data=") for a in truth)  # its config has no data group


def test_a_crossed_test_set_is_built_and_scored_apart_with_the_same_checkpoints():
    env = {"TEST_CORPUS": "synthetic_natural_tiny"}
    plan = SCRIPT["Plan"].from_env(env)
    # trained on synthetic_tiny
    assert plan.ckpt("ar") == Path("logs/ar_tiny_aligned_tok1500/checkpoints/last.ckpt")
    assert plan.meta == "data/synthetic_natural_tiny/test-natural-en/meta.lst"
    assert plan.out == Path("logs/pipeline_tiny/on_synthetic_natural_tiny")
    tasks = {t.name: t for t in SCRIPT["tasks"](plan, [], env, 2)}
    assert "data=synthetic_natural_tiny" in tasks["test_corpus"].command
    assert "data=synthetic_tiny" in tasks["tokenizer"].command
    assert "test_corpus" in tasks["zero_shot"].after and "test_corpus" in tasks["eval_ground_truth"].after
    assert "corpus_root=data/synthetic_natural_tiny" in tasks["eval_ground_truth"].command
    assert "test_corpus" not in {t.name for t in SCRIPT["tasks"](SCRIPT["Plan"].from_env({}), [], {}, 2)}


def test_an_unknown_corpus_is_refused_with_the_config_error():
    with pytest.raises(Exception, match="no_such_corpus"):
        SCRIPT["Plan"].from_env({"CORPUS": "no_such_corpus"})


def test_the_judge_names_the_ground_truth_folder_and_reaches_every_scoring_command():
    env = {"EVAL_ASR": "pocketsphinx"}
    plan = SCRIPT["Plan"].from_env(env)
    assert plan.truth_dir == Path("logs/pipeline_tiny/ground_truth_pocketsphinx")
    assert "asr=pocketsphinx" in commands(env)["eval_ground_truth"]


def test_the_results_table_runs_compare_runs_with_every_row(tmp_path, monkeypatch):
    """The table task's command, run as the job runs it: one row per clone mode, the judge's truth row."""
    from script_runs import run_script

    plan_cls = SCRIPT["Plan"]
    plan = plan_cls.from_env({})
    monkeypatch.setattr(plan_cls, "row_dir", lambda self, mode: tmp_path / "gen")
    monkeypatch.setattr(plan_cls, "truth_dir", property(lambda self: tmp_path / "truth"))
    ci = {"estimate": 0.2, "low": 0.1, "high": 0.3, "level": 0.95}
    row = {"n_scored": 2, "n_expected": 2, "wer": ci, "corpus_wer": ci, "sim": ci}
    for mode in SCRIPT["ROWS"]:
        folder = tmp_path / "gen" / "eval" / mode
        folder.mkdir(parents=True)
        summary = {"meta": plan.meta, "asr": plan.asr, "speaker": "resemblyzer", "generated": row}
        (folder / "summary.json").write_text(json.dumps({**summary, "ground_truth": None}))
    plan.truth_summary.parent.mkdir(parents=True)
    truth = {"meta": plan.meta, "generated": None, "ground_truth": {**row, "wer": {**ci, "estimate": 0.1}}}
    plan.truth_summary.write_text(json.dumps(truth))
    (table,) = [t.command for t in SCRIPT["tasks"](plan, [], {}, 2) if t.name == "table"]
    command = table()
    assert command[1] == "eval/compare_runs.py"
    run_script(ROOT / command[1], *command[2:])
    lines = (tmp_path / "gen" / "results.md").read_text().splitlines()
    rows = [line.split("|")[1].strip() for line in lines if line.startswith("| ")]
    assert [r for r in rows if r in ("ground truth", *SCRIPT["ROWS"].values())] == [
        "ground truth", "resynthesis", "oracle tokens", "zero-shot", "one-shot"
    ]  # fmt: skip


def test_data_overrides_reach_only_the_commands_that_have_a_data_config(tmp_path, monkeypatch):
    """``run_tiny.sh data.bpe.phonemes=espeak-ng`` once stopped the job at the ground truth's scoring
    (``Key 'data' is not in struct``): infer, scoring and ground-truth commands have no data config."""
    plan_cls = SCRIPT["Plan"]
    monkeypatch.setattr(plan_cls, "row_dir", lambda self, mode: tmp_path / "gen")
    env = {"AR_CORPUS": "synthetic_en60"}
    extra = ["data.bpe.phonemes=espeak-ng", "+data.extra=1", "paths.data_dir=/scratch"]
    built = {t.name: t.command for t in SCRIPT["tasks"](plan_cls.from_env(env), extra, env, 2)}
    built = {name: command() if callable(command) else command for name, command in built.items()}
    with_data = {"corpus", "prepare", "tokenizer", "flow_vae", "encode_tokens", "encode_latents",
                 "flow_matching", "ar_corpus", "ar_prepare", "ar_encode_tokens", "ar_encode_alignments",
                 "ar"}  # fmt: skip
    without = {"eval_ground_truth", *SCRIPT["ROWS"], *(f"eval_{mode}" for mode in SCRIPT["ROWS"])}
    assert with_data | without | {"table"} == set(built)
    for name in with_data:
        assert built[name][-3:] == extra, name
    for name in without:
        assert built[name][-1] == "paths.data_dir=/scratch" and not any(
            "data." in a for a in built[name][-3:]
        )
    assert SCRIPT["is_data_override"]("~data.bpe") and not SCRIPT["is_data_override"]("database=1")


def test_aligned_hints_add_the_alignments_before_the_ar_model_and_a_run_folder_of_their_own():
    env = {}  # the default
    plan, cmds = SCRIPT["Plan"].from_env(env), commands(env)
    assert plan.ckpt("ar") == Path("logs/ar_tiny_aligned_tok1500/checkpoints/last.ckpt")
    assert "experiment=ar_tiny_aligned" in cmds["ar"]
    assert {"kind=alignments", "ckpt=logs/tokenizer_tiny/checkpoints/last.ckpt"} <= set(
        cmds["encode_alignments"]
    )
    graph = {t.name: t.after for t in SCRIPT["tasks"](plan, [], env, 2)}
    assert set(graph["ar"]) == {"encode_tokens", "encode_alignments"} and graph["encode_alignments"] == (
        "tokenizer",
    )
    # on a corpus of its own, both caches of that corpus, in its cache folder
    env = {"AR_ALIGNED": "1", "AR_CORPUS": "synthetic_en60"}
    plan, cmds = SCRIPT["Plan"].from_env(env), commands(env)
    assert plan.ckpt("ar") == Path("logs/ar_tiny_aligned_synthetic_en60_tok1500/checkpoints/last.ckpt")
    for kind in ("tokens", "alignments"):
        assert {"data=synthetic_en60", f"kind={kind}"} <= set(cmds[f"ar_encode_{kind}"])
    graph = {t.name: t.after for t in SCRIPT["tasks"](plan, [], env, 2)}
    assert set(graph["ar"]) == {"ar_encode_tokens", "ar_encode_alignments"}
    assert "encode_alignments" not in graph  # the job's own corpus needs none
    with pytest.raises(ValueError, match="AR_ALIGNED='yes'"):
        SCRIPT["Plan"].from_env({"AR_ALIGNED": "yes"})
    # AR_ALIGNED=0: the earlier model, hints spread evenly, no alignments
    even = commands({"AR_ALIGNED": "0"})
    assert "encode_alignments" not in even and "experiment=ar_tiny" in even["ar"]
    even_ckpt = SCRIPT["Plan"].from_env({"AR_ALIGNED": "0"}).ckpt("ar")
    assert even_ckpt == Path("logs/ar_tiny_tok1500/checkpoints/last.ckpt")


def test_the_ceiling_rows_wait_for_no_ar_model_and_keep_their_wavs_when_only_it_trains_on(
    tmp_path, monkeypatch
):
    """The ceiling rows read no AR model: they start when flow matching ends (a core idled 14 minutes of
    the long recipe while they waited for the AR model), and more AR training leaves their folders alone."""
    plan = SCRIPT["Plan"].from_env({})
    tasks = {t.name: t for t in SCRIPT["tasks"](plan, [], {}, 2)}
    for mode in ("resynthesis", "oracle_tokens"):
        assert "ar" not in tasks[mode].after and "flow_matching" in tasks[mode].after
    for mode in ("zero_shot", "one_shot"):
        assert {"ar", "flow_matching"} <= set(tasks[mode].after)
    monkeypatch.chdir(tmp_path)
    for stage in ("tokenizer", "flow_vae", "flow_matching", "ar"):
        plan.ckpt(stage).parent.mkdir(parents=True)
        plan.ckpt(stage).write_bytes(stage.encode())

    def folders() -> dict[str, Path]:
        return {mode: plan.row_dir(mode) for mode in SCRIPT["ROWS"]}

    before = folders()
    assert before["zero_shot"] == before["one_shot"] == plan.generated_dir()
    assert len({before["resynthesis"], before["oracle_tokens"], before["zero_shot"]}) == 3
    rendered = {mode: tasks[mode].command() for mode in SCRIPT["ROWS"]}
    for mode, command in rendered.items():
        assert f"out_dir={before[mode] / mode}" in command
        assert any(a.startswith("ar_ckpt=") for a in command) == (mode in ("zero_shot", "one_shot"))
    plan.ckpt("ar").write_bytes(b"ar, trained on")
    after_ar = folders()
    assert [mode for mode in before if after_ar[mode] != before[mode]] == ["zero_shot", "one_shot"]
    plan.ckpt("flow_matching").write_bytes(b"flow matching, trained on")
    after_fm = folders()
    assert [mode for mode in before if after_fm[mode] != after_ar[mode]] == [
        "oracle_tokens",
        "zero_shot",
        "one_shot",
    ]
    plan.ckpt("flow_vae").write_bytes(b"Flow-VAE, trained on")
    assert all(folders()[mode] != after_fm[mode] for mode in before)


def test_a_row_whose_wavs_were_kept_keeps_its_scores(tmp_path, monkeypatch):
    """A rerun after more AR training keeps the ceiling rows' wavs; their scoring (2-3 minutes a row) is
    skipped too, unless the judge, the test set or the wavs changed since."""
    plan_cls = SCRIPT["Plan"]
    plan = plan_cls.from_env({})
    monkeypatch.setattr(plan_cls, "row_dir", lambda self, mode: Path("logs/pipeline_tiny/abc"))
    (check,) = [t.done_if for t in SCRIPT["tasks"](plan, [], {}, 2) if t.name == "eval_resynthesis"]
    monkeypatch.chdir(tmp_path)
    wavs = Path("logs/pipeline_tiny/abc/resynthesis")
    summary = Path("logs/pipeline_tiny/abc/eval/resynthesis")
    wavs.mkdir(parents=True)
    (wavs / "a.wav").write_bytes(b"RIFF")
    assert check() is None  # never scored
    summary.mkdir(parents=True)
    said = {"meta": plan.meta, "asr": plan.asr, "gen_dir": str(wavs)}
    (summary / "summary.json").write_text(json.dumps(said))
    assert check() == f"{summary / 'summary.json'} scores these wavs"
    for key, other in (("asr", "pocketsphinx"), ("meta", "other/meta.lst"), ("gen_dir", "elsewhere")):
        (summary / "summary.json").write_text(json.dumps({**said, key: other}))
        assert check() is None, key
    (summary / "summary.json").write_text(json.dumps(said))
    later = (summary / "summary.json").stat().st_mtime + 5
    os.utime(wavs / "a.wav", (later, later))  # a wav rendered after the scores
    assert check() is None


def test_the_jobs_built_on_this_one_are_told_its_checkpoints():
    """``checkpoints.json`` names the folders the job's commands train in, whatever the budgets and corpora,
    so the emotion job finds the AR model the main job made."""
    for env in ({}, {"AR_ALIGNED": "0"}, {"TOKENIZER_STEPS": "3000", "AR_CORPUS": "synthetic_en60"}):
        plan, cmds = SCRIPT["Plan"].from_env(env), commands(env)
        listed = json.loads(json.dumps(plan.checkpoints()))
        assert listed["ar_aligned"] is (env.get("AR_ALIGNED") != "0")
        said = listed["checkpoints"]
        for stage in ("tokenizer", "flow_matching", "ar"):
            assert f"name={Path(said[stage]).parents[1].name}" in cmds[stage]
        assert f"ckpt={said['flow_vae']}" in cmds["encode_latents"]


def test_runs_on_a_tokenizer_trained_further_are_named_by_its_steps(tmp_path, monkeypatch):
    """After the long recipe's 3,000 tokenizer steps, the default budget (1,500) leaves the tokenizer as it
    is: the AR and flow-matching runs learn its 3,000-step tokens and are named so (the long recipe's own
    runs), not ``_tok1500``; a budget above what it has is what the tag says."""
    import torch

    ckpt = tmp_path / "last.ckpt"
    torch.save({"config": {}, "global_step": 3000}, ckpt)
    assert SCRIPT["trained_steps"](ckpt) == 3000 and SCRIPT["trained_steps"](tmp_path / "none.ckpt") == 0
    # the tokenizer's checkpoint, as the plan reads it (the script's own globals: SCRIPT is a copy of them)
    monkeypatch.setitem(SCRIPT["Plan"].from_env.__func__.__globals__, "trained_steps", lambda path: 3000)
    assert SCRIPT["Plan"].from_env({}).run("ar") == "ar_tiny_aligned_tok3000"
    assert (
        SCRIPT["Plan"].from_env({"TOKENIZER_STEPS": "4000"}).run("flow_matching")
        == "flow_matching_tiny_tok4000"
    )
    cmds = commands({})
    assert "trainer.max_steps=1500" in cmds["tokenizer"]  # asked for as before; it stops at once
    assert "name=ar_tiny_aligned_tok3000" in cmds["ar"]
