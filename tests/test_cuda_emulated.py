"""``CupyBackend`` on the emulated device (tests/fake_cupy.py, tests/cuda_emulation), in CI.

The fake CuPy runs the real CUDA C++ of ``backends/kernels`` compiled for the CPU, with every
launch's arguments checked against the kernel's C++ signature, and the results are compared
with the NumPy reference backend. Tolerances: float64 1e-10 (summation order only), float32
2e-4 (a few ulps per warp-tree sum against BLAS's order, grown by 3 CG steps: the CPU
backends' comparisons in test_backends.py allow 2e-3, these inputs are small and
well-conditioned), float16 storage 2e-3 (the result rounded to half precision, 2**-11
relative, after CG steps taken in float32 from half inputs). Top-k runs on integer factors,
exact in every dtype, so ids and scores must be identical.
"""

from __future__ import annotations

import numpy as np
import pytest

import als.backends.cupy_cuda as cupy_cuda
from tests import cuda_emulation, fake_cupy
from tests.test_cuda import compare_topk as compare_with_reference
from tests.test_cuda import integer_topk_case
from tests.test_cuda_plan import awkward_matrix, operands, per_row_lambdas, relative

TOLERANCE = {np.float64: 1e-10, np.float32: 2e-4, np.float16: 2e-3}


pytestmark = pytest.mark.skipif(
    cuda_emulation.compiler() is None, reason="no host C++ compiler (g++) for the emulation"
)


@pytest.fixture
def fake(monkeypatch):
    launches = fake_cupy.install(monkeypatch)
    cupy_cuda._module.cache_clear()
    backend = cupy_cuda.CupyBackend()
    yield backend, launches
    cupy_cuda._module.cache_clear()


def reference_solve(Cui, X, Y, cg_steps):
    from als.backends.numpy_ref import NumpyBackend

    reference = NumpyBackend()
    host = np.float64 if X.dtype == np.float64 else np.float32
    expected, Y_host = X.astype(host), Y.astype(host)
    reference.solve(Cui.astype(host), expected, Y_host, reference.gram(Y_host, 0.05), cg_steps)
    return expected


def device_solve(cuda, Cui, X, Y, cg_steps):
    X_device, Y_device = cuda.to_device(X.copy()), cuda.to_device(Y)
    cuda.solve(cuda.to_device(Cui), X_device, Y_device, cuda.gram(Y_device, 0.05), cg_steps)
    return cuda.to_host(X_device)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("factors", [7, 64, 129])
def test_cg_solve_launches_match_reference(fake, dtype, factors):
    cuda, launches = fake
    Cui = awkward_matrix(seed=factors)  # a row of 900 entries: 4 chunks, added atomically
    X, Y = operands(Cui, factors, dtype, seed=factors)
    got = device_solve(cuda, Cui, X, Y, 3)
    assert got.dtype == dtype
    assert relative(got, reference_solve(Cui, X, Y, 3)) <= TOLERANCE[dtype]
    names = {call[0] for call in launches.calls}
    assert names == set(cupy_cuda.cg_kernel_names(factors, dtype))
    vector = factors == 64 and dtype != np.float64
    assert any(name.endswith("true>") for name in names) == vector


def test_cg_solve_of_a_misaligned_view_falls_back_to_the_strided_layout(fake):
    cuda, launches = fake
    Cui = awkward_matrix()
    X, Y = operands(Cui, 128, np.float32)  # float4 loads need 16-byte aligned rows
    padded = np.concatenate([np.zeros(1, np.float32), Y.ravel()])
    Y_device = cuda.to_device(padded[1:].reshape(Y.shape))  # a view one float in
    assert Y_device.data.ptr % 16 != 0
    X_device = cuda.to_device(X.copy())
    cuda.solve(cuda.to_device(Cui), X_device, Y_device, cuda.gram(Y_device, 0.05), 3)
    assert relative(cuda.to_host(X_device), reference_solve(Cui, X, Y, 3)) <= 2e-4
    assert "cg_sparse<float, 4, false>" in {call[0] for call in launches.calls}


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_exact_solve_matches_reference(fake, dtype):
    cuda, _ = fake
    Cui = awkward_matrix()
    X, Y = operands(Cui, 9, dtype, seed=3)
    got = device_solve(cuda, Cui, X, Y, None)
    tolerance = {np.float16: 1e-3, np.float32: 1e-4, np.float64: 1e-10}[dtype]
    assert relative(got, reference_solve(Cui, X, Y, None)) <= tolerance


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("cg_steps", [3, None])
def test_per_row_lambda_solves_match_reference(fake, dtype, cg_steps):
    # the per-row lambda of the opt-in nu, in the factor dtype as the fit core passes it: the
    # chunked CG kernels run (no fallback to array code), and so does the chunk-Gram exact solve
    from als.backends.numpy_ref import NumpyBackend

    cuda, launches = fake
    Cui = awkward_matrix(seed=11)
    X, Y = operands(Cui, 32, dtype, seed=11)
    lambdas = per_row_lambdas(Cui, dtype)
    host = np.float64 if dtype == np.float64 else np.float32
    reference = NumpyBackend()
    expected, Y_host = X.astype(host), Y.astype(host)
    YtY = reference.gram(Y_host, 0.0)
    reference.solve(Cui.astype(host), expected, Y_host, YtY, cg_steps, lambdas.astype(host))
    X_device, Y_device = cuda.to_device(X.copy()), cuda.to_device(Y)
    cuda.solve(
        cuda.to_device(Cui),
        X_device,
        Y_device,
        cuda.gram(Y_device, 0.0),
        cg_steps,
        cuda.to_device(lambdas),
    )
    got = cuda.to_host(X_device)
    assert got.dtype == dtype
    exact_tolerance = {np.float16: 1e-3, np.float32: 1e-4, np.float64: 1e-10}
    tolerance = TOLERANCE[dtype] if cg_steps else exact_tolerance[dtype]
    assert relative(got, expected) <= tolerance
    names = {call[0] for call in launches.calls}
    assert names == (set(cupy_cuda.cg_kernel_names(32, dtype)) if cg_steps else set())
    short = cuda.to_device(lambdas[:-1])
    with pytest.raises(ValueError, match="row_regularization"):
        cuda.solve(cuda.to_device(Cui), X_device, Y_device, cuda.gram(Y_device, 0.0), 3, short)


