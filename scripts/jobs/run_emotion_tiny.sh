#!/usr/bin/env bash
# The emotion job: one LoRA adapter per emotion on the main job's tiny AR model, with a table and a plot of
# what each one does (scripts/jobs/run_emotion_tiny.py, docs/emotion.md). Runs the main job first; a
# finished main job is kept and takes seconds. Extra arguments go to every Hydra command. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/run_tiny.sh "$@"
exec "${SPEECH_VENV:-.venv}/bin/python" scripts/jobs/run_emotion_tiny.py "$@"
