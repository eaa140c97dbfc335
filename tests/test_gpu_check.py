"""The GPU check (scripts/gpu_check.sh, scripts/bench/gpu_check.py) and the GPU code paths it measures.

Its toy run on the CPU reports every section; a failing or hanging section is reported without stopping the
others; the AR FLOP formula agrees with PyTorch's FLOP counter; the AR training step runs under bf16
autocast; and (on CUDA) the graphed and compiled decoding steps give the eager step's tokens."""

import json
import os
import runpy
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from speech.models.ar_transformer import ARTransformer
from speech.models.speaker_encoder import SpeakerEncoder

ROOT = Path(__file__).resolve().parents[1]
CHECK = runpy.run_path(str(ROOT / "scripts" / "bench" / "gpu_check.py"))
SECTIONS = runpy.run_path(str(ROOT / "scripts" / "bench" / "gpu_check_sections.py"))
N_MELS = 8


def tiny_ar(seed=0) -> ARTransformer:
    torch.manual_seed(seed)
    spk = SpeakerEncoder(N_MELS, dim=16, layers=1, heads=2, out_dim=12)
    return ARTransformer(spk, text_vocab_size=20, audio_vocab_size=30, dim=32, layers=2, heads=2, max_len=128)


def ar_inputs(rows=2, n=5, k=7, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"text": torch.randint(1, 20, (rows, n), generator=g), "text_lens": torch.full((rows,), n),
            "audio_tokens": torch.randint(0, 30, (rows, k), generator=g),
            "audio_lens": torch.full((rows,), k)}  # fmt: skip


