#!/usr/bin/env bash
# The main job: the whole pipeline on the built-in tiny corpus, on CPU, with a short training budget, ending
# in a WER/SIM table of zero-shot and one-shot cloning of test-synth-en. The task graph, budgets and outputs
# are described in scripts/run_tiny.py. Extra arguments go to every Hydra command (e.g.
# `paths.data_dir=/scratch/data`), those of `data.*` to the ones that read a corpus (e.g.
# `data.bpe.phonemes=espeak-ng`). Safe to run again: finished work is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${SPEECH_VENV:-.venv}/bin/python" scripts/run_tiny.py "$@"
