#!/usr/bin/env bash
# The main job on the built-in default: build the tiny synthetic corpus, then prepare it and run the data
# pipeline over it with a summary. Safe to run again: finished work is kept and skipped.
# Extra arguments go to both Hydra commands (e.g. `paths.data_dir=/scratch/data`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
py=${SPEECH_VENV:-.venv}/bin/python
"$py" scripts/make_synthetic_corpus.py data=synthetic_tiny "$@"
"$py" scripts/prepare_data.py data=synthetic_tiny "$@"
