#!/usr/bin/env bash
# The one script for a GPU machine: every check and the benchmark, ending inside 6 minutes
# (the stage time limits below, each enforced by `timeout`).
#
#   stage 0 (60 s)  NVRTC-compile every kernel instance, launch each once on tiny input against
#                   the NumPy reference (benchmarks.gpu compile); on failure the full
#                   compiler log or traceback is in $OUT and the script stops
#   stage 1 (60 s)  compute-sanitizer memcheck, then racecheck, on a tiny solve and top-k
#                   (benchmarks.gpu tiny); logs in $OUT/memcheck.txt, racecheck.txt
#   stage 2 (100 s) the GPU tests (TEST_FILES, TEST_SELECTION below), 45 s per-test timeout; the
#                   nvcc compile tests are skipped (ALS_SKIP_NVCC=1: CI runs them); junit XML
#   stage 3 (130 s) benchmarks.gpu bench, writing $OUT/gpu_bench.json after every measurement
#                   and gpu_bench.md at the end (copy both to benchmarks/results/gpu/, named
#                   by the device, e.g. gpu-ml20m-shape-h100)
#
# Usage: OUT=dir bash benchmarks/gpu_check.sh          (on the device: `run` sets OUT)
#        OUT=dir bash benchmarks/gpu_check.sh --dry-run  (anywhere: CPU plan of every stage)
# Installs nothing; carried wheels in .whl/ (implicit for the CPU baseline) are installed to
# /tmp/site when present. Runs from the repository root with PYTHONPATH=. and `python3`.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY_RUN=0
[ "${1:-}" = "--dry-run" ] && DRY_RUN=1
OUT="${OUT:-/tmp/als-gpu-check}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
PYTHON="${PYTHON:-python3}"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# compiled CuPy kernels and Numba functions are reused by every later stage
export CUPY_CACHE_DIR="${CUPY_CACHE_DIR:-/tmp/als-cupy-cache}"
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-/tmp/als-numba-cache}"
STAGE0=${STAGE0:-60} STAGE1=${STAGE1:-60} STAGE2=${STAGE2:-100} STAGE3=${STAGE3:-130}
TOTAL=$((STAGE0 + STAGE1 + STAGE2 + STAGE3))
echo "== budgets: stage 0 ${STAGE0}s, 1 ${STAGE1}s, 2 ${STAGE2}s, 3 ${STAGE3}s: ${TOTAL}s of 360"
[ "$TOTAL" -le 350 ] || { echo "budgets exceed 6 minutes"; exit 2; }
started=$SECONDS
stage() {  # stage NAME SECONDS COMMAND...: run under a time box, report status and time
    local name=$1 limit=$2 status begin=$SECONDS
    shift 2
    echo "== $name (limit ${limit}s, $(date -u +%T))"
    timeout -s INT -k 10 "$limit" "$@"
    status=$?
    [ $status -eq 124 ] && echo "TIMED OUT after ${limit}s: $name"
    echo "== $name: exit status $status in $((SECONDS - begin))s"
    return $status
}

if [ $DRY_RUN -eq 1 ]; then
    stage "stage 0 dry run" "$STAGE0" "$PYTHON" -m benchmarks.gpu compile --dry-run \
        || exit 1
    stage "stage 3 dry run" "$STAGE3" "$PYTHON" -m benchmarks.gpu bench --out "$OUT" \
        --dry-run --scale "${SCALE:-0.002}" || exit 3
    echo "== dry run done in $((SECONDS - started))s"
    exit 0
fi

if ls .whl/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
echo "== environment ($(date -u +%FT%TZ))"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv || true
"$PYTHON" - <<'PY' || true
import importlib, os, platform
print("python", platform.python_version(), "cores", os.cpu_count())
for name in ("numpy", "scipy", "numba", "cupy", "implicit", "pytest", "pytest_timeout"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as exc:  # report and go on: later stages say what they skip
        print(name, f"missing ({type(exc).__name__}: {exc})")
PY

stage "stage 0: compile and launch every kernel" "$STAGE0" \
    "$PYTHON" -m benchmarks.gpu compile --out "$OUT" || {
    echo "STOP: stage 0 failed; see $OUT/stage0-failure.txt, $OUT/stage-compile-failure.txt"
    exit 10
}

sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
if [ -n "$sanitizer" ]; then
    half=$((STAGE1 / 2))
    for tool in memcheck racecheck; do
        stage "stage 1: $tool" "$half" "$sanitizer" --tool "$tool" --error-exitcode 99 \
            --log-file "$OUT/$tool.txt" "$PYTHON" -m benchmarks.gpu tiny --out "$OUT"
        status=$?
        tail -n 5 "$OUT/$tool.txt" 2>/dev/null
        if [ $status -eq 99 ]; then
            echo "STOP: $tool found errors (see $OUT/$tool.txt)"
            exit 11
        fi
    done
else
    echo "NOT RUN: stage 1, compute-sanitizer is not on PATH"
fi

# -- stage 2: the tests that run on the device ------------------------------------------------
# TEST_FILES and TEST_SELECTION are the one place that says which tests run here: every test
# of the CUDA modules and every backend test run with the cuda backend, on the device (the
# [emulated] variants, and the CPU-only test_cuda_plan.py, test_cuda_emulated.py,
# test_cuda_emulator.py and test_cuda_end_to_end.py, are left to CI).
TEST_FILES=(tests/test_cuda.py tests/test_backends.py tests/test_model.py tests/test_options.py)
TEST_SELECTION=(-k "cuda and not emulated")
files=()
for file in "${TEST_FILES[@]}"; do
    if why=$("$PYTHON" -c "import tests.$(basename "$file" .py)" 2>&1); then
        files+=("$file")
    else
        echo "NOT RUN: $file does not import here: $(echo "$why" | tail -n 1)"
    fi
done
export ALS_SKIP_NVCC=1
stage "stage 2: GPU tests" "$STAGE2" "$PYTHON" -m pytest "${files[@]}" "${TEST_SELECTION[@]}" \
    -q -rs -p no:cacheprovider --timeout 45 --junitxml="$OUT/pytest.xml"
tests=$?

stage "stage 3: benchmark" "$STAGE3" "$PYTHON" -m benchmarks.gpu bench --out "$OUT" \
    --budget $((STAGE3 - 15))
bench=$?
echo "== done in $((SECONDS - started))s: tests $tests, benchmark $bench"
exit $(( tests != 0 ? tests : bench ))