@pytest.mark.parametrize("use_cg", [True, False])
def test_a_fit_with_the_model_options_matches_reference_on_the_stand_in(fake, use_cg):
    # the whole fit through CupyBackend: confidences and alpha0 folded in by the fit core,
    # per-row lambdas (nu) in the chunked solve, the loss from loss_parts/squared_norm
    from als import AlternatingLeastSquares

    _, launches = fake
    matrix = awkward_matrix(seed=12).astype(np.float32)
    matrix.data = np.abs(matrix.data)  # weights for the confidence function, all liked
    options = {"confidence": "hkv", "alpha": 2.0, "alpha0": 0.3, "nu": 0.5}
    settings = {"factors": 8, "iterations": 3, "random_state": 4, "dtype": np.float64}
    settings.update(use_cg=use_cg, calculate_training_loss=True, regularization=0.01)
    fits, losses = [], []
    for name in ("numpy", "cuda"):
        model = AlternatingLeastSquares(**settings, **options, backend=name)
        model.fit(matrix, show_progress=False, callback=lambda i, s, loss: losses.append(loss))
        fits.append(model)
    assert len(losses) == 6  # one per iteration
    losses = losses[2], losses[5]  # the last iteration's of each fit
    # float64 on both sides, sums in different orders, grown by 3 iterations of 3 CG steps
    # (test_options.py's bound for the CPU backend)
    for side in ("user_factors", "item_factors"):
        expected, actual = (getattr(f, side) for f in fits)
        assert relative(actual, expected) <= 1e-8
    assert losses[1] == pytest.approx(losses[0], rel=1e-8)
    names = {call[0] for call in launches.calls}
    assert names == (set(cupy_cuda.cg_kernel_names(8, np.float64)) if use_cg else set())


def integer_case(n_items, n_queries, seed=5):
    """test_cuda's integer top-k case with fewer exclusions, as the stand-in runs on the CPU."""
    return integer_topk_case(n_items, n_queries, seed, excluded_per_row=500)


def compare_topk(cuda, factors, queries, k, dtype, exclude=None, exclude_all=None, norms=None):
    """test_cuda's comparison with the NumPy reference, on the CuPy stand-in."""
    from als.backends.numpy_ref import NumpyBackend

    return compare_with_reference(
        cuda, NumpyBackend(), factors, queries, k, exclude, exclude_all, norms, dtype
    )


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_topk_in_segments_matches_reference(fake, dtype):
    cuda, launches = fake
    factors, queries, exclude = integer_case(40_000, 7)  # two segments per query
    norms = np.linalg.norm(factors.astype(np.float32), axis=1)
    norms[norms == 0] = 1e-10  # as backends' norms() has it
    for k in (1, 10):
        compare_topk(cuda, factors, queries, k, dtype, exclude, np.array([0, 9]))
    compare_topk(cuda, factors, queries, 5, dtype, norms=norms)
    grids = [grid for name, grid, _ in launches.calls if name.startswith("topk_select")]
    assert grids and all(grid[0] == 2 * 7 for grid in grids)


def test_topk_with_one_query_per_batch_and_nan_last(fake, monkeypatch):
    cuda, launches = fake
    monkeypatch.setattr(cupy_cuda, "topk_batch_rows", lambda *args: 1)
    factors, queries, exclude = integer_case(300, 9)
    factors = factors.astype(np.float32)
    factors[[3, 8]] = np.nan
    got = compare_topk(cuda, factors, queries, 300, np.float32)
    assert set(got[0][:, -2:].ravel()) == {3, 8}
    assert sum(name.startswith("exclude_ids") for name, _, _ in launches.calls) == 9