@pytest.mark.slow
def test_the_quick_check_on_the_cpu_reports_every_section(tmp_path):
    """The whole command, as on a GPU machine but at toy sizes: every section ok, with its numbers."""
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(["bash", "scripts/gpu_check.sh", "--device", "cpu", "--quick"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    sections = report["sections"]
    assert list(sections) == ["cuda_tests", *CHECK["SECTIONS"]]
    assert {name: s["status"] for name, s in sections.items()} == dict.fromkeys(sections, "ok")
    for stage in ("tokenizer", "flow_vae", "ar", "flow_matching"):
        results = sections[f"train_{stage}"]["results"]
        assert results["steps_per_s"] > 0 and results["flops_per_step_counted"] > 0
    results = {name: section["results"] for name, section in sections.items()}
    assert results["ar_decode"]["batch_1_tokens_per_s"]["ours_eager"] > 0
    assert results["ar_decode"]["batch_4_tokens_per_s"]["hf_dynamic_cache"] > 0
    assert results["ddp"]["world_size"] == 1 and results["ddp"]["parameter_checksum_spread"] == 0
    assert results["ddp"]["checkpoint_has_every_full_tensor"] is True
    assert results["fsdp"]["not_run"].startswith("FSDP needs CUDA")
    assert results["stream"]["first_chunk_seconds"] > 0 and results["fm_rtf"]["decoder_rtf"] > 0
    assert "skipped" in sections["cuda_tests"]["results"]["summary"]  # no CUDA here
    markdown = (tmp_path / "report.md").read_text()
    assert all(f"## {name}" in markdown for name in sections) and "## Goals" in markdown


def test_the_driver_knows_every_section():
    assert sorted(CHECK["SECTIONS"]) == sorted(SECTIONS["SECTION_FUNCTIONS"]) == sorted(CHECK["LIMITS"])


def test_a_failing_or_hanging_section_is_reported_and_stopped(tmp_path):
    fail = CHECK["run_section"]([sys.executable, "-c", "raise ValueError('boom')"], 60, tmp_path / "a.log")
    assert fail["status"] == "failed" and fail["error"] == "ValueError: boom"
    # a hanging section that started a process of its own (as DDP's ranks are): both are stopped
    pid_file = tmp_path / "pid"
    hang = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; "
            f"time.sleep(60)']); open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)")  # fmt: skip
    hung = CHECK["run_section"]([sys.executable, "-c", hang], 2, tmp_path / "b.log")
    assert hung["status"] == "timed out" and hung["error"] == "stopped at its time limit of 2 s"
    assert hung["seconds"] < 10
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and Path(f"/proc/{pid_file.read_text()}").exists():
        time.sleep(0.1)
    assert not Path(f"/proc/{pid_file.read_text()}").exists(), "the section's own process outlived it"


def test_the_markdown_report_shows_goals_errors_and_numbers():
    sections = {
        "ar_decode": {"status": "ok", "seconds": 3.0, "limit_s": 150, "error": None,
                      "results": {"batch_1_tokens_per_s": {"ours_eager": 812.345},
                                  "batch_1_ratio_vs_hf": 6.0}},
        "ar_mfu": {"status": "timed out", "seconds": 90.0, "limit_s": 90,
                   "error": "stopped at its time limit of 90 s", "results": {}},
    }  # fmt: skip
    report = {"environment": {"date": "today", "device": "NVIDIA H100"}, "mode": "full",
              "goals": CHECK["goals"](sections), "sections": sections}  # fmt: skip
    text = CHECK["markdown"](report)
    assert (
        "| AR decoding at batch 1, ours / HF LlamaForCausalLM.generate (default cache) | >= 5x | 6 | True |"
        in text
    )
    assert "| AR training MFU, base size (best of eager and compiled) | >= 40 % | - | - |" in text
    assert "| batch_1_tokens_per_s / ours_eager | 812.3 |" in text
    assert (
        "Status: **timed out** in 90.0 s (limit 90 s)." in text
        and "`stopped at its time limit of 90 s`" in text
    )


def test_a_full_size_run_on_the_cpu_is_refused(capsys):
    with pytest.raises(SystemExit):
        CHECK["parse_args"](["--device", "cpu"])
    assert "--device cpu runs the toy sizes only (the base models would take hours): add --quick" in (
        capsys.readouterr().err
    )


def test_the_ar_flop_formula_agrees_with_the_flop_counter():
    """The formula counts causal attention (half the scores); the counter counts SDPA's math path unmasked,
    so the other half is added back, and the speaker projection (no input gradient: 4 c d per row)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = tiny_ar()
    rows, n, k = 3, 5, 40
    inputs = ar_inputs(rows, n, k)
    speaker = torch.randn(rows, 12)
    with sdpa_kernel(SDPBackend.MATH):  # the CPU's flash kernel is not counted
        counted = SECTIONS["counted_flops"](lambda: model(speaker=speaker, **inputs).loss.backward())
    s, d, layers = n + k + 2, 32, 2
    formula = SECTIONS["ar_train_flops"](model, rows, n, k)
    unmasked = formula + 6 * layers * d * s * s * rows + 4 * model.speaker_proj.weight.numel() * rows
    assert counted == pytest.approx(unmasked, rel=1e-3)


def test_the_ar_training_step_runs_under_bf16_autocast():
    """What trainer=gpu (bf16-mixed) does to the AR stage, on the CPU: the speaker projection's bf16 output
    and the embeddings' float32 ones pack into one sequence; the loss is float32's within bf16 rounding."""
    model = tiny_ar().train()
    inputs = ar_inputs()
    mel = torch.randn(2, 40, N_MELS)
    speaker_of = lambda: model.speaker_vector(mel, torch.tensor([40, 30]))
    torch.manual_seed(1)
    want = model(speaker=speaker_of(), **inputs).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(1)
        got = model(speaker=speaker_of(), **inputs).loss
    got.backward()
    assert got.dtype == torch.float32 and abs(got.item() - want.item()) < 0.02 * want.item()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graphed_and_compiled_decoding_give_the_eager_tokens():
    """The check's CUDA-graph replay (at batch 1 and on a left-padded batch) and torch.compile
    (reduce-overhead, the padded batch) of the decoding step against the eager step: the same greedy
    tokens, on the first call (capture) and the next (replay)."""
    model = tiny_ar().cuda().eval()
    for text_lens in ([5], [5, 2, 4]):
        g = torch.Generator().manual_seed(0)
        lens = torch.tensor(text_lens)
        text = torch.randint(1, 20, (len(lens), 5), generator=g).masked_fill(
            torch.arange(5) >= lens[:, None], 0
        )
        kw = {"speaker": torch.randn(len(lens), 12, generator=g).cuda(), "text": text.cuda(),
              "text_lens": lens.cuda(), "temperature": 0, "min_tokens_per_text": 3.0}  # fmt: skip
        want = model.generate(**kw)
        for name, install in SECTIONS["decoding_variants"](model, torch.device("cuda")).items():
            if install is None or (name == "ours_compiled" and len(text_lens) == 1):
                continue  # one compilation (the padded batch) keeps the check's test time short
            model._decode_step = install()
            try:
                first, again = model.generate(**kw), model.generate(**kw)  # capture, then replay
            finally:
                del model._decode_step
            for got in (first, again):
                assert torch.equal(got[1], want[1]) and torch.equal(got[0], want[0]), name
