"""A stand-in for CuPy built on NumPy, so ``CupyBackend`` runs in CI without a GPU.

``install(monkeypatch)`` puts fake ``cupy``, ``cupyx`` and ``cupyx.scipy.sparse`` modules in
``sys.modules``. Arrays are NumPy arrays (a subclass with ``.data.ptr``, as CuPy has);
``empty`` and ``empty_like`` fill theirs with 0xff bytes (NaN, -1), so a read of memory no
one wrote shows. ``RawModule`` is the emulated device of ``tests/cuda_emulation``: the real
CUDA C++ of ``backends/kernels``, compiled for the CPU, launched with the exact argument
tuples the backend passes, each checked against the kernel's C++ signature. cuBLAS
``gemmEx`` reads and writes through the raw pointers it is given, column-major, as cuBLAS
does; the other cuBLAS/cuSPARSE/cuSOLVER work is NumPy's and SciPy's.
"""

from __future__ import annotations

import ctypes
import sys
import time
import types

import numpy as np
import scipy.sparse

from als.backends.cupy_cuda import storage_type
from tests import cuda_emulation

#: the struct type the kernels store float16 factors as, for the emulation's argument checks
STRUCT_TYPES = {storage_type(np.float16): np.float16}


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
        if name in ("empty", "empty_like"):
            return _poisoned(value)
        if callable(value) and not isinstance(value, type):
            return _wrap(value)
        return value


def _poisoned(function):
    """``empty``/``empty_like`` with every byte 0xff: a device's fresh memory is not zeros."""

    def wrapped(*args, **kwargs):
        array = function(*args, **kwargs)
        array.reshape(-1).view(np.uint8)[:] = 0xFF
        return _device(array)

    return wrapped


class OutOfMemoryError(MemoryError):
    pass


class CSR(scipy.sparse.csr_matrix):
    """cupyx.scipy.sparse.csr_matrix: a type of its own, so ``issparse`` tells it from SciPy's."""


class Launches:
    """Every kernel launch: (name, grid, block); ``seed`` is the emulated device's schedule."""

    def __init__(self, seed=1):
        self.calls = []
        self.seed = seed


class RawModule:
    """``cupy.RawModule`` on the emulated device: the real CUDA C++, compiled for the CPU."""

    def __init__(self, code, options, name_expressions, launches):
        self.module = cuda_emulation.Module(
            code, options, name_expressions, struct_types=STRUCT_TYPES, seed=launches.seed
        )
        self.launches = launches

    def get_function(self, name):
        function = self.module.get_function(name)

        def launch(grid, block, arguments, **options):
            self.launches.calls.append((name, grid, block))
            self.module.seed = self.launches.seed
            function(grid, block, arguments, **options)

        return launch


def gemm_ex(handle, transa, transb, m, n, k, alpha, A, a_type, lda, B, b_type, ldb, beta, C,
            c_type, ldc, compute_type, algo):  # fmt: skip
    """cublasGemmEx on raw pointers: float16 A and B, float32 C, column-major."""
    assert (a_type, b_type, c_type) == (2, 2, 0), "gemmEx types: 16F, 16F, 32F expected"

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


def install(monkeypatch, free_bytes=8 << 30, sm_count=132, seed=1):
    """Put the fake modules in ``sys.modules``; return the launch record.

    ``seed`` is the emulated device's schedule (``tests.cuda_emulation.Module``), settable
    later as the record's ``seed``.
    """
    launches = Launches(seed)
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
        compiler=types.SimpleNamespace(CompileException=cuda_emulation.BuildError),
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
