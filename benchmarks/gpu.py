"""The GPU benchmark: every check and measurement of the CUDA backend on a real device.

    bash benchmarks/gpu_check.sh                       # on a device: every stage, < 6 minutes
    OUT=/tmp/gpu bash benchmarks/gpu_check.sh --dry-run  # anywhere: the CPU plan of each stage
    python -m benchmarks.gpu compile --out DIR         # stage 0: compile, launch every kernel
    python -m benchmarks.gpu tiny                      # stage 1: tiny runs for compute-sanitizer
    python -m benchmarks.gpu bench --out DIR           # stage 3: ML-20M-shaped fit and top-k

``compile`` and ``tiny`` are :mod:`benchmarks.gpu_smoke` (checks against the NumPy
reference); ``bench`` is :mod:`benchmarks.gpu_bench` (our CUDA backend against our Numba
backend and implicit, with the counting of FLOPs and bytes in its docstring). Stage 2 of
``gpu_check.sh`` runs the device variants of the CUDA tests with pytest. ``--help`` after a
mode lists its options.
"""

from __future__ import annotations

import sys

from benchmarks import gpu_bench, gpu_smoke

MODES = {"compile": gpu_smoke.main, "tiny": gpu_smoke.main, "bench": gpu_bench.main}


def main(argv=None):
    """Run one mode; ``argv`` starts with the mode's name, as on the command line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in MODES:
        print(__doc__.strip())
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    mode, rest = argv[0], argv[1:]
    # gpu_smoke takes its stage as its first argument; gpu_bench has no modes
    return MODES[mode](argv if mode in ("compile", "tiny") else rest)

if __name__ == "__main__":
    sys.exit(main())
