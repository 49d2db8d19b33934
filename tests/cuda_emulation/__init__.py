"""CUDA kernels on the CPU, for the tests: the real CUDA C++ compiled by a host C++ compiler.

:class:`Module` has the face of ``cupy.RawModule``: give it the translation unit that NVRTC
would compile (``backends.cupy_cuda.kernel_source()``), its options and name expressions, and
``get_function(name)(grid, block, args)`` launches that template instance on an emulated
device. The unit is compiled unchanged with ``cuda_emulation.h`` force-included in front and
one launcher per name expression appended, by g++ with UBSan in trap mode, once per source
hash (cached under the temp folder, or ``$ALS_CUDA_EMULATION_CACHE``), and driven through
ctypes. ``cuda_emulation.h`` says what the device model checks; this module adds the launch
checks: each argument against the kernel's C++ parameter (a pointer's element type, a
scalar's exact NumPy type, C-contiguous arrays, no overlap with a written argument), the
block size against ``__launch_bounds__`` and 1024, and it names what went wrong: the
argument (by its name in the source), the thread and the source line (addr2line).

Device arrays are NumPy arrays (``tests/fake_cupy.py`` makes them look like CuPy's); a launch
copies each into guarded memory and the written ones back.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

__all__ = [
    "Module",
    "EmulationError",
    "BuildError",
    "ArgumentError",
    "DivergenceError",
    "BarrierError",
    "MemoryFault",
    "UndefinedBehaviour",
    "compiler",
]

HEADER = Path(__file__).with_name("cuda_emulation.h")
#: g++ flags: UBSan traps (SIGILL) on misaligned loads, out-of-bounds indices of local arrays,
#: signed overflow and the like; -O1 keeps the build quick; the sources pun types, as CUDA
#: code does, so no strict aliasing; no _FORTIFY_SOURCE, whose longjmp check refuses fibers
FLAGS = (
    "-shared",
    "-fPIC",
    "-O1",
    "-g",
    "-fno-strict-aliasing",
    "-U_FORTIFY_SOURCE",
    "-fsanitize=undefined",
    "-fsanitize-undefined-trap-on-error",
    "-Wno-unknown-pragmas",
)
#: NVRTC options and what the host compiler makes of them (None: nothing to do)
OPTIONS = {"-std=c++17": "-std=c++17", "-ftz=true": None}
SCALARS = {
    "float": np.float32,
    "double": np.float64,
    "bool": np.bool_,
    "signed char": np.int8,
    "unsigned char": np.uint8,
    "short int": np.int16,
    "short unsigned int": np.uint16,
    "int": np.int32,
    "unsigned int": np.uint32,
    "long int": np.int64,
    "long unsigned int": np.uint64,
    "long long int": np.int64,
    "long long unsigned int": np.uint64,
}
SIGNALS = {4: "SIGILL", 7: "SIGBUS", 8: "SIGFPE", 11: "SIGSEGV"}
_KERNEL = re.compile(
    r"__global__\s+void\s+(?:__launch_bounds__\s*\(\s*(\d+)[^)]*\)\s*)?(\w+)\s*\(([^)]*)\)"
)
_SITE = re.compile(r"@([0-9a-f]+)@")


class EmulationError(RuntimeError):
    """A launch did what a GPU would not allow, or what the emulation cannot check."""


class BuildError(EmulationError):
    """The host C++ compiler refused the unit (its log is the message)."""


class ArgumentError(EmulationError, TypeError):
    """A launch's arguments do not match the kernel's C++ signature or launch bounds."""


class DivergenceError(EmulationError):
    """The lanes of a warp did not all reach the same warp collective."""


class BarrierError(EmulationError):
    """Not every thread of a block reached the same ``__syncthreads``."""


class MemoryFault(EmulationError):
    """A thread touched memory outside its arguments, or wrote a const one."""


class UndefinedBehaviour(EmulationError):
    """UBSan trapped: a misaligned load, a local array overrun, an overflow..."""


class Report(ctypes.Structure):
    """``emu::Report`` of cuda_emulation.h."""

    _fields_ = [
        ("code", ctypes.c_int),
        ("argument", ctypes.c_int),
        ("offset", ctypes.c_int64),
        ("address", ctypes.c_size_t),
        ("block", ctypes.c_uint * 3),
        ("thread", ctypes.c_uint * 3),
        ("text", ctypes.c_char * 1024),
    ]


def compiler():
    """The host C++ compiler (``$CXX`` or g++), or None."""
    return shutil.which(os.environ.get("CXX", "g++"))


def launcher_table(name_expressions):
    """C++ appended to the unit: one ``emu::Kernel`` (launcher, signature) per instance."""
    rows = ",\n".join(f'    emu::kernel("{name}", &{name})' for name in name_expressions)
    return (
        '\n#line 1 "emulation launchers"\n'
        f'extern "C" const emu::Kernel emu_kernels[] = {{\n{rows}\n}};\n'
        f'extern "C" const int emu_kernel_count = {len(name_expressions)};\n'
    )


def host_options(options):
    """The g++ flags for NVRTC ``options``; an option without a host meaning is an error."""
    flags = []
    for option in options:
        if option.startswith(("-D", "-U")):
            flags.append(option)
        elif option in OPTIONS:
            flags += [OPTIONS[option]] if OPTIONS[option] else []
        else:
            raise BuildError(f"the emulation does not know the NVRTC option {option!r}")
    return flags


def cache_dir():
    folder = os.environ.get("ALS_CUDA_EMULATION_CACHE")
    folder = Path(folder) if folder else Path(tempfile.gettempdir()) / "als-cuda-emulation"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def build(code, options, name_expressions):
    """Compile the unit with its launchers into a shared library; return its path (cached)."""
    cxx = compiler()
    if cxx is None:
        raise BuildError("no host C++ compiler (g++ or $CXX) to build the emulation with")
    unit = code + launcher_table(name_expressions)
    command = [cxx, *host_options(options), *FLAGS, "-include", str(HEADER), "-x", "c++"]
    version = _version(cxx)
    key = hashlib.sha256(
        "\0".join([HEADER.read_text(), unit, " ".join(command), version]).encode()
    ).hexdigest()[:24]
    library = cache_dir() / f"kernels-{key}.so"
    if library.exists():
        return library
    with tempfile.TemporaryDirectory(dir=library.parent) as scratch:
        source = Path(scratch) / "unit.cu"
        source.write_text(unit)
        built = Path(scratch) / library.name
        result = subprocess.run(
            [*command, str(source), "-o", str(built)], capture_output=True, text=True
        )
        if result.returncode != 0:
            raise BuildError(f"the host compiler refused the kernels:\n{result.stderr}")
        os.replace(built, library)  # atomic: parallel sessions may build the same unit
    return library


@functools.cache
def _version(cxx):
    return subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout


def kernel_declarations(code):
    """``{kernel: (launch bound or None, [parameter names])}`` read from the CUDA source."""
    found = {}
    for bound, name, parameters in _KERNEL.findall(code):
        names = [re.findall(r"\w+", p)[-1] for p in _split_parameters(parameters)]
        found[name] = (int(bound) if bound else None, names)
    return found


def _split_parameters(text):
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"<": 1, ">": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [part.strip() for part in [*parts, current] if part.strip()]


class Parameter:
    """One kernel parameter: its name, its C++ spelling, and what a launch must pass."""

    def __init__(self, name, spelled, struct_types):
        self.name = name
        self.spelled = spelled
        self.pointer = spelled.endswith("*")
        base = spelled.rstrip("*").strip()
        self.const = self.pointer and (base.startswith("const ") or base.endswith(" const"))
        base = re.sub(r"\bconst\b", "", base).strip()
        known = {**SCALARS, **struct_types}
        if base not in known or (not self.pointer and base in struct_types):
            raise EmulationError(
                f"parameter {name} has a type the emulation cannot pass: {spelled}"
            )
        self.dtype = np.dtype(known[base])

    def check(self, kernel, value):
        if self.pointer:
            if not isinstance(value, np.ndarray):
                raise ArgumentError(
                    f"{kernel}: argument {self.name} ({self.spelled}) needs a device array, "
                    f"got {type(value).__name__}"
                )
            if value.dtype != self.dtype or not value.flags.c_contiguous:
                raise ArgumentError(
                    f"{kernel}: argument {self.name} ({self.spelled}) needs a C-contiguous "
                    f"{self.dtype} array, got {value.dtype}"
                    + ("" if value.flags.c_contiguous else " (not C-contiguous)")
                )
        elif type(value) is not self.dtype.type:
            raise ArgumentError(
                f"{kernel}: argument {self.name} ({self.spelled}) needs "
                f"numpy.{self.dtype.type.__name__}, got {type(value).__module__}."
                f"{type(value).__name__}"
            )


class Library:
    """One compiled unit, loaded: its kernels, their parameters, its source lines."""

    def __init__(self, path, code, struct_types):
        self.path = path
        self.lib = ctypes.CDLL(str(path))
        self._places = {}
        self._declare()
        declarations = kernel_declarations(code)
        self.kernels = {}
        for index in range(self.lib.emu_kernels_compiled()):
            name = self.lib.emu_kernel_name(index).decode()
            bound, names = declarations[name.split("<")[0]]
            arity = self.lib.emu_kernel_arity(index)
            if arity != len(names):
                raise EmulationError(f"{name}: {arity} parameters, {len(names)} names in source")
            spelled = [self._spelled(index, i) for i in range(arity)]
            parameters = [
                Parameter(n, s, struct_types) for n, s in zip(names, spelled, strict=True)
            ]
            self.kernels[name] = (index, bound, parameters)
        self._register_shared_memory()

    def _declare(self):
        lib = self.lib
        lib.emu_kernels_compiled.restype = ctypes.c_int
        lib.emu_kernel_name.argtypes = [ctypes.c_int]
        lib.emu_kernel_name.restype = ctypes.c_char_p
        lib.emu_kernel_arity.argtypes = [ctypes.c_int]
        lib.emu_kernel_arity.restype = ctypes.c_int
        lib.emu_kernel_parameter.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.emu_kernel_parameter.restype = ctypes.c_char_p
        lib.emu_image_base.restype = ctypes.c_size_t
        lib.emu_set_shared.argtypes = [
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.POINTER(ctypes.c_size_t),
            ctypes.c_int,
        ]
        lib.emu_launch.restype = ctypes.c_int
        lib.emu_launch.argtypes = [
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_ulonglong,
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.POINTER(ctypes.c_longlong),
            ctypes.POINTER(ctypes.c_int),
            ctypes.POINTER(Report),
        ]

    def _spelled(self, kernel, index):
        pretty = self.lib.emu_kernel_parameter(kernel, index).decode()
        return pretty[pretty.index("[with T = ") + len("[with T = ") : pretty.rindex("]")]

    def _register_shared_memory(self):
        """Find the kernels' ``__shared__`` variables (function-local statics) and register them.

        GCC ignores section attributes on statics inside templates, so they are read from
        the symbol table: every writable ``_ZZ`` object outside the emulation's namespace.
        """
        listing = subprocess.run(
            ["nm", "--defined-only", "-S", str(self.path)], capture_output=True, text=True
        ).stdout
        base = self.lib.emu_image_base()
        found = []
        for line in listing.splitlines():
            fields = line.split()
            if len(fields) != 4 or fields[2] not in "bBdDuV" or not fields[3].startswith("_ZZ"):
                continue
            if not fields[3].startswith("_ZZN3emu"):
                found.append((base + int(fields[0], 16), int(fields[1], 16)))
        addresses = (ctypes.c_void_p * max(len(found), 1))(*[a for a, _ in found])
        sizes = (ctypes.c_size_t * max(len(found), 1))(*[s for _, s in found])
        self.lib.emu_set_shared(addresses, sizes, len(found))
        self.shared_variables = len(found)

    def where(self, offset):
        """``file:line in function``, inner to outer through inlined calls, for a code offset."""
        if offset not in self._places:
            self._places[offset] = self._addr2line(offset)
        return self._places[offset]

    def _addr2line(self, offset):
        addr2line = shutil.which("addr2line")
        if addr2line is None:
            return f"code offset {offset:#x} (no addr2line to name the line)"
        lines = subprocess.run(
            [addr2line, "-e", str(self.path), "-f", "-i", "-C", hex(offset)],
            capture_output=True,
            text=True,
        ).stdout.splitlines()
        frames = []
        for function, place in zip(lines[::2], lines[1::2], strict=False):
            name = re.sub(r"^(?:\w[\w:<>, ]*\s)?(~?[\w:]+)[<(].*$", r"\1", function)
            file, _, line = place.partition(":")
            frames.append(f"{Path(file).name}:{line.split()[0]} in {name}")
        return ", inlined into ".join(frames)

    def explain(self, report, kernel, parameters, values):
        """The exception for a failed launch, its message in source terms."""
        text = _SITE.sub(lambda match: self.where(int(match.group(1), 16)), report.text.decode())
        thread, block = tuple(report.thread), tuple(report.block)
        code = report.code
        if code == 1:
            return DivergenceError(f"{kernel}: {text}")
        if code == 2:
            return BarrierError(f"{kernel}: {text}")
        if code == 5:
            return EmulationError(f"{kernel}: {text}")
        signal = int(text.split()[1])
        where = text.split(" at ", 1)[1]
        who = f"thread {thread} of block {block}"
        if code == 4:
            return UndefinedBehaviour(
                f"{kernel}: undefined behaviour (UBSan trap: a misaligned access, an index "
                f"past a local array, an overflow...) in {who} at {where}"
            )
        return MemoryFault(
            f"{kernel}: {SIGNALS.get(signal, signal)} in {who} at {where}: "
            + self._fault(report, parameters, values)
        )

    @staticmethod
    def _fault(report, parameters, values):
        if report.argument == -2:
            return "the thread's stack overflowed"
        if report.argument < 0:
            return f"address {report.address:#x} is in no argument"
        parameter = parameters[report.argument]
        size = values[report.argument].nbytes
        what = f"argument {parameter.name} ({parameter.spelled}, {size:,} bytes)"
        if report.offset < 0:
            return f"{-report.offset:,} bytes before the start of {what}"
        if report.offset >= size:
            return f"{report.offset - size:,} bytes past the end of {what} (byte {report.offset:,})"
        return f"a write to {what}, which the kernel declares const (byte {report.offset:,})"


@functools.cache
def _library(path, code, struct_items):
    return Library(path, code, dict(struct_items))


class Function:
    """One kernel instance: ``function(grid, block, args)``, as a ``cupy.RawKernel`` is called."""

    def __init__(self, module, name):
        self.module = module
        self.name = name
        self.index, self.bound, self.parameters = module.library.kernels[name]

    def __call__(self, grid, block, args, shared_mem=0, stream=None):
        grid, block = _dims(grid), _dims(block)
        self._check_geometry(grid, block, shared_mem)
        args = tuple(args)
        if len(args) != len(self.parameters):
            raise ArgumentError(
                f"{self.name} takes {len(self.parameters)} arguments, got {len(args)}"
            )
        for parameter, value in zip(self.parameters, args, strict=True):
            parameter.check(self.name, value)
        self._check_overlap(args)
        count = len(args)
        holders = []
        values = (ctypes.c_void_p * count)()
        sizes = (ctypes.c_longlong * count)()
        writable = (ctypes.c_int * count)()
        for i, (parameter, value) in enumerate(zip(self.parameters, args, strict=True)):
            if parameter.pointer:
                holder = ctypes.c_void_p(value.ctypes.data)
                sizes[i], writable[i] = value.nbytes, not parameter.const
            else:
                holder = np.ctypeslib.as_ctypes_type(parameter.dtype)(value.item())
                sizes[i] = -1
            holders.append(holder)
            values[i] = ctypes.addressof(holder)
        report = Report()
        code = self.module.library.lib.emu_launch(
            self.index,
            (ctypes.c_uint * 3)(*grid),
            (ctypes.c_uint * 3)(*block),
            self.module.seed,
            values,
            sizes,
            writable,
            ctypes.byref(report),
        )
        if code != 0:
            raise self.module.library.explain(report, self.name, self.parameters, args)

    def _check_geometry(self, grid, block, shared_mem):
        threads = block[0] * block[1] * block[2]
        if min(grid) < 1 or min(block) < 1 or max(grid[1:]) > 65535 or grid[0] >= 2**31:
            raise ArgumentError(f"{self.name}: grid {grid}, block {block}: no such launch")
        if threads > (self.bound or 1024) or threads > 1024:
            raise ArgumentError(
                f"{self.name}: {threads} threads per block, over the kernel's bound of "
                f"{self.bound or 1024}"
            )
        if shared_mem:
            raise ArgumentError(f"{self.name}: dynamic shared memory is not emulated")

    def _check_overlap(self, args):
        arrays = [
            (p, a) for p, a in zip(self.parameters, args, strict=True) if p.pointer and a.nbytes
        ]
        for i, (first, a) in enumerate(arrays):
            for second, b in arrays[i + 1 :]:
                if (first.const and second.const) or not np.shares_memory(a, b):
                    continue
                raise ArgumentError(
                    f"{self.name}: arguments {first.name} and {second.name} overlap and one "
                    "is written (the kernels declare every pointer __restrict__)"
                )


def _dims(value):
    value = (value,) if isinstance(value, int | np.integer) else tuple(value)
    return tuple(int(v) for v in value) + (1,) * (3 - len(value))


class Module:
    """``cupy.RawModule(code=..., options=..., name_expressions=...)`` on the emulated device.

    Parameters
    ----------
    code, options, name_expressions
        As CuPy takes them.
    struct_types : dict, optional
        Struct types the kernels take pointers to, by C++ name, and the NumPy dtype of
        their arrays (e.g. ``{"als_half": numpy.float16}``).
    seed : int
        The schedule: 0 runs blocks and threads in order, any other seed shuffles both
        (differently for each seed). Settable between launches.
    """

    def __init__(self, code, options=(), name_expressions=(), struct_types=None, seed=1):
        path = build(code, tuple(options), tuple(name_expressions))
        self.library = _library(path, code, tuple(sorted((struct_types or {}).items())))
        self.seed = seed

    def get_function(self, name):
        if name not in self.library.kernels:
            raise EmulationError(f"{name} is not one of the module's name expressions")
        return Function(self, name)
