"""Stages 0 and 1 of benchmarks/gpu_check.sh: compile every kernel, launch each once, tiny runs.

    python -m benchmarks.gpu compile --out DIR   # stage 0
    python -m benchmarks.gpu tiny                # stage 1, under compute-sanitizer
    python -m benchmarks.gpu compile --dry-run   # CPU only: the same cases, emulated

``compile`` builds the CUDA module (NVRTC, every template instance), then runs one tiny solve
per case of :data:`CG_CASES` (together they launch every ``cg_*`` instance: checked before
anything runs), the exact solve and top-k in every dtype, each against the NumPy reference
backend. It prints one line per check with the seconds since start and stops at the first
failure, writing the compiler log or the traceback to ``DIR/stage0-failure.txt``.

``tiny`` runs one chunked CG solve with a row longer than a chunk (so atomics run), one
exact solve and one segmented float32 and float16 top-k: small enough for memcheck and
racecheck to finish in seconds.

``--dry-run`` needs no GPU: it checks that the cases cover every kernel instance and runs
each CG case through the NumPy emulation of the chunked solve (``backends.chunked_cg``)
against the reference, so the inputs and tolerances of stage 0 are tried in CI.
"""

from __future__ import annotations

import argparse
import time
import traceback
from pathlib import Path

import numpy as np
import scipy.sparse

from als.backends import cupy_cuda
from als.backends.base import CG_TOLERANCE
from als.backends.chunked_cg import EmulatedKernels, chunked_cg_solve
from als.backends.numpy_ref import NumpyBackend

#: factor counts whose solves, in float16, float32 and float64, launch every cg_* instance
CG_FACTORS = (7, 32, 63, 64, 100, 128, 255, 256, 500, 1000)
CG_DTYPES = (np.float16, np.float32, np.float64)
CG_CASES = [(np.dtype(dtype), factors) for dtype in CG_DTYPES for factors in CG_FACTORS]
#: largest difference relative to the largest factor after 3 CG steps (tests/test_cuda.py
#: explains the float32 figure; float16 adds the rounding of stored halves; float64 has no
#: float32 rounding to amplify)
CG_TOLERANCES = {np.dtype(np.float16): 3e-3, np.dtype(np.float32): 2e-3, np.dtype(np.float64): 1e-9}


def tiny_matrix(n_users=40, n_items=700, seed=0):
    """A confidence matrix with a row of every item (3 chunks of 256), empty and 1-entry rows."""
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < 0.05
    dense[3, :] = True  # 700 entries: three chunks, added atomically
    dense[0, :] = False  # empty row
    dense[1, :] = False
    dense[1, 5] = True  # one entry
    values = rng.integers(1, 6, size=dense.shape).astype(np.float32)
    values[rng.random(dense.shape) < 0.1] *= -1  # some disliked
    return scipy.sparse.csr_matrix(np.where(dense, values, 0).astype(np.float32))


def cg_operands(Cui, factors, dtype, seed):
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((Cui.shape[0], factors)) * 0.1).astype(dtype)
    Y = (rng.standard_normal((Cui.shape[1], factors)) * 0.1).astype(dtype)
    return X, Y


def relative_difference(got, expected):
    expected = np.asarray(expected, dtype=np.float64)
    return float(
        np.abs(np.asarray(got, dtype=np.float64) - expected).max() / np.abs(expected).max()
    )


def reference_cg(Cui, X, Y, cg_steps):
    """The reference backend's CG on the storage values widened to float32 (float64 kept)."""
    reference = NumpyBackend()
    compute = np.float64 if X.dtype == np.float64 else np.float32
    expected, Y_compute = X.astype(compute), Y.astype(compute)
    reference.solve(
        Cui.astype(compute), expected, Y_compute, reference.gram(Y_compute, 0.05), cg_steps
    )
    return expected


def instances_covered():
    """The cg_* instances CG_CASES launch (with aligned arrays) must be every one compiled."""
    launched = set()
    for dtype, factors in CG_CASES:
        launched.update(cupy_cuda.cg_kernel_names(factors, dtype))
    compiled = {name for name in cupy_cuda.name_expressions() if name.startswith("cg_")}
    return compiled - launched


class Log:
    def __init__(self):
        self.started = time.perf_counter()

    def __call__(self, message):
        print(f"[{time.perf_counter() - self.started:6.1f}s] {message}", flush=True)


def dry_run(log):
    missing = instances_covered()
    if missing:
        log(f"FAIL: no case launches {sorted(missing)}")
        return 1
    log(f"{len(CG_CASES)} CG cases cover every cg_* instance")
    Cui = tiny_matrix()
    for dtype, factors in CG_CASES:
        X, Y = cg_operands(Cui, factors, dtype, seed=factors)
        expected = reference_cg(Cui, X, Y, 3)
        compute = np.float64 if dtype == np.float64 else np.float32
        YtY = NumpyBackend().gram(Y.astype(compute), 0.05)
        got = X.copy()
        chunked_cg_solve(np, EmulatedKernels(), Cui, got, Y, YtY, 3, CG_TOLERANCE)
        # the emulation stores float16 like the GPU: the same tolerance applies
        difference = relative_difference(got, expected)
        if not difference <= CG_TOLERANCES[dtype]:
            log(f"FAIL: emulated CG {dtype} f={factors}: {difference:.2e}")
            return 1
    log("emulated chunked CG matches the reference in every case")
    return 0


