"""GPU fit and top-k on ML-20M's shape: our CUDA backend against our Numba backend and implicit.

    python -m benchmarks.gpu bench --out DIR [--budget SECONDS]
    python -m benchmarks.gpu bench --out DIR --dry-run --scale 0.002   # CPU only: the plan
    bash benchmarks/gpu_check.sh                                       # on a device: all stages

Stage 3 of ``benchmarks/gpu_check.sh``. Every measurement is appended to
``DIR/gpu_bench.json`` (the harness's result schema) the moment it is taken, so a run
stopped by its time box keeps what it measured; ``gpu_bench.md`` is written at the end.
In order:
1. ceilings: SGEMM (8192^3 float32 through cuBLAS; FLOPs = 2 n^3) and a device-to-device
   copy of 1 GiB (bytes = read + written), each the median of 10 runs timed with CUDA events;
2. the ML-20M-shaped matrix (:func:`ml20m_like`: 138,493 users, 26,744 items, 20,000,263
   entries, most popular item about 67k entries, heaviest user about 9k) and its chunk plan;
3. our Numba backend at 128 factors, float32, on all CPU cores: 5 iterations from the
   shared seed, each timed, factors kept after iterations 1 and 5; then 1 iteration at 64
   and 256 factors if the budget allows;
4. the GPU at 64, 128, 256 factors in float32 and float16: user-half and item-half seconds
   (Gram matrix + solve, CUDA events) of each iteration, median over the timed iterations
   after one warm-up; at 128/float32 the same 5 iterations from the same seed as Numba and
   the agreement of the factors after 1 and 5 iterations;
5. implicit's CPU ALS at 128 factors if ``import implicit`` works (its wheel carried):
   seconds per iteration as (fit of 3 iterations - fit of 1) / 2, all cores;
6. top-k: 100,000 queries x 1,000,000 items, 128 factors, k = 10, float32 then float16.

Counting, per half-iteration solving R rows against C rows of the other side, nnz entries,
f factors, s = cg_steps, b bytes per stored factor value:

    FLOPs = 2 C f^2 (Gram) + (s + 1) (2 R f^2 + 4 nnz f)     (GEMM Y^T Y p; dot + axpy)
    bytes = C f b + (s + 1) (nnz (8 + f b) + 4 R f 4)         (gather of y_i per entry;
                                                               row vectors in float32)

Achieved fractions are FLOPs / s over the measured SGEMM rate and bytes / s over the
measured copy rate (a no-cache model: L2 serves part of the gathers, so the bandwidth
fraction can pass 1). Top-k: FLOPs = 2 Q N f over SGEMM; bytes = Q N 4 x 2 (the score block
written once and read once, the least any method moves) over the copy rate.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import scipy.sparse

from als.backends.base import BackendUnavailable, get_backend
from als.backends.cuda_plan import CHUNK_ENTRIES, plan_chunks
from als.fitting import initial_factors
from benchmarks import harness

ML20M = {
    "n_users": 138_493,
    "n_items": 26_744,
    "nnz": 20_000_263,
    "top_item": 67_310,
    "top_user": 9_254,
    "min_user": 20,
}
REGULARIZATION = 0.01
CG_STEPS = 3


# -- the matrix ---------------------------------------------------------------------------------


def _bisect(function, lo, hi, steps=60):
    """The point of [lo, hi] where the increasing ``function`` crosses zero."""
    for _ in range(steps):
        middle = (lo + hi) / 2
        lo, hi = (middle, hi) if function(middle) < 0 else (lo, middle)
    return (lo + hi) / 2


def user_degrees(n_users, nnz, top_user, min_user):
    """Power-law entry counts ``max(min_user, top_user * rank^-b)`` summing to ``nnz``."""
    ranks = np.arange(1, n_users + 1, dtype=np.float64)

    def shape(b):
        return np.maximum(min_user, top_user * ranks**-b)

    b = _bisect(lambda b: nnz - shape(b).sum(), 0.0, 5.0)
    degrees = np.floor(shape(b)).astype(np.int64)
    short = nnz - int(degrees.sum())
    degrees[np.arange(max(short, 0)) % n_users] += 1
    return degrees


def item_probabilities(n_items, degrees, top_item):
    """Zipf item probabilities whose most popular item gets ``top_item`` distinct users.

    A user with d draws picks an item of probability p at least once with probability
    1 - exp(-d p); the top probability solves sum_users (1 - exp(-d p)) = top_item, the
    exponent then makes the probabilities sum to 1.
    """
    values, counts = np.unique(degrees, return_counts=True)

    def distinct_users(p):
        return float(np.sum(counts * -np.expm1(-values * p)))

    p_top = _bisect(lambda p: distinct_users(p) - top_item, 0.0, 1.0)
    ranks = np.arange(1, n_items + 1, dtype=np.float64)
    exponent = _bisect(lambda a: 1 - (p_top * ranks**-a).sum(), 0.0, 5.0)
    p = p_top * ranks**-exponent
    return p / p.sum()


def ml20m_like(n_users, n_items, nnz, top_item, top_user, min_user, seed=0):
    """A users x items CSR of ratings 1..5 calibrated to ML-20M's size and skew.

    Users get power-law entry counts (heaviest ``top_user``, lightest ``min_user``), each
    entry an item drawn from :func:`item_probabilities`; repeated (user, item) draws are
    merged and drawn again for the users left short (three rounds), and a random surplus is
    dropped, so the matrix has ``nnz`` entries (a few fewer if draws keep colliding).
    """
    rng = np.random.default_rng(seed)
    degrees = user_degrees(n_users, nnz, top_user, min_user)
    cdf = np.cumsum(item_probabilities(n_items, degrees, top_item))
    keys = np.empty(0, dtype=np.int64)
    target = degrees + (degrees // 100)  # 1% over: the random drop below takes it back
    wanted = target
    for _ in range(3):  # draw again for the users that collisions left short
        users = np.repeat(np.arange(n_users, dtype=np.int64), wanted)
        items = np.minimum(np.searchsorted(cdf, rng.random(len(users)) * cdf[-1]), n_items - 1)
        keys = harness.sorted_unique(np.concatenate([keys, users * n_items + items]))
        wanted = np.maximum(target - np.bincount(keys // n_items, minlength=n_users), 0)
        if wanted.sum() < nnz // 10_000:
            break
    if len(keys) > nnz:
        keys = keys[np.sort(rng.choice(len(keys), size=nnz, replace=False))]
    # keys are sorted by user: CSR directly, then ids shuffled so heavy rows are spread out
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys // n_items, minlength=n_users), out=indptr[1:])
    columns = rng.permutation(n_items).astype(np.int32)[keys % n_items]
    ratings = rng.integers(1, 6, size=len(keys)).astype(np.float32)
    matrix = scipy.sparse.csr_matrix((ratings, columns, indptr), shape=(n_users, n_items))
    matrix = matrix[rng.permutation(n_users)]
    matrix.sort_indices()
    return matrix


def matrix_stats(Cui):
    user_counts = np.diff(Cui.indptr)
    item_counts = np.bincount(Cui.indices, minlength=Cui.shape[1])
    return {
        "shape": list(Cui.shape),
        "nnz": int(Cui.nnz),
        "heaviest_user": int(user_counts.max()),
        "lightest_user": int(user_counts.min()),
        "median_user": float(np.median(user_counts)),
        "most_popular_item": int(item_counts.max()),
        "median_item": float(np.median(item_counts)),
        "user_chunks": int(len(plan_chunks(np, Cui.indptr)[0])),
        "item_chunks": int(len(plan_chunks(np, np.concatenate([[0], np.cumsum(item_counts)]))[0])),
        "chunk_entries": CHUNK_ENTRIES,
    }


def work_per_half(rows, other, nnz, factors, itemsize, cg_steps=CG_STEPS):
    """(FLOPs, bytes) of one half-iteration by the formulas in the module docstring."""
    passes = cg_steps + 1
    flops = 2 * other * factors**2 + passes * (2 * rows * factors**2 + 4 * nnz * factors)
    moved = other * factors * itemsize + passes * (
        nnz * (8 + factors * itemsize) + 16 * rows * factors
    )
    return flops, moved


def starting_factors(shape, factors, dtype, seed=0):
    """User and item factors as ``AlternatingLeastSquares.fit`` draws them from ``seed``."""
    rng = np.random.default_rng(seed)
    return tuple(initial_factors(rng, rows, factors, dtype) for rows in shape)


def max_relative_difference(got, expected):
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(got - expected).max() / np.abs(expected).max())


# -- the report ---------------------------------------------------------------------------------


class Report(harness.Result):
    """The result, written again after every measurement, with a time budget."""

    def __init__(self, out, budget, command, params):
        super().__init__(
            "gpu_bench",
            "GPU fit and top-k on an ML-20M-shaped matrix",
            command,
            params,
            Path(out) / "gpu_bench",
            tables=TABLES,
            notes=[WORK_NOTE],
        )
        self.started = time.perf_counter()
        self.budget = budget
        self.save(render=False)

    def left(self):
        return self.budget - (time.perf_counter() - self.started)

    def add(self, kind, **fields):
        return super().add(kind, at_seconds=round(time.perf_counter() - self.started, 2), **fields)


HALVES = [
    ["factors", "factors", "{:d}"],
    ["dtype", "dtype", "{}"],
    ["user_half_seconds", "user half s", "{:.4f}"],
    ["item_half_seconds", "item half s", "{:.4f}"],
    ["iteration_seconds", "iteration s", "{:.4f}"],
    ["flops_fraction", "of SGEMM rate", "{:.2f}"],
    ["bytes_fraction", "of copy rate", "{:.2f}"],
    ["finite", "finite", "{}"],
]
TABLES = [
    {
        "kind": "matrix",
        "title": "The matrix",
        "columns": [
            ["shape", "users, items", "{}"],
            ["nnz", "entries", "{:,}"],
            ["heaviest_user", "heaviest user", "{:,}"],
            ["most_popular_item", "most popular item", "{:,}"],
            ["user_chunks", "user chunks", "{:,}"],
            ["item_chunks", "item chunks", "{:,}"],
        ],
    },
    {"kind": "sgemm_ceiling", "title": "SGEMM", "columns": [["flops_per_s", "FLOP/s", "{:.3g}"]]},
    {"kind": "copy_ceiling", "title": "Copy", "columns": [["bytes_per_s", "bytes/s", "{:.3g}"]]},
    {"kind": "cuda", "title": "CUDA backend, per iteration", "columns": HALVES},
    {"kind": "numba_cpu", "title": "Numba backend, all cores", "columns": HALVES[:5]},
    {
        "kind": "agreement_with_numba",
        "title": "CUDA factors against Numba's (largest difference / largest factor)",
        "columns": [
            ["iteration", "iteration", "{:d}"],
            ["user_factors", "user factors", "{:.1e}"],
            ["item_factors", "item factors", "{:.1e}"],
        ],
    },
    {
        "kind": "implicit_cpu",
        "title": "implicit, CPU",
        "columns": [["factors", "factors", "{:d}"], ["iteration_seconds", "s/iter", "{:.3f}"]],
    },
    {
        "kind": "topk",
        "title": "Top-k, k = 10",
        "columns": [
            ["dtype", "dtype", "{}"],
            ["queries", "queries", "{:,}"],
            ["items", "items", "{:,}"],
            ["seconds", "seconds", "{:.3f}"],
            ["flops_fraction", "of SGEMM rate", "{:.2f}"],
            ["bytes_fraction", "of copy rate", "{:.2f}"],
        ],
    },
]
WORK_NOTE = (
    "Fractions: FLOPs / s over the measured SGEMM rate and bytes / s over the measured copy "
    "rate, by the counting in `benchmarks/gpu_bench.py`'s docstring (a no-cache model: L2 "
    "serves part of the gathers, so the bandwidth fraction can pass 1)."
)


# -- GPU measurements ---------------------------------------------------------------------------


def median_event_seconds(cupy, run, repeats=10):
    run()  # warm-up: handles, kernels, allocations
    times = []
    for _ in range(repeats):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        run()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return float(np.median(times))


def sgemm_seconds(cupy, n):
    a = cupy.random.standard_normal((n, n), dtype=cupy.float32)
    b = cupy.random.standard_normal((n, n), dtype=cupy.float32)
    c = cupy.empty_like(a)
    return median_event_seconds(cupy, lambda: cupy.matmul(a, b, out=c))


def copy_seconds(cupy, nbytes):
    source = cupy.random.standard_normal(nbytes // 4, dtype=cupy.float32)  # not zeros
    target = cupy.empty_like(source)
    return median_event_seconds(cupy, lambda: cupy.copyto(target, source))


def ceilings(cupy, report, n=8192, nbytes=1 << 30):
    seconds = sgemm_seconds(cupy, n)
    sgemm = report.add("sgemm_ceiling", n=n, seconds=seconds, flops_per_s=2 * n**3 / seconds)
    seconds = copy_seconds(cupy, nbytes)
    copy = report.add(
        "copy_ceiling", bytes=2 * nbytes, seconds=seconds, bytes_per_s=2 * nbytes / seconds
    )
    cupy.get_default_memory_pool().free_all_blocks()
    return sgemm["flops_per_s"], copy["bytes_per_s"]


def gpu_fit(cupy, cuda, C, Ct, shape, factors, dtype, iterations, keep=()):
    """Per-iteration (user-half, item-half) seconds; host factors after the ``keep`` iterations."""
    X, Y = (cuda.to_device(a) for a in starting_factors(shape, factors, dtype))
    halves, kept = [], {}
    for iteration in range(1, iterations + 1):
        events = [cupy.cuda.Event() for _ in range(3)]
        events[0].record()
        cuda.solve(C, X, Y, cuda.gram(Y, REGULARIZATION), CG_STEPS)
        events[1].record()
        cuda.solve(Ct, Y, X, cuda.gram(X, REGULARIZATION), CG_STEPS)
        events[2].record()
        events[2].synchronize()
        halves.append(
            tuple(cupy.cuda.get_elapsed_time(events[i], events[i + 1]) / 1e3 for i in (0, 1))
        )
        if iteration in keep:
            kept[iteration] = (cuda.to_host(X), cuda.to_host(Y))
    finite = cuda.all_finite(X) and cuda.all_finite(Y)
    del X, Y
    return halves, kept, finite


def cpu_fit(cpu, Cui, Ciu, factors, iterations, keep=()):
    """Per-iteration (user-half, item-half) wall seconds of the Numba backend; kept factors."""
    X, Y = starting_factors(Cui.shape, factors, np.float32)
    halves, kept = [], {}
    with cpu.threads():
        for iteration in range(1, iterations + 1):
            start = time.perf_counter()
            cpu.solve(Cui, X, Y, cpu.gram(Y, REGULARIZATION), CG_STEPS)
            middle = time.perf_counter()
            cpu.solve(Ciu, Y, X, cpu.gram(X, REGULARIZATION), CG_STEPS)
            halves.append((middle - start, time.perf_counter() - middle))
            if iteration in keep:
                kept[iteration] = (X.copy(), Y.copy())
    return halves, kept


def fit_measurement(report, kind, halves, shape, nnz, factors, dtype, ceiling, warmup, **extra):
    timed = halves[warmup:] or halves
    users = float(np.median([h[0] for h in timed]))
    items = float(np.median([h[1] for h in timed]))
    itemsize = np.dtype(dtype).itemsize
    fu, bu = work_per_half(shape[0], shape[1], nnz, factors, itemsize)
    fi, bi = work_per_half(shape[1], shape[0], nnz, factors, itemsize)
    fields = {
        "factors": factors,
        "dtype": np.dtype(dtype).name,
        "cg_steps": CG_STEPS,
        "user_half_seconds": users,
        "item_half_seconds": items,
        "iteration_seconds": users + items,
        "all_halves": halves,
        "flops": fu + fi,
        "bytes": bu + bi,
        **extra,
    }
    if ceiling:
        flops_rate, bytes_rate = ceiling
        fields["flops_fraction"] = (fu + fi) / (users + items) / flops_rate
        fields["bytes_fraction"] = (bu + bi) / (users + items) / bytes_rate
    return report.add(kind, **fields)


def topk_measurement(cupy, cuda, report, dtype, ceiling, n_queries, n_items):
    rng = cupy.random.default_rng(3)
    items = (rng.standard_normal((n_items, 128), dtype=cupy.float32) * 0.1).astype(dtype)
    queries = (rng.standard_normal((n_queries, 128), dtype=cupy.float32) * 0.1).astype(dtype)
    cuda.topk(queries[: max(n_queries // 100, 1)], items, 10)  # warm-up: kernels, cuBLAS
    cupy.cuda.Device().synchronize()
    start = time.perf_counter()
    ids, scores = cuda.topk(queries, items, 10)  # host arrays: the final copy is included
    seconds = time.perf_counter() - start
    flops, moved = 2 * n_queries * n_items * 128, 2 * 4 * n_queries * n_items
    report.add(
        "topk",
        dtype=np.dtype(dtype).name,
        queries=n_queries,
        items=n_items,
        factors=128,
        k=10,
        seconds=seconds,
        flops_fraction=flops / seconds / ceiling[0],
        bytes_fraction=moved / seconds / ceiling[1],
        padded=int((ids < 0).sum()),
        finite=bool(np.isfinite(scores).all()),
    )
    del items, queries
    cupy.get_default_memory_pool().free_all_blocks()


def implicit_measurement(report, Cui, factors=128):
    try:
        from implicit.cpu.als import AlternatingLeastSquares as ImplicitALS
    except ImportError as exc:
        report.skip("implicit CPU ALS", f"implicit is not importable here ({exc})")
        return
    seconds = {}
    for iterations in (1, 3):
        model = ImplicitALS(
            factors=factors,
            iterations=iterations,
            regularization=REGULARIZATION,
            calculate_training_loss=False,
            random_state=0,
        )
        start = time.perf_counter()
        model.fit(Cui, show_progress=False)
        seconds[iterations] = time.perf_counter() - start
    report.add(
        "implicit_cpu",
        factors=factors,
        dtype="float32",
        iteration_seconds=(seconds[3] - seconds[1]) / 2,
        fit_seconds=seconds,
        threads=os.cpu_count(),
    )


def record_device(cupy, cuda, report):
    """The GPU's name, SM count, memory and CUDA runtime, in the result's provenance."""
    props = cupy.cuda.runtime.getDeviceProperties(cuda.device_id)
    report.data["provenance"]["device"] = {
        "name": props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"]),
        "sms": cuda.sm_count,
        "memory_bytes": int(props["totalGlobalMem"]),
        "cupy": cupy.__version__,
        "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
    }
    report.save(render=False)


def run(args, report):
    import cupy

    cuda = get_backend("cuda")
    record_device(cupy, cuda, report)
    ceiling = ceilings(cupy, report, args.sgemm_n, args.copy_bytes)

    started = time.perf_counter()
    Cui = ml20m_like(**{k: int(v * args.scale) if k != "min_user" else v for k, v in ML20M.items()})
    Ciu = Cui.T.tocsr()
    report.add("matrix", build_seconds=time.perf_counter() - started, **matrix_stats(Cui))
    C, Ct = cuda.to_device(Cui), cuda.to_device(Ciu)

    cpu = get_backend("cpu", num_threads=0)
    warm = ml20m_like(200, 100, 2000, 50, 40, 2, seed=1)  # compile Numba outside the timing
    cpu_fit(cpu, warm, warm.T.tocsr(), 4, 1)

    cpu_kept = {}
    if report.left() > 120:
        halves, cpu_kept = cpu_fit(cpu, Cui, Ciu, 128, 5, keep=(1, 5))
        fit_measurement(report, "numba_cpu", halves, Cui.shape, Cui.nnz, 128, np.float32, None, 0)
    else:
        report.skip("numba 128", "time budget")

    for dtype in (np.float32, np.float16):
        for factors in (128, 64, 256):
            if report.left() < 20:
                report.skip(f"gpu {factors} {np.dtype(dtype).name}", "time budget")
                continue
            agree = factors == 128 and dtype == np.float32 and cpu_kept
            iterations = 5 if agree else 4
            halves, kept, finite = gpu_fit(
                cupy,
                cuda,
                C,
                Ct,
                Cui.shape,
                factors,
                dtype,
                iterations,
                keep=(1, 5) if agree else (),
            )
            fit_measurement(
                report,
                "cuda",
                halves,
                Cui.shape,
                Cui.nnz,
                factors,
                dtype,
                ceiling,
                1,
                finite=finite,
            )
            if agree:
                for iteration in (1, 5):
                    gpu_x, gpu_y = kept[iteration]
                    cpu_x, cpu_y = cpu_kept[iteration]
                    report.add(
                        "agreement_with_numba",
                        iteration=iteration,
                        factors=128,
                        user_factors=max_relative_difference(gpu_x, cpu_x),
                        item_factors=max_relative_difference(gpu_y, cpu_y),
                    )
            cupy.get_default_memory_pool().free_all_blocks()

    for factors in (64, 256):
        if report.left() < 60:
            report.skip(f"numba {factors}", "time budget")
            continue
        halves, _ = cpu_fit(cpu, Cui, Ciu, factors, 1)
        fit_measurement(
            report, "numba_cpu", halves, Cui.shape, Cui.nnz, factors, np.float32, None, 0
        )

    for dtype in (np.float32, np.float16):
        if report.left() < 25:
            report.skip(f"topk {np.dtype(dtype).name}", "time budget")
            continue
        topk_measurement(cupy, cuda, report, dtype, ceiling, args.topk_queries, args.topk_items)

    if report.left() > 40:
        implicit_measurement(report, Cui)
    else:
        report.skip("implicit CPU ALS", "time budget")


def dry_run(args, report):
    """No GPU: build the matrix at ``--scale`` and report it and the work model."""
    Cui = ml20m_like(
        **{k: max(int(v * args.scale), 2) if k != "min_user" else v for k, v in ML20M.items()}
    )
    report.add("matrix", **matrix_stats(Cui))
    for factors in (64, 128, 256):
        flops, moved = work_per_half(Cui.shape[0], Cui.shape[1], Cui.nnz, factors, 4)
        report.add("work_model_user_half", factors=factors, flops=flops, bytes=moved)


def main(argv=None):
    parser = harness.argument_parser("gpu bench", __doc__)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--budget", type=float, default=170.0, help="seconds for everything")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of ML-20M's size")
    parser.add_argument("--sgemm-n", type=int, default=8192, help="SGEMM ceiling size")
    parser.add_argument("--copy-bytes", type=int, default=1 << 30, help="copy ceiling size")
    parser.add_argument("--topk-queries", type=int, default=100_000)
    parser.add_argument("--topk-items", type=int, default=1_000_000)
    parser.add_argument("--dry-run", action="store_true", help="no GPU: the matrix and plan only")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    params = {"scale": args.scale, "budget_s": args.budget, "dry_run": args.dry_run}
    report = Report(args.out, args.budget, harness.command_line("gpu bench", argv), params)
    status = 0
    if args.dry_run:
        dry_run(args, report)
    else:
        try:
            run(args, report)
        except BackendUnavailable as exc:
            report.skip("everything", str(exc))
            status = 2
    report.save()
    return status