def test_float16_scores_never_widen_the_factors(fake, monkeypatch):
    cuda, _ = fake
    widened = []
    original = fake_cupy.DeviceArray.astype

    def astype(self, dtype, *args, **kwargs):
        if self.dtype == np.float16 and np.dtype(dtype) == np.float32 and self.shape[0] > 100:
            widened.append(self.shape)
        return original(self, dtype, *args, **kwargs)

    monkeypatch.setattr(fake_cupy.DeviceArray, "astype", astype)
    factors, queries, _ = integer_case(1000, 20)
    compare_topk(cuda, factors, queries, 4, np.float16)
    assert widened == []


def test_out_of_memory_from_cublas_gets_the_helpful_message(fake, monkeypatch):
    cuda, _ = fake

    def no_workspace(*args, **kwargs):
        raise RuntimeError("CUBLAS_STATUS_ALLOC_FAILED")

    monkeypatch.setattr(cupy_cuda, "chunked_cg_solve", no_workspace)
    Cui = awkward_matrix()
    X, Y = operands(Cui, 8, np.float32)
    with pytest.raises(cupy_cuda.CudaOutOfMemoryError, match=r"120 rows x 8 factors.*CUBLAS"):
        device_solve(cuda, Cui, X, Y, 3)
    monkeypatch.setattr(cupy_cuda, "chunked_cg_solve", lambda *args, **kwargs: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # anything else goes through untouched
        device_solve(cuda, Cui, X, Y, 3)


def test_confidences_are_float32_on_the_device(fake):
    cuda, _ = fake
    Cui = cuda.to_device(awkward_matrix().astype(np.float64))
    assert Cui.data.dtype == np.float32 and Cui.indices.dtype == Cui.indptr.dtype == np.int32


def test_the_device_scripts_run_end_to_end_on_the_stand_in(fake, tmp_path, capsys, monkeypatch):
    # stage 0 and stage 3 as gpu_check.sh runs them, at toy sizes: a typo or a wrong call
    # in them would otherwise surface first on the device, in its 15 minutes. Stage 0 with
    # four of its CG cases (test_cuda_plan.py's dry run checks that all of them cover every
    # instance and runs each through the emulation)
    from benchmarks import gpu, gpu_smoke

    cases = [(np.dtype(np.float16), 64), (np.dtype(np.float32), 100), (np.dtype(np.float64), 7)]
    monkeypatch.setattr(gpu_smoke, "CG_CASES", cases)
    monkeypatch.setattr(gpu_smoke, "instances_covered", set)
    assert gpu.main(["compile", "--out", str(tmp_path)]) == 0
    assert "identical to the reference" in capsys.readouterr().out
    assert gpu.main(["tiny", "--out", str(tmp_path)]) == 0
    arguments = ["--out", str(tmp_path), "--scale", "0.001", "--budget", "600"]
    arguments += ["--sgemm-n", "64", "--copy-bytes", "4096"]
    arguments += ["--topk-queries", "50", "--topk-items", "2000"]
    assert gpu.main(["bench", *arguments]) == 0
    import json

    report = json.loads((tmp_path / "gpu_bench.json").read_text())
    kinds = [measurement["kind"] for measurement in report["measurements"]]
    for kind in ("sgemm_ceiling", "copy_ceiling", "matrix", "numba_cpu", "cuda", "topk"):
        assert kind in kinds
    assert kinds.count("cuda") == 6 and kinds.count("agreement_with_numba") == 2
    for agreement in (m for m in report["measurements"] if m["kind"] == "agreement_with_numba"):
        assert agreement["user_factors"] < 1e-2 and agreement["item_factors"] < 1e-2


# -- planted defects: what the real kernels on the emulated device catch ------------------------


def plant(monkeypatch, old, new, names):
    """The backend's unit with ``old`` replaced by ``new``, compiled with ``names`` only."""
    source = cupy_cuda.kernel_source()
    assert source.count(old) == 1
    monkeypatch.setattr(cupy_cuda, "kernel_source", lambda: source.replace(old, new))
    monkeypatch.setattr(cupy_cuda, "name_expressions", lambda: sorted(names))
    cupy_cuda._module.cache_clear()


def test_an_arithmetic_slip_in_a_kernel_fails_the_comparison(fake, monkeypatch):
    cuda, _ = fake
    Cui = awkward_matrix(seed=32)
    X, Y = operands(Cui, 32, np.float32, seed=32)
    expected = reference_solve(Cui, X, Y, 3)
    names = cupy_cuda.cg_kernel_names(32, np.float32)
    plant(
        monkeypatch, "x[offset + j] += alpha * pv[k];", "x[offset + j] += 2 * alpha * pv[k];", names
    )
    assert relative(device_solve(cuda, Cui, X, Y, 3), expected) > 100 * TOLERANCE[np.float32]


def test_an_off_by_one_at_the_top_k_cut_fails_the_comparison(fake, monkeypatch):
    cuda, _ = fake
    plant(
        monkeypatch,
        "if (tie && rank < remaining)",
        "if (tie && rank <= remaining)",
        ["exclude_ids<float>", "topk_select<float>"],
    )
    factors, queries, exclude = integer_case(300, 9)
    with pytest.raises((AssertionError, cuda_emulation.EmulationError)):
        compare_topk(cuda, factors, queries, 7, np.float32, exclude)
