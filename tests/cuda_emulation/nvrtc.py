"""NVRTC without a GPU: the unit, options and name expressions of ``cupy.RawModule``, compiled.

The pip wheel ``nvidia-cuda-nvrtc`` loads without a driver or a device, and CuPy's own NVRTC
binding (``cupy_backends.cuda.libs.nvrtc``; ``cupy.cuda.nvrtc`` in CuPy 13) drives it, so CI
compiles with the compiler CuPy really uses. ``cupy.RawModule(code=..., options=...,
name_expressions=...)`` compiles, on a device of compute capability XY, with ``options``
followed by ``-ftz=true`` (CuPy's ``_compile_with_cache_cuda``), ``-arch=sm_XY`` and
``--device-as-default-execution-space`` (its ``compile_using_nvrtc``); it needs a device to
pick XY, so :func:`compile_like_cupy` adds them here and takes the architecture as given.
"""

from __future__ import annotations

import dataclasses
import importlib

__all__ = ["binding", "cupy_options", "compile_like_cupy", "Compiled", "CompileFailed"]


class CompileFailed(RuntimeError):
    """NVRTC refused the unit; the message is its log."""


@dataclasses.dataclass
class Compiled:
    """What NVRTC gave: the PTX text, the cubin bytes, each name expression's lowered name."""

    ptx: str
    cubin: bytes
    lowered: dict
    log: str


def binding():
    """CuPy's NVRTC module, or raise ImportError saying what is missing."""
    errors = []
    for name in ("cupy_backends.cuda.libs.nvrtc", "cupy.cuda.nvrtc"):
        try:
            module = importlib.import_module(name)
            module.getVersion()  # loads libnvrtc: the wheel, or a CUDA toolkit's
            return module
        except Exception as exc:  # ImportError, or the library failing to load
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    raise ImportError(
        "no NVRTC through CuPy (pip install cupy-cuda13x nvidia-cuda-nvrtc): " + "; ".join(errors)
    )


def cupy_options(options, arch):
    """The options ``cupy.RawModule`` hands NVRTC on a device of architecture ``arch``."""
    return (*options, "-ftz=true", f"-arch={arch}", "--device-as-default-execution-space")


def compile_like_cupy(source, options, name_expressions, arch="sm_90"):
    """Compile as ``cupy.RawModule`` would on ``arch``; raise CompileFailed with NVRTC's log."""
    nvrtc = binding()
    program = nvrtc.createProgram(source, "kern.cu", (), ())
    try:
        for name in name_expressions:
            nvrtc.addNameExpression(program, name)
        try:
            nvrtc.compileProgram(program, cupy_options(options, arch))
        except nvrtc.NVRTCError as exc:
            raise CompileFailed(f"{exc}\n{_text(nvrtc.getProgramLog(program))}") from exc
        cubin = nvrtc.getCUBIN(program) if arch.startswith("sm_") else b""
        return Compiled(
            ptx=_text(nvrtc.getPTX(program)),
            cubin=bytes(cubin),
            lowered={name: _text(nvrtc.getLoweredName(program, name)) for name in name_expressions},
            log=_text(nvrtc.getProgramLog(program)),
        )
    finally:
        nvrtc.destroyProgram(program)


def _text(value):
    value = value.decode() if isinstance(value, bytes) else str(value)
    return value.rstrip("\0")
