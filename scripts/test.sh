#!/usr/bin/env bash
# The test suite (slow and GPU tests are skipped by default; `-m slow` runs the slow ones).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${SPEECH_VENV:-.venv}/bin/python" -m pytest "$@"
