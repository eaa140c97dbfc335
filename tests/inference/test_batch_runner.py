"""speech/inference/batch_runner.py: which meta lines are synthesized together."""

import numpy as np

from speech.inference import SynthesisRequest
from speech.inference.batch_runner import run_meta
from speech.inference.synthesizer import SynthesisResult


class Recorder:
    """Stands in for the synthesizer: records each batch's texts and returns a second of silence each."""

    def __init__(self):
        self.batches = []

    def synthesize_batch(self, requests, batch_size):
        self.batches.append([r.text for r in requests])
        return [SynthesisResult(np.zeros(16000, np.float32), 16000, "wav") for _ in requests]


def test_one_shot_lines_are_batched_by_prompt_and_text_together(tmp_path, references):
    """Flow matching carries a one-shot prompt in front of the new tokens: lines with short texts but long
    prompts go with the long ones, not with the short ones (which padded every batch to its longest
    prompt); zero-shot lines are batched by their text alone."""
    long_prompt = "a much longer prompt transcript, read before the text " * 3
    lines = [("s1", "short one", long_prompt), ("s2", "short two", "hi"), ("s3", "short three", "hey"),
             ("l1", ("a long text to be said " * 4).strip(), "ok")]  # fmt: skip
    meta = tmp_path / "meta.lst"
    meta.write_text("".join(f"{u}|{p}|{references[0]}|{t}\n" for u, t, p in lines))
    runs = {}
    for mode in ("one_shot", "zero_shot"):
        synth = Recorder()
        run_meta(synth, meta, tmp_path / mode, mode=mode, make=SynthesisRequest, batch_size=2, progress=False)
        runs[mode] = [sorted(batch) for batch in synth.batches]
    assert runs["one_shot"] == [["short three", "short two"], sorted(["short one", lines[3][1]])]
    assert runs["zero_shot"] == [["short one", "short two"], sorted(["short three", lines[3][1]])]
