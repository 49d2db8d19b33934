#!/usr/bin/env bash
# The one prepared script for the accelerator machine: the CUDA tests, then the GPU benchmark.
#
# Installs nothing. Run from anywhere; it works in the repository root with PYTHONPATH=. and
# writes everything (log.txt, pytest.xml, gpu_bench.json, gpu_bench.md) to $OUT (the device
# tool's output folder; default benchmarks/results/gpu-<date>). Time boxes: tests 240 s,
# benchmark 270 s (its CPU baseline has its own budget), about 8.5 minutes in the worst case.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=.
OUT="${OUT:-benchmarks/results/gpu-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
PYTHON="${PYTHON:-python}"
# MovieLens for the benchmark, when the shared data folder sits beside the checkout
if [ -z "${ALS_DATA_DIR:-}" ] && [ -d ../shared/data ]; then
    export ALS_DATA_DIR="$(cd ../shared/data && pwd)"
fi

echo "== environment ($(date -u +%FT%TZ))"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
"$PYTHON" - <<'PY' || true
import importlib
for name in ("numpy", "scipy", "numba", "cupy", "implicit", "hypothesis", "pytest"):
    try:
        print(f"{name} {importlib.import_module(name).__version__}")
    except Exception as exc:  # report and go on: the tests below say what they skip
        print(f"{name} missing ({type(exc).__name__}: {exc})")
PY

echo "== tests"
# test modules import implicit (and maybe hypothesis) at module level: run the ones that import
files=()
for file in tests/test_cuda.py tests/test_backends.py tests/test_model.py tests/test_agreement.py; do
    module="tests.$(basename "$file" .py)"
    if why=$("$PYTHON" -c "import importlib; importlib.import_module('$module')" 2>&1); then
        files+=("$file")
    else
        echo "NOT RUN: $file does not import here: $(echo "$why" | tail -n 1)"
    fi
done
if [ ${#files[@]} -eq 0 ]; then
    echo "no test file imports here: is this the right Python ($PYTHON)?"
    tests=1
else
    timeout -s INT -k 15 240 "$PYTHON" -m pytest "${files[@]}" -k cuda -q -rs -p no:cacheprovider \
        --junitxml="$OUT/pytest.xml"
    tests=$?
fi
echo "pytest exit status: $tests"

echo "== benchmark"
timeout -s INT -k 15 270 "$PYTHON" benchmarks/gpu_bench.py --out "$OUT" --cpu-budget 120
bench=$?
echo "gpu_bench exit status: $bench"
[ -f "$OUT/gpu_bench.md" ] && cat "$OUT/gpu_bench.md"
exit $(( tests != 0 ? tests : bench ))
