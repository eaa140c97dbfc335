"""Benchmark of streaming synthesis (a measurement, not a test): time to the first audio chunk of
``Synthesizer.stream`` next to the time ``Synthesizer.synthesize`` takes for the whole utterance, in the
same run, on trained checkpoints. Prints a markdown table (docs/inference.md).

    python scripts/bench/bench_streaming.py --threads 2
    python scripts/bench/bench_streaming.py --ar logs/ar_tiny_aligned_tok1500/checkpoints/last.ckpt \\
        --fm logs/flow_matching_tiny_tok1500/checkpoints/last.ckpt --chunk-tokens 10 25 50 --device cuda

Defaults: the main job's checkpoints (``bash scripts/run_tiny.sh``) and the first ``--references``
reference wavs of its test-synth-en meta.lst, zero-shot, sampling seeded. Each text is a few sentences (one
segment; ``max_segment_tokens`` is raised so nothing is cut). Times are medians over references and repeats.

Flags (argparse) rather than Hydra overrides, as in every ``scripts/bench/`` script: a benchmark is a
measurement for developers, not a pipeline step; its knobs are sizes, repeats, threads and lists to
sweep in one process (``--chunk-tokens 10 25 50``), and it prints a table instead of writing a run folder.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from speech.inference import SamplingSetting, SynthesisRequest, Synthesizer
from speech.lit.resolvers import main_job

ROOT = Path(__file__).resolve().parents[2]
TEXT = (
    "The quiet harbor woke before sunrise, and the fishing boats slipped out one by one "
    "while the gulls circled above the grey water and the lighthouse kept turning"
)


def references(meta: Path, count: int) -> list[str]:
    """Prompt wav paths of the first ``count`` lines of a Seed-TTS meta.lst (utt|text|wav|target)."""
    rows = [line.split("|") for line in meta.read_text().splitlines() if line.count("|") >= 3]
    return [str((meta.parent / row[2]).resolve()) for row in rows[:count]]


def measure(synth: Synthesizer, request: SynthesisRequest, chunk_tokens: int) -> dict[str, float]:
    """Seconds to the first chunk and to the last, and the seconds of audio, of one streamed request."""
    start, first, samples = time.perf_counter(), None, 0
    for chunk in synth.stream(request, chunk_tokens=chunk_tokens):
        first = time.perf_counter() - start if first is None else first
        samples += chunk.shape[0]
    return {"first": first, "total": time.perf_counter() - start, "audio": samples / synth.sample_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ar", help="default: the main job's (logs/pipeline_tiny/checkpoints.json)")
    parser.add_argument("--fm", help="default: the main job's")
    parser.add_argument("--meta", default=str(ROOT / "data/synthetic_tiny/test-synth-en/meta.lst"))
    parser.add_argument("--references", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--chunk-tokens", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        args.ar = args.ar or main_job("ar", str(ROOT))
        args.fm = args.fm or main_job("flow_matching", str(ROOT))
    except FileNotFoundError as err:
        raise SystemExit(f"{err} (or pass --ar/--fm)") from err
    for path in (args.ar, args.fm, args.meta):
        if not Path(path).is_file():
            raise SystemExit(
                f"{path} not found: run `bash scripts/run_tiny.sh` first or pass --ar/--fm/--meta"
            )
    synth = Synthesizer.from_checkpoints(args.ar, args.fm, device=args.device, max_segment_tokens=10_000)
    refs = references(Path(args.meta), args.references)
    sampling = SamplingSetting(seed=0)
    requests = [SynthesisRequest(TEXT, reference=ref, sampling=sampling) for ref in refs]
    synth.synthesize(requests[0])  # warm-up (and the streaming decoder's context is measured here)
    list(synth.stream(requests[0]))

    whole, audio = [], []
    for _ in range(args.repeats):
        for request in requests:
            start = time.perf_counter()
            result = synth.synthesize(request)
            whole.append(time.perf_counter() - start)
            audio.append(result.duration)
    rows = [("whole utterance (`synthesize`)", statistics.median(whole), statistics.median(whole),
             statistics.median(audio))]  # fmt: skip
    for chunk_tokens in args.chunk_tokens:
        runs = [measure(synth, r, chunk_tokens) for _ in range(args.repeats) for r in requests]
        rows.append((f"`stream`, chunk_tokens={chunk_tokens}", *(statistics.median(run[key] for run in runs)
                     for key in ("first", "total", "audio"))))  # fmt: skip

    print(f"device {args.device}, threads {torch.get_num_threads()}, {len(requests)} references x "
          f"{args.repeats} repeats, context {synth._decoder_context()} frames")  # fmt: skip
    print("| mode | first audio (s) | all audio (s) | audio length (s) | first audio / whole |")
    print("| --- | ---: | ---: | ---: | ---: |")
    base = rows[0][1]
    for name, first, total, seconds in rows:
        print(f"| {name} | {first:.2f} | {total:.2f} | {seconds:.2f} | {first / base:.2f} |")


if __name__ == "__main__":
    main()
