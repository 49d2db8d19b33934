"""The CUDA backend: its sources compile wherever nvcc exists; on a GPU it matches the reference.

Three groups of tests:

- nvcc (run wherever ``nvcc`` is on PATH, GPU or not): every ``.cu`` file compiles on its
  own for sm_80 and sm_90, and so does the exact translation unit CuPy hands to NVRTC with
  every template instance the backend uses (templates are only type-checked once
  instantiated; a test shows that a template-only error is caught).
- no CuPy (run everywhere): a missing CuPy or device gives ``BackendUnavailable`` saying so.
- ``@pytest.mark.gpu`` (skipped, with the reason, without CuPy and a CUDA device): results
  against the NumPy reference backend.

Tolerances of the GPU tests. The CUDA kernels compute in float32 (float16 storage) or
float64, in another summation order than the reference (warp tree reductions versus BLAS),
so single results differ by a few ulps; 3 CG steps are not a contraction, so that difference
can grow by a few orders of magnitude within one solve. As in ``test_backends.py``, factors
are compared by the largest difference relative to the largest factor: 2e-3 for float32
(the shared suite's figure), and for float16 that plus the rounding of the stored result to
half precision (2**-11 relative), 3e-3 in all. The exact solve has no CG amplification:
1e-4 (float32). Top-k is checked on integer-valued factors, whose scores every backend
computes exactly, so ids and scores must be identical, ties included. Whole fits on CPU and
GPU from the same seed are compared as ``test_agreement.py`` compares us with implicit (whose
CPU backends differ by under 4e-3 there): 1e-2 after one and after five iterations.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

import backends.cupy_cuda as cupy_cuda
from als import AlternatingLeastSquares
from als.fitting import training_loss
from backends.base import BackendUnavailable, get_backend
from tests.conftest import power_law_matrix

NVCC = shutil.which("nvcc")
KERNEL_DIR = Path(cupy_cuda.__file__).parent / "kernels"
CUDA_FILES = sorted(path.name for path in KERNEL_DIR.glob("*.cu"))
ARCHS = ["sm_80", "sm_90"]

needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH: nothing to compile with")


def nvcc(source, tmp_path, arch, *include_dirs):
    """Compile ``source`` to an object file; return the finished process."""
    command = [NVCC, "-std=c++17", f"-arch={arch}", "-Werror", "all-warnings", "-c"]
    command += [f"-I{directory}" for directory in include_dirs]
    command += [str(source), "-o", str(tmp_path / f"{Path(source).stem}-{arch}.o")]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def instantiation_unit(source, expressions):
    """``source`` followed by a table that takes the address of every template instance."""
    table = ",\n".join(f"    reinterpret_cast<const void*>(&{name})" for name in expressions)
    return f"{source}\nconst void* als_kernel_instances[] = {{\n{table}\n}};\n"


# -- nvcc -----------------------------------------------------------------------------------------


@needs_nvcc
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", CUDA_FILES)
def test_each_cuda_file_compiles(name, arch, tmp_path):
    result = nvcc(KERNEL_DIR / name, tmp_path, arch)
    assert result.returncode == 0, result.stderr


@needs_nvcc
@pytest.mark.parametrize("arch", ARCHS)
def test_every_kernel_instance_compiles(arch, tmp_path):
    # exactly what cupy.RawModule gets, plus an instance of every name expression it uses
    unit = tmp_path / "instances.cu"
    unit.write_text(instantiation_unit(cupy_cuda.kernel_source(), cupy_cuda.name_expressions()))
    result = nvcc(unit, tmp_path, arch)
    assert result.returncode == 0, result.stderr


@needs_nvcc
def test_the_compile_check_sees_errors_inside_templates(tmp_path):
    good = "x[j] = to_compute(x_out[j]);"
    source = cupy_cuda.kernel_source()
    assert good in source
    broken = source.replace(good, "x[j] = to_compute(&x_out[j]);")  # no such overload
    unit = tmp_path / "broken.cu"
    unit.write_text(broken)
    assert nvcc(unit, tmp_path, "sm_90").returncode == 0, "uninstantiated: nvcc cannot see it"
    unit.write_text(instantiation_unit(broken, cupy_cuda.name_expressions()))
    result = nvcc(unit, tmp_path, "sm_90")
    assert result.returncode != 0 and "to_compute" in result.stderr


def test_every_kernel_template_has_name_expressions():
    source = cupy_cuda.kernel_source()
    declared = set(re.findall(r"__global__\s+void\s+(?:__launch_bounds__\(\d+\)\s+)?(\w+)", source))
    assert declared == set(cupy_cuda.KERNELS)
    for kernel in cupy_cuda.KERNELS:
        for dtype in cupy_cuda.DTYPES:
            assert cupy_cuda.name_expression(kernel, dtype) in cupy_cuda.name_expressions()
    assert not re.search(r'#include\s+"', source), "local includes must be pasted in"


def test_launch_geometry_fits_the_kernels_assumptions():
    for factors, itemsize in [(1, 4), (7, 4), (129, 4), (256, 8), (1536, 8)]:
        grid, block, shared = cupy_cuda.launch_geometry("cg_solve", 1001, factors, itemsize)
        warps = block[0] // 32
        assert block[0] % 32 == 0 and 32 <= block[0] <= 256
        assert grid[0] * warps >= 1001 > (grid[0] - 1) * warps
        assert shared == warps * 4 * factors * itemsize <= cupy_cuda.SHARED_MEMORY_LIMIT
    assert cupy_cuda.launch_geometry("cg_solve", 10, 4096, 8) is None
    assert cupy_cuda.launch_geometry("topk_select", 7)[0] == (7,)


# -- without CuPy ---------------------------------------------------------------------------------


def test_missing_cupy_is_named(monkeypatch):
    for module in ("cupy", "cupyx", "cupyx.scipy", "cupyx.scipy.sparse"):
        monkeypatch.setitem(sys.modules, module, None)  # makes `import cupy` fail
    with pytest.raises(BackendUnavailable, match=r"CuPy.*pip install cupy-cuda13x"):
        get_backend("cuda")
    with pytest.raises(BackendUnavailable, match="cupy-cuda12x for CUDA 12"):
        cupy_cuda.CupyBackend()


def test_missing_device_is_named(monkeypatch):
    def no_device():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_device))
    cupyx = types.ModuleType("cupyx")
    cupyx.scipy = types.ModuleType("cupyx.scipy")
    cupyx.scipy.sparse = types.ModuleType("cupyx.scipy.sparse")
    fakes = {"cupy": cupy, "cupyx": cupyx, "cupyx.scipy": cupyx.scipy}
    fakes["cupyx.scipy.sparse"] = cupyx.scipy.sparse
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
    with pytest.raises(BackendUnavailable, match="no usable CUDA device or driver.*NoDevice"):
        get_backend("cuda")


# -- on a GPU -------------------------------------------------------------------------------------

gpu = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda():
    try:
        return get_backend("cuda")
    except BackendUnavailable as exc:
        pytest.skip(f"the CUDA backend cannot run here: {exc}")


@pytest.fixture(scope="module")
def reference():
    return get_backend("numpy")


def awkward_matrix(seed=0):
    """300 x 400 power-law confidences, some negative, with rows of 0 and 1 entries."""
    matrix = power_law_matrix(300, 400, 6000, seed=seed, negative_fraction=0.1).tolil()
    matrix[0, :] = 0
    matrix[1, :] = 0
    matrix[1, 5] = 3.0
    matrix[2, :] = 0
    matrix[2, 9] = -2.0
    matrix = matrix.tocsr()
    matrix.eliminate_zeros()
    return matrix.astype(np.float32)


def max_relative_difference(got, expected):
    return float(np.abs(got.astype(np.float64) - expected).max() / np.abs(expected).max())


def solve_both(cuda, reference, dtype, factors, cg_steps, seed=0):
    """Solve the awkward matrix on the GPU and with the reference (on the same rounded inputs)."""
    rng = np.random.default_rng(seed)
    Cui = awkward_matrix(seed)
    X = (rng.standard_normal((Cui.shape[0], factors)) * 0.1).astype(dtype)
    Y = (rng.standard_normal((Cui.shape[1], factors)) * 0.1).astype(dtype)
    expected, Y_host = X.astype(np.float32), Y.astype(np.float32)
    X_device, Y_device = cuda.to_device(X.copy()), cuda.to_device(Y)
    cuda.solve(cuda.to_device(Cui), X_device, Y_device, cuda.gram(Y_device, 0.05), cg_steps)
    reference.solve(Cui, expected, Y_host, reference.gram(Y_host, 0.05), cg_steps)
    return cuda.to_host(X_device), expected, Cui


@gpu
@pytest.mark.parametrize("dtype, tolerance", [(np.float32, 2e-3), (np.float16, 3e-3)])
@pytest.mark.parametrize("factors", [1, 7, 100, 129])
def test_cg_solve_matches_reference(cuda, reference, dtype, tolerance, factors):
    got, expected, Cui = solve_both(cuda, reference, dtype, factors, cg_steps=3, seed=factors)
    assert got.dtype == dtype
    assert max_relative_difference(got, expected) <= tolerance
    assert (got[np.diff(Cui.indptr) == 0] == 0).all()


@gpu
@pytest.mark.parametrize("dtype, tolerance", [(np.float32, 1e-4), (np.float16, 1e-3)])
def test_exact_solve_matches_reference(cuda, reference, dtype, tolerance):
    got, expected, _ = solve_both(cuda, reference, dtype, 7, cg_steps=None)
    assert got.dtype == dtype
    assert max_relative_difference(got, expected) <= tolerance


@gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_gram_loss_and_norms_match_reference(cuda, reference, dtype):
    rng = np.random.default_rng(3)
    Cui = awkward_matrix(3)
    X = rng.standard_normal((300, 9)).astype(dtype)
    Y = rng.standard_normal((400, 9)).astype(dtype)
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    gram = cuda.gram(cuda.to_device(Y), 0.1)
    assert gram.dtype == np.float32  # float16 factors get a float32 Gram matrix
    np.testing.assert_allclose(cuda.to_host(gram), reference.gram(Y32, 0.1), rtol=1e-5, atol=1e-4)
    loss = training_loss(cuda, cuda.to_device(Cui), cuda.to_device(X), cuda.to_device(Y), 0.1)
    assert loss == pytest.approx(training_loss(reference, Cui, X32, Y32, 0.1), rel=1e-6)
    norms = cuda.to_host(cuda.norms(cuda.to_device(Y)))
    np.testing.assert_allclose(norms, reference.norms(Y32), rtol=1e-6)
    assert cuda.all_finite(cuda.to_device(X))
    X[4, 2] = np.inf
    assert not cuda.all_finite(cuda.to_device(X))


@gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("with_norms", [False, True])
def test_topk_matches_reference_with_ties_and_padding(
    cuda, reference, monkeypatch, dtype, with_norms
):
    # small integer factors: exact scores, many ties; 16 queries per batch: 5 batches
    monkeypatch.setattr(cupy_cuda, "TOPK_BATCH_ELEMENTS", 257 * 16)
    rng = np.random.default_rng(5)
    factors = rng.integers(-3, 4, size=(257, 5)).astype(dtype)
    queries = rng.integers(-3, 4, size=(70, 5)).astype(dtype)
    exclude = scipy.sparse.random(70, 257, density=0.1, format="lil", random_state=6)
    exclude[3, :] = 1.0  # nothing left: a row of padding
    exclude[4, 2:] = 1.0  # two candidates left
    exclude = exclude.tocsr().astype(np.float32)
    exclude_all = np.array([0, 5, 256])
    norms = np.linalg.norm(factors.astype(np.float32), axis=1) if with_norms else None
    host = factors.astype(np.float32) if dtype == np.float16 else factors
    for k in (1, 3, 17, 257):
        expected = reference.topk(queries.astype(host.dtype), host, k, exclude, exclude_all, norms)
        got = cuda.topk(
            cuda.to_device(queries),
            cuda.to_device(factors),
            k,
            cuda.to_device(exclude),
            cuda.to_device(exclude_all),
            None if norms is None else cuda.to_device(norms),
        )
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
        assert (got[0][3] == -1).all() and np.isneginf(got[1][3]).all()
        assert (got[0][4, 2:] == -1).all()


@gpu
def test_same_seed_same_model_on_cpu_and_gpu(cuda, medium_matrix):
    for iterations in (1, 5):
        fits = [
            AlternatingLeastSquares(
                factors=32, iterations=iterations, random_state=42, backend=name
            ).fit(medium_matrix, show_progress=False)
            for name in ("cpu", "cuda")
        ]
        cpu, gpu_model = fits
        assert gpu_model.backend_name == "cuda"
        for side in ("user_factors", "item_factors"):
            ours, theirs = getattr(gpu_model, side), getattr(cpu, side)
            assert max_relative_difference(ours, theirs) < 1e-2, (side, iterations)


@gpu
def test_to_gpu_and_back_keeps_factors_and_answers(cuda, medium_matrix):
    cpu = AlternatingLeastSquares(factors=16, iterations=3, random_state=0, backend="cpu")
    cpu.fit(medium_matrix, show_progress=False)
    on_gpu = cpu.to_gpu()
    assert on_gpu.backend_name == "cuda"
    np.testing.assert_array_equal(on_gpu.user_factors, cpu.user_factors)
    np.testing.assert_array_equal(on_gpu.item_factors, cpu.item_factors)
    back = on_gpu.to_cpu()
    assert back.backend_name == "cpu"
    np.testing.assert_array_equal(back.item_factors, cpu.item_factors)
    users = np.arange(200)
    gpu_ids, gpu_scores = on_gpu.recommend(users, medium_matrix[users], N=10)
    cpu_ids, cpu_scores = cpu.recommend(users, medium_matrix[users], N=10)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(gpu_ids, cpu_ids, strict=True)])
    assert overlap >= 0.99
    np.testing.assert_allclose(np.sort(gpu_scores, 1), np.sort(cpu_scores, 1), rtol=1e-5)
    similar_gpu, _ = on_gpu.similar_items(np.arange(50), N=5)
    similar_cpu, _ = cpu.similar_items(np.arange(50), N=5)
    assert np.mean(similar_gpu == similar_cpu) >= 0.95


@gpu
def test_float16_factors_train_like_float32(cuda, medium_matrix):
    models = []
    for dtype in (np.float32, np.float16):
        model = AlternatingLeastSquares(factors=32, iterations=5, dtype=dtype, backend="cuda")
        rng = np.random.default_rng(0)  # the float32 initial factors, rounded for float16
        model.user_factors = (rng.random((2000, 32), dtype=np.float32) * 0.01).astype(dtype)
        model.item_factors = (rng.random((1000, 32), dtype=np.float32) * 0.01).astype(dtype)
        models.append(model.fit(medium_matrix, show_progress=False))
    full, half = models
    assert half.user_factors.dtype == np.float16 and np.isfinite(half.user_factors).all()
    users = np.arange(500)
    full_ids, _ = full.recommend(users, medium_matrix[users], N=10)
    half_ids, _ = half.recommend(users, medium_matrix[users], N=10)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(full_ids, half_ids, strict=True)])
    assert overlap >= 0.9  # half storage rounds every factor by 2**-11 at each half-iteration


@gpu
def test_out_of_memory_says_what_to_change(cuda):
    import cupy

    rng = np.random.default_rng(0)
    Cui = cuda.to_device(power_law_matrix(2000, 1000, 80_000, seed=2))
    X = cuda.to_device(rng.random((2000, 64), dtype=np.float32))
    Y = cuda.to_device(rng.random((1000, 64), dtype=np.float32))
    YtY = cuda.gram(Y, 0.1)
    pool = cupy.get_default_memory_pool()
    pool.set_limit(size=pool.used_bytes() + 1024)
    try:
        with pytest.raises(MemoryError, match=r"1,000 candidates for 2,000 queries.*float16"):
            cuda.topk(X, Y, 10)
        with pytest.raises(MemoryError, match=r"2,000 rows x 64 factors.*GiB.*float16") as info:
            cuda.solve(Cui, X, Y, YtY, None)
    finally:
        pool.set_limit(size=0)
    assert isinstance(info.value, cupy_cuda.CudaOutOfMemoryError)