def compile_and_launch(log, out):
    import cupy

    log(f"CuPy {cupy.__version__}, CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}")
    missing = instances_covered()
    if missing:
        raise AssertionError(f"no case launches {sorted(missing)}")
    try:
        cuda = cupy_cuda.CupyBackend()
    except cupy.cuda.compiler.CompileException as exc:
        with open(out / "stage0-failure.txt", "w") as file:
            file.write(str(exc) + "\n\n")
            exc.dump(file)  # the source and NVRTC's full log
        raise
    log(f"NVRTC compiled {len(cupy_cuda.name_expressions())} kernel instances")
    Cui = tiny_matrix()
    Cui_device = cuda.to_device(Cui)
    for dtype, factors in CG_CASES:
        X, Y = cg_operands(Cui, factors, dtype, seed=factors)
        expected = reference_cg(Cui, X, Y, 3)
        X_device, Y_device = cuda.to_device(X), cuda.to_device(Y)
        cuda.solve(Cui_device, X_device, Y_device, cuda.gram(Y_device, 0.05), 3)
        cupy.cuda.Device().synchronize()
        difference = relative_difference(cuda.to_host(X_device), expected)
        names = cupy_cuda.cg_kernel_names(factors, dtype)
        if not difference <= CG_TOLERANCES[dtype]:
            raise AssertionError(
                f"CG {dtype} f={factors} ({names[0]}): difference {difference:.2e}"
            )
        log(f"CG {dtype} f={factors}: {names[0]}, {names[2]}: difference {difference:.1e}")
    for dtype in CG_DTYPES:
        X, Y = cg_operands(Cui, 8, dtype, seed=1)
        expected = reference_cg(Cui, X, Y, None)
        X_device, Y_device = cuda.to_device(X), cuda.to_device(Y)
        cuda.solve(Cui_device, X_device, Y_device, cuda.gram(Y_device, 0.05), None)
        difference = relative_difference(cuda.to_host(X_device), expected)
        tolerance = 1e-3 if dtype == np.float16 else 1e-4
        if not difference <= tolerance:
            raise AssertionError(f"exact solve {dtype}: difference {difference:.2e}")
        log(f"exact solve {dtype}: difference {difference:.1e}")
    check_topk(cuda, log)
    return 0


def check_topk(cuda, log, dtypes=(np.float32, np.float64, np.float16)):
    """Segmented top-k (40,000 candidates: 2 segments) on exact integer scores, every dtype."""
    reference = NumpyBackend()
    rng = np.random.default_rng(7)
    items = rng.integers(-3, 4, size=(40_000, 8))
    queries = rng.integers(-3, 4, size=(33, 8))
    exclude = scipy.sparse.random(33, 40_000, density=0.001, format="csr", random_state=8)
    for dtype in dtypes:
        host = np.float64 if dtype == np.float64 else np.float32
        expected = reference.topk(queries.astype(host), items.astype(host), 5, exclude)
        got = cuda.topk(
            cuda.to_device(queries.astype(dtype)),
            cuda.to_device(items.astype(dtype)),
            5,
            cuda.to_device(exclude),
        )
        if not (np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])):
            raise AssertionError(f"top-k {np.dtype(dtype)}: ids or scores differ")
        log(f"top-k {np.dtype(dtype)}, 2 segments: identical to the reference")


def tiny(log):
    """The stage-1 workload for compute-sanitizer: one of each kind of launch, small."""
    cuda = cupy_cuda.CupyBackend()
    Cui = tiny_matrix()
    Cui_device = cuda.to_device(Cui)
    for dtype, factors, steps in ((np.float32, 64, 3), (np.float16, 100, 3), (np.float32, 8, None)):
        X, Y = cg_operands(Cui, factors, dtype, seed=factors)
        expected = reference_cg(Cui, X, Y, steps)
        X_device, Y_device = cuda.to_device(X), cuda.to_device(Y)
        cuda.solve(Cui_device, X_device, Y_device, cuda.gram(Y_device, 0.05), steps)
        difference = relative_difference(cuda.to_host(X_device), expected)
        log(f"solve {np.dtype(dtype)} f={factors} cg_steps={steps}: difference {difference:.1e}")
    check_topk(cuda, log, dtypes=(np.float32, np.float16))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu", description=__doc__.split("\n")[0]
    )
    parser.add_argument("stage", choices=["compile", "tiny"])
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--dry-run", action="store_true", help="no GPU: emulate the CG cases")
    args = parser.parse_args(argv)
    log = Log()
    if args.dry_run:
        return dry_run(log)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        return compile_and_launch(log, args.out) if args.stage == "compile" else tiny(log)
    except Exception:
        text = traceback.format_exc()
        log(f"FAILED:\n{text}")
        with open(args.out / f"stage-{args.stage}-failure.txt", "a") as file:
            file.write(text)
        return 1
