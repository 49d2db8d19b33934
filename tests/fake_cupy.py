"""A stand-in for CuPy built on NumPy, so ``CupyBackend``'s host code runs in CI without a GPU.

``install(monkeypatch)`` puts fake ``cupy``, ``cupyx`` and ``cupyx.scipy.sparse`` modules in
``sys.modules``. Arrays are NumPy arrays (a subclass with ``.data.ptr``, as CuPy has); the
compiled module's kernels are NumPy emulations called with the exact argument tuple the
backend launches, which they unpack in the order of the kernel's CUDA signature and check
against its template arguments (storage and compute dtypes) and launch geometry, so a
swapped argument, a wrong dtype or a grid too small fails here. The CG kernels run
``backends.chunked_cg.EmulatedKernels``; ``topk_select`` returns each segment's top k in
a shuffled order, since the kernel promises no order. cuBLAS ``gemmEx`` reads and writes
through the raw pointers it is given, column-major, as cuBLAS does.

This checks plumbing, not the CUDA C++: that runs only on a device (gpu_check.sh).
"""

from __future__ import annotations

import ctypes
import re
import sys
import time
import types

import numpy as np
import scipy.sparse

from als.backends.chunked_cg import EmulatedKernels
from als.backends.cuda_plan import WARPS_PER_BLOCK, order_key

STORAGE = {"als_half": np.float16, "float": np.float32, "double": np.float64}


class DeviceArray(np.ndarray):
    """A NumPy array with CuPy's ``.data.ptr``."""

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.ctypes.data)


def _device(value):
    if type(value) is np.ndarray:
        return value.view(DeviceArray)
    if isinstance(value, tuple):
        return tuple(_device(item) for item in value)
    return value


def _wrap(function):
    def wrapped(*args, **kwargs):
        return _device(function(*args, **kwargs))

    return wrapped


class _ArrayModule(types.ModuleType):
    """numpy, with every function's arrays returned as DeviceArray."""

    def __init__(self, name, source):
        super().__init__(name)
        self._source = source

    def __getattr__(self, name):
        value = getattr(self._source, name)
        if callable(value) and not isinstance(value, type):
            return _wrap(value)
        return value


class OutOfMemoryError(MemoryError):
    pass


class CompileException(Exception):
    pass


class CSR(scipy.sparse.csr_matrix):
    """cupyx.scipy.sparse.csr_matrix: a type of its own, so ``issparse`` tells it from SciPy's."""


class Launches:
    """Every kernel launch: (name, grid, block)."""

    def __init__(self):
        self.calls = []


def _check(condition, message):
    if not condition:
        raise AssertionError(message)


def _template(name):
    base, args = re.fullmatch(r"(\w+)<(.*)>", name).groups()
    return base, [arg.strip() for arg in args.split(",")]


