"""scripts/jobs/run_emotion_tiny.py: the emotion job builds on the models the main job says it trained."""

import contextlib
import json
import runpy
from pathlib import Path

import pytest

from speech.lit.resolvers import MAIN_JOB_CHECKPOINTS

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = runpy.run_path(str(ROOT / "scripts" / "jobs" / "run_emotion_tiny.py"))
MAIN_JOB = runpy.run_path(str(ROOT / "scripts" / "run_tiny.py"))


@pytest.fixture
def main_job_tree(tmp_path, monkeypatch):
    """A tree where the main job ended: its test set's meta.lst, stand-in checkpoints, and the
    ``checkpoints.json`` it writes, for the given environment."""
    monkeypatch.chdir(tmp_path)
    meta = Path("data/synthetic_tiny/test-synth-en/meta.lst")
    meta.parent.mkdir(parents=True)
    meta.write_text("".join(f"espeak-a-en-00{i}|p|prompt-wavs/p.wav|text {i}\n" for i in range(1, 6)))

    def ended(env: dict) -> dict:
        with contextlib.chdir(ROOT):  # the plan reads the configs
            listed = MAIN_JOB["Plan"].from_env(env).checkpoints()
        said = listed["checkpoints"]
        for stage in ("tokenizer", "flow_vae", "flow_matching", "ar"):
            Path(said[stage]).parent.mkdir(parents=True, exist_ok=True)
            Path(said[stage]).write_bytes(stage.encode())
        out = MAIN_JOB_CHECKPOINTS
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(listed))
        return said

    return ended


def commands(base) -> dict[str, list[str]]:
    graph = SCRIPT["tasks"](base, [], {"EMOTIONS": "happy,sad"}, 2)
    # a clone's command is built when it starts (its folder is keyed by its adapter's bytes): the base's only
    return {t.name: t.command() if t.name in ("clone_base", "eval_base") else t.command for t in graph}


def test_the_adapters_build_on_the_main_jobs_aligned_ar_model(main_job_tree):
    said = main_job_tree({})  # the main job's defaults: text-aligned hints, runs named by the tokenizer
    base = SCRIPT["Base"].read()
    assert base.aligned and base.ar == Path(said["ar"]) == Path(
        "logs/ar_tiny_aligned_tok1500/checkpoints/last.ckpt"
    )
    cmds = commands(base)
    for kind in ("tokens", "alignments"):
        assert {f"kind={kind}", f"ckpt={said['tokenizer']}", "data=synthetic_emotion_tiny"} <= set(
            cmds[f"encode_{kind}"]
        )
    train = cmds["adapter_happy"]
    assert {"experiment=ar_emotion_tiny_aligned", f"upstream.ar={said['ar']}"} <= set(train)
    assert {f"upstream.tokenizer={said['tokenizer']}", f"name={base.adapters}/happy"} <= set(train)
    graph = {t.name: t.after for t in SCRIPT["tasks"](base, [], {"EMOTIONS": "happy"}, 2)}
    assert graph["adapter_happy"] == ("encode_tokens", "encode_alignments")
    assert {f"ar_ckpt={said['ar']}", f"fm_ckpt={said['flow_matching']}"} <= set(cmds["clone_base"])
    assert "asr=whisper_ct2" in cmds["eval_base"]  # the main job's English judge


def test_an_even_hint_base_gets_plain_adapters_and_a_retrained_base_new_ones(main_job_tree):
    said = main_job_tree({"AR_ALIGNED": "0"})
    base = SCRIPT["Base"].read()
    cmds = commands(base)
    assert not base.aligned and "encode_alignments" not in cmds
    assert (
        "experiment=ar_emotion_tiny" in cmds["adapter_sad"]
        and f"upstream.ar={said['ar']}" in cmds["adapter_sad"]
    )
    before = base.adapters, base.clones
    Path(said["ar"]).write_bytes(b"trained further")  # an adapter cannot continue on another base
    retrained = SCRIPT["Base"].read()
    assert retrained.adapters != before[0] and retrained.clones != before[1]


def test_without_the_main_jobs_checkpoints_it_says_to_run_the_main_job(main_job_tree):
    with pytest.raises(
        FileNotFoundError, match=r"checkpoints.json not found: run the main job \(bash scripts/run_tiny.sh\)"
    ):
        SCRIPT["Base"].read()
    said = main_job_tree({})
    Path(said["flow_matching"]).unlink()
    with pytest.raises(
        FileNotFoundError, match=r"flow_matching_tiny_tok1500.*not found: run the main job again"
    ):
        SCRIPT["Base"].read()
