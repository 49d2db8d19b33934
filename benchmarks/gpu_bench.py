"""GPU benchmark: seconds per ALS iteration on CUDA and on the Numba CPU backend, same machine.

Run on a machine with CuPy and a CUDA device, from the repository root::

    PYTHONPATH=. python benchmarks/gpu_bench.py --out benchmarks/results/gpu [--quick]

It first checks correctness (GPU factors and top-k against the NumPy reference on a small
matrix; it stops with exit status 1 if they disagree), then times full iterations (Gram
matrices and both half-solves, cg_steps=3) on an ML-20M-shaped synthetic power-law matrix
and on MovieLens from ``$ALS_DATA_DIR`` when present. GPU time is measured with CUDA events
after a warm-up iteration; the CPU baseline runs one iteration per size within a time box.
Results go to ``OUT/gpu_bench.json`` and ``OUT/gpu_bench.md``.

Counting (per iteration = two half-iterations; a half-iteration solves R rows against the
C rows of the other side with nnz stored entries, f factors, s = cg_steps, b bytes per
stored factor value):

    FLOPs = sum over halves of  2 C f^2  +  (s + 1) (2 R f^2 + 4 nnz f)
    bytes = sum over halves of  C f b  +  2 R f b  +  (s + 1) nnz (8 + f b)

The FLOPs count the Gram product, A x and every A p (Y^T Y p: 2 f^2 per row; the sparse part:
a dot product and an axpy, 4 f per entry) and leave out vector updates. The bytes are a
no-cache traffic model (every CG pass re-reads the entries and gathers their factor rows):
the L2 cache serves part of it, so "% of peak bandwidth" can approach or pass 100%.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse

from als.fitting import initial_factors, training_loss
from backends.base import BackendUnavailable, get_backend

ML20M_SHAPE = (138_493, 26_744, 20_000_263)
#: (FP32 TFLOP/s without tensor cores, memory TB/s) by device name, from NVIDIA's data sheets
KNOWN_PEAKS = {
    "H200": (67.0, 4.8),
    "H100 80GB HBM3": (67.0, 3.35),
    "H100 SXM": (67.0, 3.35),
    "H100 NVL": (60.0, 3.9),
    "H100 PCIe": (51.0, 2.0),
    "A100-SXM4-80GB": (19.5, 2.04),
    "A100-SXM4-40GB": (19.5, 1.56),
    "A100-PCIE": (19.5, 1.56),
}
#: FP32 lanes per SM by compute capability, for devices not in KNOWN_PEAKS
FP32_PER_SM = {(8, 0): 64, (8, 6): 128, (8, 9): 128, (9, 0): 128, (10, 0): 128, (12, 0): 128}


def power_law_csr(n_users, n_items, nnz, seed=0):
    """A users x items CSR of ~nnz ratings 1..5, Zipf-like activity and popularity, vectorised."""
    rng = np.random.default_rng(seed)
    # inverse-CDF sampling of p(k) ~ k^-0.5 (users) and k^-0.9 (items), then shuffled ids
    draws = int(nnz * 1.25)
    users = _zipf_ranks(rng, n_users, 0.5, draws)
    items = _zipf_ranks(rng, n_items, 0.9, draws)
    users = rng.permutation(n_users)[users]
    items = rng.permutation(n_items)[items]
    keys = np.unique(users * n_items + items)
    if len(keys) > nnz:
        keys = np.sort(rng.choice(keys, size=nnz, replace=False))
    rows, columns = keys // n_items, (keys % n_items).astype(np.int32)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_users), out=indptr[1:])
    ratings = rng.integers(1, 6, size=len(keys)).astype(np.float32)
    return scipy.sparse.csr_matrix((ratings, columns, indptr), shape=(n_users, n_items))


def _zipf_ranks(rng, n, exponent, size):
    """``size`` ranks in [0, n) drawn with probability ~ (rank + 1)^-exponent (0 < exponent < 1)."""
    power = 1 - exponent
    ranks = (1 + rng.random(size) * (n**power - 1)) ** (1 / power)
    return np.minimum(ranks.astype(np.int64) - 1, n - 1)


def movielens(data_dir):
    """(name, CSR) for the largest MovieLens ratings file under ``data_dir``, or None."""
    import pandas as pd

    candidates = [
        ("ml-20m", "ml-20m/ratings.csv", ","),
        ("ml-1m", "ml-1m/ratings.dat.gz", "::"),
        ("ml-1m", "ml-1m/ratings.dat", "::"),
    ]
    for name, relative, separator in candidates:
        path = Path(data_dir) / relative
        if not path.exists():
            continue
        if separator == "::":
            import gzip
            import io

            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", encoding="latin-1") as file:
                text = file.read().replace("::", "\t")
            frame = pd.read_csv(io.StringIO(text), sep="\t", header=None, usecols=[0, 1, 2])
        else:
            frame = pd.read_csv(path, usecols=[0, 1, 2])
        users, user_ids = np.unique(frame.iloc[:, 0].to_numpy(), return_inverse=True)
        items, item_ids = np.unique(frame.iloc[:, 1].to_numpy(), return_inverse=True)
        matrix = scipy.sparse.csr_matrix(
            (frame.iloc[:, 2].to_numpy(np.float32), (user_ids, item_ids)),
            shape=(len(users), len(items)),
        )
        matrix.sum_duplicates()
        return name, matrix
    return None


def device_info(cupy):
    """Name and peak FP32 FLOP/s and memory bytes/s of the current device, with the source."""
    device = cupy.cuda.runtime.getDevice()
    props = cupy.cuda.runtime.getDeviceProperties(device)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    info = {
        "name": name,
        "sms": props["multiProcessorCount"],
        "memory_bytes": props["totalGlobalMem"],
    }
    for label, (tflops, tbps) in KNOWN_PEAKS.items():
        if label in name:
            info.update(peak_flops=tflops * 1e12, peak_bytes=tbps * 1e12, peak_source="data sheet")
            return info

    def attribute(key, number):  # CUDA 13 dropped some fields from cudaDeviceProp
        if key in props:
            return props[key]
        return cupy.cuda.runtime.deviceGetAttribute(number, device)

    clock_khz, memory_khz, bus_bits = (
        attribute("clockRate", 13),
        attribute("memoryClockRate", 36),
        attribute("memoryBusWidth", 37),
    )
    lanes = FP32_PER_SM.get((props["major"], props["minor"]), 128)
    info.update(
        peak_flops=2 * lanes * props["multiProcessorCount"] * clock_khz * 1e3,
        peak_bytes=2 * memory_khz * 1e3 * bus_bits / 8,
        peak_source="device attributes (boost clock)",
    )
    return info


def work_per_iteration(Cui, factors, cg_steps, itemsize):
    """(FLOPs, bytes) of one iteration by the formulas in the module docstring."""
    n_users, n_items = Cui.shape
    flops = bytes_moved = 0
    for rows, other in ((n_users, n_items), (n_items, n_users)):
        passes = cg_steps + 1
        flops += 2 * other * factors**2 + passes * (2 * rows * factors**2 + 4 * Cui.nnz * factors)
        bytes_moved += (other + 2 * rows) * factors * itemsize
        bytes_moved += passes * Cui.nnz * (8 + factors * itemsize)
    return flops, bytes_moved


def iteration(backend, Cui, Ciu, X, Y, regularization, cg_steps):
    backend.solve(Cui, X, Y, backend.gram(Y, regularization), cg_steps)
    backend.solve(Ciu, Y, X, backend.gram(X, regularization), cg_steps)


def starting_factors(shape, factors, dtype, seed):
    """User and item factors as ``AlternatingLeastSquares.fit`` draws them from ``seed``."""
    rng = np.random.default_rng(seed)
    return tuple(initial_factors(rng, rows, factors, dtype) for rows in shape)


def time_gpu(cuda, cupy, Cui, factors, iterations, cg_steps, dtype=np.float32):
    """Seconds per iteration (CUDA events, after one warm-up iteration) and the final loss."""
    Ciu = Cui.T.tocsr()
    C, Ct = cuda.to_device(Cui), cuda.to_device(Ciu)
    X, Y = (cuda.to_device(a) for a in starting_factors(Cui.shape, factors, dtype, seed=0))
    iteration(cuda, C, Ct, X, Y, 0.01, cg_steps)  # compiles, allocates, warms caches
    seconds = []
    for _ in range(iterations):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        iteration(cuda, C, Ct, X, Y, 0.01, cg_steps)
        stop.record()
        stop.synchronize()
        seconds.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    loss = training_loss(cuda, C, X, Y, 0.01)
    del C, Ct, X, Y
    cupy.get_default_memory_pool().free_all_blocks()
    return float(np.median(seconds)), seconds, loss


def time_cpu(cpu, Cui, factors, iterations, cg_steps):
    """Seconds per iteration of the Numba backend (wall clock; JIT compiled beforehand)."""
    Ciu = Cui.T.tocsr()
    X, Y = starting_factors(Cui.shape, factors, np.float32, seed=0)
    seconds = []
    with cpu.threads():
        for _ in range(iterations):
            start = time.perf_counter()
            iteration(cpu, Cui, Ciu, X, Y, 0.01, cg_steps)
            seconds.append(time.perf_counter() - start)
    return float(np.median(seconds)), seconds


def check_correctness(cuda, reference):
    """GPU CG factors and top-k against the NumPy reference on a small power-law matrix."""
    Cui = power_law_csr(2000, 1000, 60_000, seed=1)
    failures = []
    for factors in (7, 64, 129):
        # zero-mean factors: a well-conditioned Y^T Y, so rounding differences stay small
        rng = np.random.default_rng(factors)
        X = (rng.standard_normal((Cui.shape[0], factors)) * 0.1).astype(np.float32)
        Y = (rng.standard_normal((Cui.shape[1], factors)) * 0.1).astype(np.float32)
        expected = X.copy()
        reference.solve(Cui, expected, Y, reference.gram(Y, 0.05), 3)
        X_device = cuda.to_device(X)
        Y_device = cuda.to_device(Y)
        cuda.solve(cuda.to_device(Cui), X_device, Y_device, cuda.gram(Y_device, 0.05), 3)
        difference = np.abs(cuda.to_host(X_device) - expected).max() / np.abs(expected).max()
        if not difference <= 2e-3:
            failures.append(f"cg_solve factors={factors}: max relative difference {difference:.2e}")
    rng = np.random.default_rng(0)
    queries = rng.integers(-3, 4, (300, 8)).astype(np.float32)
    items = rng.integers(-3, 4, (1000, 8)).astype(np.float32)
    expected = reference.topk(queries, items, 20, Cui[:300])
    got = cuda.topk(cuda.to_device(queries), cuda.to_device(items), 20, cuda.to_device(Cui[:300]))
    if not (np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])):
        failures.append("topk: ids or scores differ from the reference")
    return failures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for JSON + markdown")
    parser.add_argument("--quick", action="store_true", help="a 1/10-size matrix, 2 iterations")
    parser.add_argument("--factors", default="64,128,256", help="comma-separated sizes")
    parser.add_argument("--cg-steps", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=5, help="timed GPU iterations")
    parser.add_argument("--cpu-budget", type=float, default=150.0, help="seconds for the CPU")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        import cupy

        cuda = get_backend("cuda")
    except (ImportError, BackendUnavailable) as exc:
        print(f"no GPU benchmark: {exc}", file=sys.stderr)
        return 2
    device = device_info(cupy)
    print(
        f"device: {device['name']}, {device['sms']} SMs; peaks from {device['peak_source']}: "
        f"{device['peak_flops'] / 1e12:.1f} TFLOP/s FP32, {device['peak_bytes'] / 1e12:.2f} TB/s"
    )
    failures = check_correctness(cuda, get_backend("numpy"))
    results = {
        "device": device,
        "correctness_failures": failures,
        "runs": [],
        "args": dict(vars(args)),
    }
    results["args"]["out"] = str(args.out)
    if failures:
        print("correctness check FAILED:\n  " + "\n  ".join(failures))
        write_reports(args.out, results)
        return 1
    print("correctness check passed (CG factors 7/64/129, top-k with ties and exclusions)")

    scale = 10 if args.quick else 1
    iterations = 2 if args.quick else args.iterations
    started = time.perf_counter()
    datasets = [
        (
            f"synthetic ML-20M shape 1/{scale}" if scale > 1 else "synthetic ML-20M shape",
            power_law_csr(*(n // scale for n in ML20M_SHAPE), seed=0),
        )
    ]
    print(
        f"built {datasets[0][0]}: {datasets[0][1].shape}, {datasets[0][1].nnz:,} entries "
        f"in {time.perf_counter() - started:.1f}s"
    )
    found = movielens(os.environ["ALS_DATA_DIR"]) if os.environ.get("ALS_DATA_DIR") else None
    if found:
        datasets.append(found)
    cpu = get_backend("cpu", num_threads=0)
    warm = power_law_csr(200, 100, 2000)  # compile the Numba kernels outside the timing
    time_cpu(cpu, warm, 4, 1, args.cg_steps)
    cpu_left = args.cpu_budget
    for name, Cui in datasets:
        last_cpu = None
        for factors in (int(f) for f in args.factors.split(",")):
            gpu_seconds, all_gpu, loss = time_gpu(
                cuda, cupy, Cui, factors, iterations, args.cg_steps
            )
            flops, bytes_moved = work_per_iteration(Cui, factors, args.cg_steps, 4)
            run = {
                "dataset": name,
                "shape": list(Cui.shape),
                "nnz": int(Cui.nnz),
                "factors": factors,
                "cg_steps": args.cg_steps,
                "gpu_seconds": gpu_seconds,
                "gpu_seconds_all": all_gpu,
                "gpu_loss": loss,
                "flops": flops,
                "bytes": bytes_moved,
                "gflops": flops / gpu_seconds / 1e9,
                "flops_fraction": flops / gpu_seconds / device["peak_flops"],
                "gbytes_per_s": bytes_moved / gpu_seconds / 1e9,
                "bandwidth_fraction": bytes_moved / gpu_seconds / device["peak_bytes"],
            }
            # CG cost grows at most like f^2: skip the CPU when that would pass the budget
            guess = None if last_cpu is None else last_cpu[1] * (factors / last_cpu[0]) ** 2
            if cpu_left > 0 and (guess is None or guess < cpu_left):
                cpu_seconds, _ = time_cpu(cpu, Cui, factors, 1, args.cg_steps)
                cpu_left -= cpu_seconds
                last_cpu = (factors, cpu_seconds)
                run.update(cpu_seconds=cpu_seconds, cpu_over_gpu=cpu_seconds / gpu_seconds)
            else:
                run.update(cpu_seconds=None, cpu_over_gpu=None, cpu_note="skipped: time box")
            results["runs"].append(run)
            cpu_text = "skipped" if run["cpu_seconds"] is None else f"{run['cpu_seconds']:.2f}s"
            print(
                f"{name} f={factors}: gpu {gpu_seconds:.4f}s/it, cpu {cpu_text}/it, "
                f"{run['gflops']:.0f} GFLOP/s ({100 * run['flops_fraction']:.1f}% of peak), "
                f"{run['gbytes_per_s']:.0f} GB/s ({100 * run['bandwidth_fraction']:.1f}%)"
            )
    write_reports(args.out, results)
    return 0


def write_reports(out, results):
    (out / "gpu_bench.json").write_text(json.dumps(results, indent=2, default=float))
    device = results["device"]
    lines = [
        f"# GPU benchmark on {device['name']}",
        "",
        f"Peaks ({device['peak_source']}): {device['peak_flops'] / 1e12:.1f} TFLOP/s FP32, "
        f"{device['peak_bytes'] / 1e12:.2f} TB/s. Seconds per iteration: GPU median of timed "
        "iterations (CUDA events, after a warm-up), CPU = Numba backend, all cores, one iteration.",
        "",
        "FLOPs per half-iteration = 2 C f^2 + (s+1)(2 R f^2 + 4 nnz f); bytes = C f b + 2 R f b "
        "+ (s+1) nnz (8 + f b) (no-cache model; R rows solved, C rows of the other side, "
        "s = cg_steps, b = 4).",
        "",
    ]
    if results["correctness_failures"]:
        lines += ["**Correctness check failed:**", ""]
        lines += [f"- {failure}" for failure in results["correctness_failures"]]
    else:
        lines += [
            "| data | users x items | nnz | f | GPU s/it | CPU s/it | CPU/GPU | GFLOP/s (% peak)"
            " | GB/s (% peak) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for run in results["runs"]:
            cpu = "—" if run["cpu_seconds"] is None else f"{run['cpu_seconds']:.2f}"
            ratio = "—" if run["cpu_over_gpu"] is None else f"{run['cpu_over_gpu']:.1f}x"
            lines.append(
                f"| {run['dataset']} | {run['shape'][0]:,} x {run['shape'][1]:,} | {run['nnz']:,} "
                f"| {run['factors']} | {run['gpu_seconds']:.4f} | {cpu} | {ratio} "
                f"| {run['gflops']:.0f} ({100 * run['flops_fraction']:.1f}%) "
                f"| {run['gbytes_per_s']:.0f} ({100 * run['bandwidth_fraction']:.1f}%) |"
            )
    (out / "gpu_bench.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