def _kernel(name, launches):
    base, args = _template(name)

    def launch(grid, block, arguments):
        launches.calls.append((name, grid, block))
        (blocks,), (threads,) = grid, block
        if base == "cg_sparse":
            storage, per_lane, vector = STORAGE[args[0]], int(args[1]), args[2] == "true"
            (chunk_row, begin, end, n_chunks, indptr, indices, data, Y, V, out, active,
             factors, with_b, sign) = arguments  # fmt: skip
            compute = np.float64 if storage == np.float64 else np.float32
            _check(Y.dtype == storage and V.dtype == out.dtype == compute, f"{name}: dtypes")
            _check(data.dtype == np.float32 and indices.dtype == indptr.dtype == np.int32, name)
            _check(int(factors) <= 32 * per_lane and (not vector or factors == 32 * per_lane), name)
            _check(
                blocks * threads // 32 >= int(n_chunks) and threads == 32 * WARPS_PER_BLOCK, name
            )
            matrix = types.SimpleNamespace(indptr=indptr, indices=indices, data=data)
            EmulatedKernels().sparse(
                (chunk_row, begin, end), matrix, Y, V, out, active, with_b, sign
            )
        elif base == "cg_init":
            x, r, p, xYtY, indptr, rsold, active, n_rows, factors, tolerance = arguments
            _check(x.dtype == STORAGE[args[0]] == rsold.dtype, f"{name}: dtypes")
            _check(blocks * threads // 32 >= int(n_rows) and x.shape[1] == factors, name)
            EmulatedKernels().init(x, r, p, xYtY, indptr, rsold, active, tolerance)
        elif base == "cg_update":
            x, r, p, Ap, rsold, active, n_rows, factors, tolerance = arguments
            _check(x.dtype == STORAGE[args[0]] and int(factors) <= 32 * int(args[1]), name)
            _check(blocks * threads // 32 >= int(n_rows), name)
            EmulatedKernels().update(x, r, p, Ap, rsold, active, tolerance)
        elif base == "exclude_ids":
            scores, n_items, row_offset, indptr, excluded, exclude_all, n_all = arguments
            _check(scores.dtype == STORAGE[args[0]] and blocks == scores.shape[0], name)
            for row in range(blocks):
                begin, end = indptr[row_offset + row], indptr[row_offset + row + 1]
                scores[row, excluded[begin:end]] = -np.inf
                scores[row, exclude_all[: int(n_all)]] = -np.inf
        elif base == "topk_select":
            scores, row_length, segment_length, segments, k, out = arguments
            _check(scores.dtype == STORAGE[args[0]] and blocks == scores.shape[0] * segments, name)
            rng = np.random.default_rng(blocks)
            for b in range(blocks):
                row, segment = divmod(b, int(segments))
                start = segment * int(segment_length)
                values = scores[row, start : min(start + int(segment_length), int(row_length))]
                _check(len(values) >= k, f"{name}: a segment shorter than k")
                best = np.lexsort([np.arange(len(values)), order_key(values)])[: int(k)]
                out.reshape(-1, int(k))[b] = rng.permutation(best) + start  # any order
        else:
            raise AssertionError(f"unknown kernel {name}")

    return launch


class RawModule:
    def __init__(self, code, options, name_expressions, launches):
        self.names = set(name_expressions)
        self.launches = launches

    def get_function(self, name):
        _check(name in self.names, f"{name} is not a compiled instance")
        return _kernel(name, self.launches)


def gemm_ex(handle, transa, transb, m, n, k, alpha, A, a_type, lda, B, b_type, ldb, beta, C,
            c_type, ldc, compute_type, algo):  # fmt: skip
    """cublasGemmEx on raw pointers: float16 A and B, float32 C, column-major."""
    _check((a_type, b_type, c_type) == (2, 2, 0), "gemmEx types: 16F, 16F, 32F expected")

    def matrix(pointer, ctype, dtype, ld, columns):
        raw = (ctype * (ld * columns)).from_address(pointer)
        return np.frombuffer(raw, dtype=dtype).reshape(columns, ld).T  # column-major view

    a = matrix(A, ctypes.c_uint16, np.float16, lda, m if transa else k)
    b = matrix(B, ctypes.c_uint16, np.float16, ldb, k if transb else n)
    op_a = (a[:k, :m].T if transa else a[:m, :k]).astype(np.float32)
    op_b = (b[:n, :k].T if transb else b[:k, :n]).astype(np.float32)
    scale = ctypes.c_float.from_address(alpha).value
    c = (ctypes.c_float * (ldc * n)).from_address(C)
    out = np.frombuffer(c, dtype=np.float32).reshape(n, ldc).T
    out[:m, :n] = scale * (op_a @ op_b)  # beta is 0 in every call the backend makes


def install(monkeypatch, free_bytes=8 << 30, sm_count=132):
    """Put the fake modules in ``sys.modules``; return the launch record."""
    launches = Launches()
    cupy = _ArrayModule("cupy", np)
    cupy.__version__ = "fake"
    cupy.ndarray = np.ndarray
    cupy.linalg = _ArrayModule("cupy.linalg", np.linalg)
    cupy.asnumpy = lambda array: np.array(array)
    pool = types.SimpleNamespace(free_bytes=lambda: 0, free_all_blocks=lambda: None)
    cupy.get_default_memory_pool = lambda: pool

    class Device:
        def __init__(self, device_id=0):
            self.id = device_id

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def synchronize(self):
            pass

    class Event:
        def record(self):
            self.time = time.perf_counter()

        def synchronize(self):
            pass

    generator = np.random.default_rng(0)
    cupy.random = types.SimpleNamespace(
        standard_normal=lambda shape, dtype=np.float64: _device(
            generator.standard_normal(shape, dtype=dtype)
        ),
        default_rng=lambda seed: types.SimpleNamespace(
            standard_normal=lambda shape, dtype=np.float64: _device(
                np.random.default_rng(seed).standard_normal(shape, dtype=dtype)
            )
        ),
    )

    runtime = types.SimpleNamespace(
        getDeviceCount=lambda: 1,
        getDevice=lambda: 0,
        getDeviceProperties=lambda device: {
            "multiProcessorCount": sm_count,
            "name": b"fake",
            "totalGlobalMem": free_bytes,
        },
        runtimeGetVersion=lambda: 13000,
        memGetInfo=lambda: (free_bytes, free_bytes),
    )
    cupy.cuda = types.SimpleNamespace(
        runtime=runtime,
        Device=Device,
        memory=types.SimpleNamespace(OutOfMemoryError=OutOfMemoryError),
        compiler=types.SimpleNamespace(CompileException=CompileException),
        cublas=types.SimpleNamespace(gemmEx=gemm_ex),
        device=types.SimpleNamespace(get_cublas_handle=lambda: 0),
        Event=Event,
        get_elapsed_time=lambda start, stop: 1e3 * (stop.time - start.time),
    )
    cupy.RawModule = lambda code, options, name_expressions: RawModule(
        code, options, name_expressions, launches
    )
    sparse = types.ModuleType("cupyx.scipy.sparse")
    sparse.csr_matrix = CSR
    sparse.issparse = lambda value: isinstance(value, CSR)
    cupyx = types.ModuleType("cupyx")
    cupyx.scipy = types.ModuleType("cupyx.scipy")
    cupyx.scipy.sparse = sparse
    modules = {"cupy": cupy, "cupyx": cupyx, "cupyx.scipy": cupyx.scipy}
    modules["cupyx.scipy.sparse"] = sparse
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return launches
