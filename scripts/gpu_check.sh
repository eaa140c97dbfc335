#!/usr/bin/env bash
# The GPU check (docs/gpu_check.md), one command, at most 8 minutes: the CUDA-marked tests, then
# scripts/bench/gpu_check.py (training, DDP, decoding and inference measurements). Writes report.md and
# report.json, with the logs beside them, to $OUT if set, else logs/gpu_check/.
#
#   bash scripts/gpu_check.sh --fetch-wheels          # first, on a machine with the package index
#   bash scripts/gpu_check.sh                         # then on the CUDA machine
#   bash scripts/gpu_check.sh --device cpu --quick    # the toy run on a CPU: every section, 2-4 minutes
#
# The GPU machines run their own Python (3.12 with torch, lightning, transformers, einops, numpy, pytest) and
# reach no package index: --fetch-wheels puts the project's other dependencies, at the versions installed
# here, as wheels in cache/gpu_check_wheels (about 10 MB; carry that folder along), and this script installs
# them there into a temporary folder. Other arguments go to gpu_check.py. Each part has its own time limit,
# and a part that fails is written into the report while the rest still run.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
WHEELS=${GPU_CHECK_WHEELS:-cache/gpu_check_wheels}
TOTAL_S=${GPU_CHECK_SECONDS:-470}   # the whole check, start-up included: inside the 8 minutes
TESTS_S=90                          # the CUDA-marked tests, all files together
OUT_DIR=${OUT:-logs/gpu_check}
PY=${PYTHON:-python3}
[[ -z ${PYTHON:-} && -x .venv/bin/python ]] && PY=.venv/bin/python

# dependencies of the project that the GPU machines' image lacks (their own dependencies included)
PURE=(hydra-core omegaconf antlr4-python3-runtime lhotse intervaltree librosa audioread decorator pooch
      platformdirs jiwer num2words docopt pycparser)
COMPILED=(soundfile soxr cffi cytoolz rapidfuzz)

fetch_wheels() {
    local version=${GPU_PYTHON_VERSION:-3.12} pins
    mkdir -p "$WHEELS"
    pins=$("$PY" -c 'import importlib.metadata as m, sys; print(" ".join(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' \
        "${PURE[@]}" "${COMPILED[@]}") || { echo "a package is not installed here: run scripts/setup.sh" >&2; return 1; }
    read -r -a pins <<<"$pins"
    # pure Python: built or fetched for any Python; compiled: downloaded for the GPU machine's Python
    "$PY" -m pip wheel -q --no-deps -w "$WHEELS" "${pins[@]:0:${#PURE[@]}}" || return 1
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$WHEELS" "${pins[@]:${#PURE[@]}}" || return 1
    echo "$(ls "$WHEELS"/*.whl | wc -l) wheels in $WHEELS ($(du -sh "$WHEELS" | cut -f1)): carry it to the GPU machine"
}

if [[ ${1:-} == --fetch-wheels ]]; then
    fetch_wheels
    exit
fi

start=$SECONDS
mkdir -p "$OUT_DIR"
rm -f "$OUT_DIR"/report.md "$OUT_DIR"/report.json
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    site=$(mktemp -d /tmp/gpu_check_site.XXXX)
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$WHEELS"/*.whl \
        && export PYTHONPATH="$site:$PYTHONPATH"
fi
missing=$("$PY" -c 'import importlib.util as u; print(*[m for m in ["torch", "lightning", "hydra", "lhotse",
    "librosa", "soundfile", "transformers", "pytest"] if u.find_spec(m) is None])')
[[ -n $missing ]] && echo "[gpu_check] missing: $missing (bash scripts/gpu_check.sh --fetch-wheels, then carry $WHEELS)"
command -v nvidia-smi >/dev/null && nvidia-smi >"$OUT_DIR/nvidia_smi.txt" 2>&1

# the CUDA-marked tests, one pytest per file (the test folders' conftest files clash in one run)
tests_log="$OUT_DIR/cuda_tests.log"
: >"$tests_log"
tests_rc=0
tests_end=$((SECONDS + TESTS_S))
for file in $(grep -rl --include='*.py' 'pytest.mark.gpu' tests | sort); do
    left=$((tests_end - SECONDS))
    if ((left < 5)); then
        echo "not run (time limit of the tests spent): $file" >>"$tests_log"
        tests_rc=124
        continue
    fi
    timeout -k 5 "$left" "$PY" -m pytest -q -m gpu -p no:cacheprovider --continue-on-collection-errors \
        "$file" >>"$tests_log" 2>&1
    rc=$?
    ((rc != 0 && rc != 5)) && tests_rc=$rc  # 5: every test of the file deselected
done
echo "[gpu_check] CUDA-marked tests: exit status $tests_rc ($(tail -n 1 "$tests_log"))"

budget=$((TOTAL_S - (SECONDS - start) - 15))
timeout -k 10 $((budget + 10)) "$PY" scripts/bench/gpu_check.py --out "$OUT_DIR" --budget "$budget" \
    --tests-log "$tests_log" --tests-rc "$tests_rc" "$@" 2>&1 | tee "$OUT_DIR/gpu_check.log"
rc=${PIPESTATUS[0]}
if [[ ! -s $OUT_DIR/report.md || $rc -ne 0 ]]; then
    {
        echo "# GPU check: scripts/bench/gpu_check.py stopped (exit status $rc)"
        echo
        echo '```'
        tail -n 40 "$OUT_DIR/gpu_check.log"
        echo '```'
    } >>"$OUT_DIR/report.md"
fi
echo "[gpu_check] done in $((SECONDS - start)) s: $OUT_DIR/report.md"
exit "$rc"
