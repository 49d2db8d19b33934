"""The CUDA backend: its sources compile for the device; its kernels match the reference.

Four groups of tests:

- nvcc (run wherever ``nvcc`` is on PATH, GPU or not): every ``.cu`` file compiles on its
  own for sm_80 and sm_90, and so does the exact translation unit CuPy hands to NVRTC with
  every template instance the backend uses (templates are only type-checked once
  instantiated; a test shows that a template-only error is caught); the kernels' own
  ``order_key`` is compiled for the host and run on the CPU against NumPy's order.
  ``ALS_SKIP_NVCC=1`` skips them (benchmarks/gpu_check.sh does, on the device).
- NVRTC (run wherever the ``nvidia-cuda-nvrtc`` wheel and CuPy's binding load, no GPU
  needed): the unit, options and name expressions of ``_module()`` compiled as
  ``cupy.RawModule`` compiles them, lowered names checked, half widening done by the PTX
  ``cvt`` on the device, a system header refused; messages name the source file and line.
- no CuPy (run everywhere): a missing CuPy or device gives ``BackendUnavailable`` saying so.
- the backend against the NumPy reference, each test twice through the ``cuda`` fixture:
  on a GPU (the ``device`` variant, marked ``gpu``, skipped with the reason elsewhere) and on
  the emulated device of tests/cuda_emulation (the ``emulated`` variant, in CI). The few
  whose sizes would take the emulation minutes take ``device_cuda`` and run on a GPU only.

Tolerances of the GPU tests. The CUDA kernels compute in float32 (float16 storage) or
float64, in another summation order than the reference (warp tree reductions versus BLAS),
so single results differ by a few ulps; 3 CG steps are not a contraction, so that difference
can grow by a few orders of magnitude within one solve. As in ``test_backends.py``, factors
are compared by the largest difference relative to the largest factor: 2e-3 for float32
(the shared suite's figure), and for float16 that plus the rounding of the stored result to
half precision (2**-11 relative), 3e-3 in all. The exact solve has no CG amplification:
1e-4 (float32); float64 results have no float32 rounding to amplify: 1e-9 (CG) and 1e-10
(exact). Top-k is checked on integer-valued factors, whose scores every backend
computes exactly, so ids and scores must be identical, ties included. Whole fits on CPU and
GPU from the same seed are compared as ``test_agreement.py`` compares us with implicit (whose
CPU backends differ by under 4e-3 there): 1e-2 after one and after five iterations.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

import als.backends.cupy_cuda as cupy_cuda
from als import AlternatingLeastSquares
from als.backends.base import BackendUnavailable, get_backend
from als.backends.cuda_plan import order_key
from als.fitting import training_loss
from tests import cuda_emulation, fake_cupy
from tests.conftest import power_law_matrix
from tests.cuda_emulation import nvrtc

NVCC = shutil.which("nvcc")
KERNEL_DIR = Path(cupy_cuda.__file__).parent / "kernels"
CUDA_FILES = sorted(path.name for path in KERNEL_DIR.glob("*.cu"))
ARCHS = ["sm_80", "sm_90"]

needs_nvcc = pytest.mark.skipif(
    NVCC is None or bool(os.environ.get("ALS_SKIP_NVCC")),
    reason="nvcc is not on PATH (or ALS_SKIP_NVCC is set: CI runs these)",
)


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
    good = "out[k] = to_compute(values[k]);"
    source = cupy_cuda.kernel_source()
    assert good in source
    broken = source.replace(good, "out[k] = to_compute(&values[k]);")  # no such overload
    unit = tmp_path / "broken.cu"
    unit.write_text(broken)
    assert nvcc(unit, tmp_path, "sm_90").returncode == 0, "uninstantiated: nvcc cannot see it"
    unit.write_text(instantiation_unit(broken, cupy_cuda.name_expressions()))
    result = nvcc(unit, tmp_path, "sm_90")
    assert result.returncode != 0 and "to_compute" in result.stderr


@needs_nvcc
def test_order_key_of_the_kernels_ranks_like_numpy(tmp_path):
    # the real order_key from common.cuh, compiled for the host and run on the CPU
    values = ["1.5f", "-INFINITY", "NAN", "0.0f", "-0.0f", "INFINITY", "-2.0f", "-NAN", "3.0f"]
    program = tmp_path / "keys.cu"
    program.write_text(
        '#include <cstdio>\n#include <cmath>\n#include "common.cuh"\n'
        "int main() {\n    const float values[] = {" + ", ".join(values) + "};\n"
        '    for (float value : values) std::printf("%u %llu\\n", order_key(value),\n'
        "        order_key(static_cast<double>(value)));\n}\n"
    )
    binary = tmp_path / "keys"
    build = subprocess.run(
        [NVCC, "-std=c++17", f"-I{KERNEL_DIR}", str(program), "-o", str(binary)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    lines = subprocess.run([str(binary)], capture_output=True, text=True, timeout=30).stdout
    keys = np.array([line.split() for line in lines.split("\n") if line], dtype=np.uint64)
    scores = np.array([1.5, -np.inf, np.nan, 0.0, -0.0, np.inf, -2.0, -np.nan, 3.0])
    np.testing.assert_array_equal(keys[:, 0], order_key(scores.astype(np.float32)))
    np.testing.assert_array_equal(keys[:, 1], order_key(scores))
    assert keys[2, 0] == keys[7, 0] == 2**32 - 1  # NaN after everything, -inf included
    assert keys[1, 0] < keys[2, 0] and keys[3, 0] == keys[4, 0]


def test_every_kernel_template_has_name_expressions():
    source = cupy_cuda.kernel_source()
    declared = set(re.findall(r"__global__\s+void\s+(?:__launch_bounds__\(\d+\)\s+)?(\w+)", source))
    assert declared == set(cupy_cuda.KERNELS)
    expressions = set(cupy_cuda.name_expressions())
    for dtype in cupy_cuda.DTYPES:
        for factors in (1, 7, 32, 64, 100, 128, 129, 256, 257, 1024):
            for aligned in (True, False):
                assert set(cupy_cuda.cg_kernel_names(factors, dtype, aligned)) <= expressions
        assert cupy_cuda.cg_kernel_names(1025, dtype) is None  # the array-code CG then
    assert not re.search(r'#include\s+"', source), "local includes must be pasted in"


# -- NVRTC, the compiler CuPy uses ----------------------------------------------------------------


@pytest.fixture(scope="module")
def nvrtc_module():
    """The backend's unit compiled by NVRTC exactly as ``_module()``'s RawModule would on sm_90."""
    try:
        nvrtc.binding()
    except ImportError as exc:
        pytest.skip(f"NVRTC cannot load here: {exc}")
    return nvrtc.compile_like_cupy(
        cupy_cuda.kernel_source(), cupy_cuda.COMPILE_OPTIONS, cupy_cuda.name_expressions()
    )


def test_nvrtc_compiles_every_instance_as_the_backend_asks(nvrtc_module):
    assert nvrtc_module.log == "", nvrtc_module.log  # not even a warning
    assert len(nvrtc_module.cubin) > 0
    for name, lowered in nvrtc_module.lowered.items():
        assert lowered.startswith("_Z") and name.split("<")[0] in lowered, (name, lowered)
        assert f".entry {lowered}(" in nvrtc_module.ptx, name
    assert set(nvrtc_module.lowered) == set(cupy_cuda.name_expressions())


def test_the_device_converts_halves_in_hardware(nvrtc_module):
    # the host path of to_compute (integer arithmetic) is for the emulation only: every half
    # instance of the device code widens with one PTX cvt, and the float instances have none
    entries = {}
    for name, lowered in nvrtc_module.lowered.items():
        body = nvrtc_module.ptx.split(f".entry {lowered}(", 1)[1].split(".entry ", 1)[0]
        entries[name] = "cvt.f32.f16" in body
    halves = {name for name in entries if "als_half" in name}
    assert halves and all(entries[name] for name in halves)
    assert not any(entries[name] for name in entries if name not in halves)


def test_nvrtc_refuses_a_system_header():
    # nvcc finds the host's headers; NVRTC has none: what CI must catch before a device does
    try:
        nvrtc.binding()
    except ImportError as exc:
        pytest.skip(f"NVRTC cannot load here: {exc}")
    header = (KERNEL_DIR / "common.cuh").read_text()
    nvrtc.compile_like_cupy(header, cupy_cuda.COMPILE_OPTIONS, [])
    with pytest.raises(nvrtc.CompileFailed, match="cstdio"):
        nvrtc.compile_like_cupy("#include <cstdio>\n" + header, cupy_cuda.COMPILE_OPTIONS, [])


def test_compiler_messages_name_the_source_file_and_line():
    # each file's lines keep their numbers in the unit: a message names the line to edit
    unit = cupy_cuda.kernel_source().split("\n")
    current, line = None, 0
    for text in unit:
        if text.startswith("#line 1 "):
            current, line = (KERNEL_DIR / text.split('"')[1]).read_text().split("\n"), 0
            continue
        expected = current[line]
        if text == cupy_cuda.PASTED_INCLUDE:
            assert re.fullmatch(r'\s*#include\s+"\w+\.cuh"\s*', expected)
        else:
            assert text == expected, (line + 1, text, expected)
        line += 1
    assert sum(text.startswith("#line 1 ") for text in unit) == len(cupy_cuda.KERNEL_FILES)


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
FACTOR_COUNTS = [1, 7, 32, 64, 100, 128, 129, 256, 257]


def device_backend():
    try:
        return get_backend("cuda")
    except BackendUnavailable as exc:
        pytest.skip(f"the CUDA backend cannot run here (needs CuPy and a device): {exc}")


@pytest.fixture(params=[pytest.param("device", marks=gpu), "emulated"])
def cuda(request, monkeypatch):
    """The CUDA backend on a GPU (marked ``gpu``), and on the emulated device (CI)."""
    if request.param == "device":
        return device_backend()
    if cuda_emulation.compiler() is None:
        pytest.skip("no host C++ compiler (g++) for the emulated device")
    fake_cupy.install(monkeypatch)  # undone after each test: device_cuda never sees it
    cupy_cuda._module.cache_clear()
    request.addfinalizer(cupy_cuda._module.cache_clear)
    return cupy_cuda.CupyBackend()


@pytest.fixture(scope="module")
def device_cuda():
    """The CUDA backend on a GPU only: for sizes the emulated device would take minutes on."""
    return device_backend()


@pytest.fixture(scope="module")
def reference():
    return get_backend("numpy")


def awkward_matrix(seed=0, n_items=400):
    """300 x n_items power-law confidences, some negative, with rows of 0, 1 and all entries."""
    matrix = power_law_matrix(300, n_items, 6000, seed=seed, negative_fraction=0.1).tolil()
    matrix[0, :] = 0
    matrix[1, :] = 0
    matrix[1, 5] = 3.0
    matrix[2, :] = 0
    matrix[2, 9] = -2.0
    matrix[3, :] = 1.5  # every item: with n_items >= 20,000 the longest row of the suite
    matrix = matrix.tocsr()
    matrix.eliminate_zeros()
    return matrix.astype(np.float32)


def max_relative_difference(got, expected):
    return float(np.abs(got.astype(np.float64) - expected).max() / np.abs(expected).max())


def solve_both(cuda, reference, dtype, factors, cg_steps, seed=0, Cui=None):
    """Solve on the GPU and with the reference (on the same rounded inputs)."""
    rng = np.random.default_rng(seed)
    Cui = awkward_matrix(seed) if Cui is None else Cui
    X = (rng.standard_normal((Cui.shape[0], factors)) * 0.1).astype(dtype)
    Y = (rng.standard_normal((Cui.shape[1], factors)) * 0.1).astype(dtype)
    host = np.float64 if dtype == np.float64 else np.float32
    expected, Y_host = X.astype(host), Y.astype(host)
    X_device, Y_device = cuda.to_device(X.copy()), cuda.to_device(Y)
    cuda.solve(cuda.to_device(Cui), X_device, Y_device, cuda.gram(Y_device, 0.05), cg_steps)
    reference.solve(Cui.astype(host), expected, Y_host, reference.gram(Y_host, 0.05), cg_steps)
    return cuda.to_host(X_device), expected, Cui


@pytest.mark.parametrize("dtype, tolerance", [(np.float32, 2e-3), (np.float16, 3e-3)])
@pytest.mark.parametrize("factors", FACTOR_COUNTS)
def test_cg_solve_matches_reference(cuda, reference, dtype, tolerance, factors):
    got, expected, Cui = solve_both(cuda, reference, dtype, factors, cg_steps=3, seed=factors)
    assert got.dtype == dtype
    assert max_relative_difference(got, expected) <= tolerance
    assert (got[np.diff(Cui.indptr) == 0] == 0).all()


@pytest.mark.parametrize("factors", [7, 64, 257])
def test_cg_solve_in_float64_matches_reference(cuda, reference, factors):
    got, expected, _ = solve_both(cuda, reference, np.float64, factors, cg_steps=3, seed=factors)
    assert max_relative_difference(got, expected) <= 1e-9  # no float32 rounding to amplify


@gpu
@pytest.mark.parametrize("dtype, tolerance", [(np.float32, 2e-3), (np.float16, 3e-3)])
@pytest.mark.parametrize("transpose", [False, True])
def test_rows_of_20000_entries_on_both_sides(device_cuda, reference, dtype, tolerance, transpose):
    # row 3 has 21,000 entries (83 chunks added atomically); transposed, 21,000 rows of <= 300
    Cui = awkward_matrix(seed=4, n_items=21_000)
    Cui = Cui.T.tocsr() if transpose else Cui
    got, expected, _ = solve_both(device_cuda, reference, dtype, 64, cg_steps=3, seed=4, Cui=Cui)
    assert max_relative_difference(got, expected) <= tolerance


def test_cg_steps_stop_rows_that_converged(cuda, reference):
    # 3 factors, float64: exact after 3 steps; a step past r.r < 1e-20 would divide 0 by 0
    got, _, Cui = solve_both(cuda, reference, np.float64, 3, cg_steps=50, seed=1)
    exact, _, _ = solve_both(cuda, reference, np.float64, 3, cg_steps=None, seed=1, Cui=Cui)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, exact, rtol=1e-8, atol=1e-12)


def test_a_nan_residual_stops_its_row(cuda):
    rng = np.random.default_rng(2)
    Cui = awkward_matrix(2)
    X = (rng.standard_normal((300, 16)) * 0.1).astype(np.float32)
    Y = (rng.standard_normal((400, 16)) * 0.1).astype(np.float32)
    X[7, 3] = np.nan
    X_device, Y_device = cuda.to_device(X), cuda.to_device(Y)
    cuda.solve(cuda.to_device(Cui), X_device, Y_device, cuda.gram(Y_device, 0.05), 3)
    got = cuda.to_host(X_device)
    np.testing.assert_array_equal(got[7], X[7])  # untouched: no step from a NaN residual
    assert np.isfinite(np.delete(got, 7, axis=0)).all()


@pytest.mark.parametrize(
    "dtype, tolerance", [(np.float32, 1e-4), (np.float16, 1e-3), (np.float64, 1e-10)]
)
@pytest.mark.parametrize("factors", [7, 64])
def test_exact_solve_matches_reference(cuda, reference, dtype, tolerance, factors):
    got, expected, _ = solve_both(cuda, reference, dtype, factors, cg_steps=None)
    assert got.dtype == dtype
    assert max_relative_difference(got, expected) <= tolerance


def test_exact_solve_of_a_20000_entry_row(cuda, reference):
    Cui = awkward_matrix(seed=5, n_items=21_000)
    got, expected, _ = solve_both(cuda, reference, np.float32, 32, cg_steps=None, seed=5, Cui=Cui)
    assert max_relative_difference(got, expected) <= 1e-4


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


def integer_topk_case(n_items, n_queries, seed=5, excluded_per_row=2000):
    """Small integer factors: exact scores, many ties; exclusions leave rows of 0 and 2.

    About ``excluded_per_row`` random exclusions per query (at most a tenth of the items).
    """
    rng = np.random.default_rng(seed)
    factors = rng.integers(-3, 4, size=(n_items, 5))
    queries = rng.integers(-3, 4, size=(n_queries, 5))
    density = min(0.1, excluded_per_row / n_items)
    exclude = scipy.sparse.random(
        n_queries, n_items, density=density, format="lil", random_state=seed
    )
    exclude[3, :] = 1.0  # nothing left: a row of padding
    exclude[4, 2:] = 1.0  # two candidates left
    return factors, queries, exclude.tocsr().astype(np.float32)


def compare_topk(
    cuda,
    reference,
    factors,
    queries,
    k,
    exclude=None,
    exclude_all=None,
    norms=None,
    dtype=np.float32,
):
    host = np.float64 if dtype == np.float64 else np.float32
    expected = reference.topk(
        queries.astype(host), factors.astype(host), k, exclude, exclude_all, norms
    )
    got = cuda.topk(
        cuda.to_device(queries.astype(dtype)),
        cuda.to_device(factors.astype(dtype)),
        k,
        None if exclude is None else cuda.to_device(exclude),
        None if exclude_all is None else cuda.to_device(exclude_all),
        None if norms is None else cuda.to_device(norms),
    )
    assert isinstance(got[0], np.ndarray) and isinstance(got[1], np.ndarray)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    return got


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("with_norms", [False, True])
def test_topk_matches_reference_with_ties_and_padding(cuda, reference, dtype, with_norms):
    factors, queries, exclude = integer_topk_case(257, 70)
    exclude_all = np.array([0, 5, 256])
    norms = np.linalg.norm(factors.astype(np.float32), axis=1) if with_norms else None
    for k in (1, 3, 17, 257):
        got = compare_topk(cuda, reference, factors, queries, k, exclude, exclude_all, norms, dtype)
        assert (got[0][3] == -1).all() and np.isneginf(got[1][3]).all()
        assert (got[0][4, 2:] == -1).all()


@gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_topk_over_a_million_candidates_in_segments(device_cuda, reference, dtype):
    factors, queries, exclude = integer_topk_case(2**20 + 3, 6)
    for k in (1, 10, 500):
        compare_topk(device_cuda, reference, factors, queries, k, exclude, dtype=dtype)


def test_topk_with_one_query_per_batch(cuda, reference, monkeypatch):
    monkeypatch.setattr(cupy_cuda, "topk_batch_rows", lambda *args: 1)
    factors, queries, exclude = integer_topk_case(300, 9)
    compare_topk(cuda, reference, factors, queries, 7, exclude)


def test_topk_ranks_nan_scores_last(cuda, reference):
    factors, queries, _ = integer_topk_case(50, 5)
    factors = factors.astype(np.float32)
    factors[[3, 8]] = np.nan  # every query scores these two NaN: after every number
    got = compare_topk(cuda, reference, factors, queries, 50)
    assert set(got[0][:, -2:].ravel()) == {3, 8}


@gpu
def test_same_seed_same_model_on_gpu_numba_and_reference(device_cuda, medium_matrix):
    for iterations in (1, 5):
        fits = {
            name: AlternatingLeastSquares(
                factors=32, iterations=iterations, random_state=42, backend=name
            ).fit(medium_matrix, show_progress=False)
            for name in ("numpy", "cpu", "cuda")
        }
        assert fits["cuda"].backend_name == "cuda"
        for other in ("numpy", "cpu"):
            for side in ("user_factors", "item_factors"):
                ours, theirs = getattr(fits["cuda"], side), getattr(fits[other], side)
                assert max_relative_difference(ours, theirs) < 1e-2, (other, side, iterations)


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
def test_float16_factors_train_like_float32(device_cuda, medium_matrix):
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
def test_out_of_memory_says_what_to_change(device_cuda):
    import cupy

    rng = np.random.default_rng(0)
    Cui = device_cuda.to_device(power_law_matrix(2000, 1000, 80_000, seed=2))
    X = device_cuda.to_device(rng.random((2000, 64), dtype=np.float32))
    Y = device_cuda.to_device(rng.random((1000, 64), dtype=np.float32))
    YtY = device_cuda.gram(Y, 0.1)
    pool = cupy.get_default_memory_pool()
    cupy.cuda.Device().synchronize()
    pool.free_all_blocks()  # else cached blocks serve the allocations and nothing fails
    pool.set_limit(size=pool.used_bytes() + 1024)
    try:
        with pytest.raises(MemoryError, match=r"1,000 candidates for 2,000 queries.*float16"):
            device_cuda.topk(X, Y, 10)
        with pytest.raises(MemoryError, match=r"2,000 rows x 64 factors.*GiB.*float16") as info:
            device_cuda.solve(Cui, X, Y, YtY, None)
        with pytest.raises(MemoryError, match=r"2,000 rows x 64 factors.*3 CG steps"):
            device_cuda.solve(Cui, X, Y, YtY, 3)
    finally:
        pool.set_limit(size=0)
    assert isinstance(info.value, cupy_cuda.CudaOutOfMemoryError)
