"""The emulated device's checks (tests/cuda_emulation), on the real kernels and on broken copies.

Each broken copy is the real kernel's text from ``kernel_source()`` with one planted defect,
renamed and compiled beside the real kernels in one unit (its ``#line`` keeps the original's
file and line numbers). Every defect must surface as the error the emulation promises for it:
a missing ``__syncthreads`` as a result that depends on the schedule seed, a lane that skips
a ``warp_sum`` as divergence, a thread that leaves before a barrier as a barrier error, a
read past a chunk as a fault naming the argument and the source line, a misaligned vector
load and a local array overrun as UBSan traps naming the line. The launch checks (argument
types against the C++ signature, launch bounds, overlapping arguments) are tested here too.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import als.backends.cupy_cuda as cupy_cuda
from als.backends.cuda_plan import plan_chunks, warp_geometry
from tests import cuda_emulation
from tests.fake_cupy import STRUCT_TYPES

pytestmark = pytest.mark.skipif(
    cuda_emulation.compiler() is None, reason="no host C++ compiler (g++) for the emulation"
)

SOURCE = cupy_cuda.kernel_source()
KERNEL_DIR = Path(cupy_cuda.__file__).parent / "kernels"

#: broken copy -> (kernel it copies, text of the kernel, what that text becomes)
BROKEN = {
    "topk_select_unsynced": (
        "topk_select",
        "warp_ties[warp] = __popc(ballot);\n        __syncthreads();\n",
        "warp_ties[warp] = __popc(ballot);\n",
    ),
    "topk_select_half_leaves": (
        "topk_select",
        "    int* out = out_ids + static_cast<long long>(blockIdx.x) * k;\n",
        "    int* out = out_ids + static_cast<long long>(blockIdx.x) * k;\n"
        "    if (threadIdx.x >= blockDim.x / 2) return;\n",
    ),
    "cg_sparse_lane_skips": (
        "cg_sparse",
        "const A dot = warp_sum(lane_dot<A, PER_LANE>(y, v));",
        "const A dot = lane == 31 ? A(0) : warp_sum(lane_dot<A, PER_LANE>(y, v));",
    ),
    "cg_sparse_past_chunk": (
        "cg_sparse",
        "for (; index < end; ++index)",
        "for (; index <= end; ++index)",
    ),
    "cg_update_overrun": (
        "cg_update",
        "k < PER_LANE; ++k) {\n        const int j = lane + 32 * k;\n        rv[k]",
        "k <= PER_LANE; ++k) {\n        const int j = lane + 32 * k;\n        rv[k]",
    ),
}

#: small kernels of the tests' own: every half widened, a __shared__ read before any write
PROBES = """
#line 1 "probes"
__global__ void widen_halves(const als_half* __restrict__ in, float* __restrict__ out, int n) {
    const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) out[i] = to_compute(in[i]);
}

__global__ void read_shared_first(unsigned int* __restrict__ out) {
    __shared__ unsigned int cell;
    if (threadIdx.x == 0) out[blockIdx.x] = cell;
    __syncthreads();
    cell = 7u;
}
"""

NAMES = [
    "topk_select<float>",
    "topk_select_unsynced<float>",
    "topk_select_half_leaves<float>",
    "cg_sparse<float, 4, true>",
    "cg_sparse_lane_skips<float, 1, false>",
    "cg_sparse_past_chunk<float, 1, false>",
    "cg_init<float>",
    "cg_update_overrun<float, 1>",
    "widen_halves",
    "read_shared_first",
]


def kernel_text(name):
    """The template kernel ``name`` from the unit, behind a ``#line`` naming where it came from."""
    start = re.search(rf"template <[^\n]*>\n__global__[^{{]*?\b{name}\(", SOURCE).start()
    end = SOURCE.index("{", SOURCE.index(f"{name}(", start))
    depth = 1
    while depth:  # to the brace that closes the body
        end += 1
        depth += {"{": 1, "}": -1}.get(SOURCE[end], 0)
    before = SOURCE[:start]
    directive = before.rindex("#line 1 ")
    file = before[directive:].split('"')[1]
    line = before[directive:].count("\n")  # lines since the directive's own
    return f'#line {line} "{file}"\n' + SOURCE[start : end + 1] + "\n"


def broken_copy(copy):
    name, old, new = BROKEN[copy]
    text = kernel_text(name)
    assert text.count(old) == 1, copy
    return text.replace(old, new).replace(f"{name}(", f"{copy}(", 1)


def source_line(file, text):
    """``file:line`` of the one line of ``file`` holding ``text``."""
    lines = (KERNEL_DIR / file).read_text().split("\n")
    found = [number for number, line in enumerate(lines, 1) if text in line]
    assert len(found) == 1, (file, text, found)
    return f"{file}:{found[0]}"


@pytest.fixture(scope="module")
def device():
    unit = SOURCE + "".join(broken_copy(copy) for copy in BROKEN) + PROBES
    return cuda_emulation.Module(unit, cupy_cuda.COMPILE_OPTIONS, NAMES, STRUCT_TYPES)


def launch(device, name, grid, block, args, seed=1):
    device.seed = seed
    device.get_function(name)(grid, block, args)


# -- the real kernels ---------------------------------------------------------------------


def test_every_half_widens_exactly_as_numpy_widens_it(device):
    halves = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    out = np.full(halves.size, np.nan, np.float32)
    launch(device, "widen_halves", (256,), (256,), (halves, out, np.int32(halves.size)))
    expected = halves.astype(np.float32)
    nan = np.isnan(expected)
    np.testing.assert_array_equal(out[~nan].view(np.uint32), expected[~nan].view(np.uint32))
    assert np.isnan(out[nan]).all() and nan.sum() == 2 * 1023  # every NaN stays NaN


def test_shared_memory_is_poisoned_before_every_block(device):
    out = np.zeros(3, np.uint32)
    launch(device, "read_shared_first", (3,), (32,), (out,))
    assert (out == 0xFFFFFFFF).all()  # never 7, what the block before left there


def topk_case(seed=0, n_items=1500, k=700):
    """One row of scores with many ties around the k-th: the id order settles the cut."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, size=(1, n_items)).astype(np.float32)
    return scores, k


def run_topk(device, name, seed):
    scores, k = topk_case()
    out = np.empty((1, k), np.int32)
    args = (scores, np.int64(scores.shape[1]), np.int64(scores.shape[1]), np.int32(1))
    launch(device, name, (1,), (512,), (*args, np.int32(k), out), seed)
    return tuple(np.sort(out[0]))  # the kernel promises no order within a segment


def test_intact_top_k_is_exact_under_every_schedule(device):
    scores, k = topk_case()
    expected = tuple(np.sort(np.lexsort([np.arange(scores.shape[1]), -scores[0]])[:k]))
    for seed in range(4):
        assert run_topk(device, "topk_select<float>", seed) == expected


def test_cg_init_zeroes_x_and_p_of_empty_rows(device):
    rows, factors = 20, 5
    indptr = np.repeat(np.arange(0, 44, 4, dtype=np.int32), 2)[: rows + 1]  # every other empty
    x, r, xYtY = (np.ones((rows, factors), np.float32) for _ in range(3))
    p = np.full((rows, factors), np.nan, np.float32)  # what a fresh allocation may hold
    rsold, active = np.full(rows, np.nan, np.float32), np.full(rows, -1, np.int32)
    grid, block = warp_geometry(rows)
    args = (x, r, p, xYtY, indptr, rsold, active, np.int32(rows), np.int32(factors))
    launch(device, "cg_init<float>", grid, block, (*args, np.float32(1e-20)))
    empty = np.diff(indptr) == 0
    assert empty.any() and (~empty).any()
    assert (x[empty] == 0).all() and (p[empty] == 0).all() and (active[empty] == 0).all()
    assert np.isfinite(p).all() and (rsold[empty] == 0).all()


# -- broken copies ------------------------------------------------------------------------


def test_a_missing_barrier_shows_as_a_schedule_dependent_result(device):
    intact = run_topk(device, "topk_select<float>", 0)
    # in order, each warp's count is written before the warps after it read it: no sign
    assert run_topk(device, "topk_select_unsynced<float>", 0) == intact
    shuffled = {run_topk(device, "topk_select_unsynced<float>", seed) for seed in range(1, 9)}
    assert shuffled - {intact}


def test_a_thread_that_leaves_before_a_barrier_is_a_barrier_error(device):
    with pytest.raises(
        cuda_emulation.BarrierError,
        match=r"(?s)topk\.cu:\d+ in topk_select_half_leaves.*has exited",
    ):
        run_topk(device, "topk_select_half_leaves<float>", 1)


def sparse_case(factors, entries_per_row=3, rows=6, n_items=10, dtype=np.float32, seed=0):
    """A CSR block with ``entries_per_row`` entries a row (a tail after the unrolled loop)."""
    rng = np.random.default_rng(seed)
    indptr = np.arange(0, rows * entries_per_row + 1, entries_per_row, dtype=np.int32)
    indices = np.concatenate(
        [rng.choice(n_items, entries_per_row, replace=False) for _ in range(rows)]
    ).astype(np.int32)
    data = rng.uniform(1, 3, indices.size).astype(np.float32)
    Y = rng.standard_normal((n_items, factors)).astype(dtype)
    V = rng.standard_normal((rows, factors)).astype(np.float32)
    return indptr, indices, data, Y, V


def sparse_args(indptr, indices, data, Y, V, factors):
    chunk_row, chunk_begin, chunk_end = plan_chunks(np, indptr)
    out = np.zeros_like(V)
    active = np.ones(len(indptr) - 1, np.int32)
    args = (chunk_row, chunk_begin, chunk_end, np.int32(len(chunk_row)), indptr, indices, data)
    args += (Y, V, out, active, np.int32(factors), np.int32(1), np.float32(1))
    return warp_geometry(len(chunk_row)), args


def test_a_lane_that_skips_a_warp_sum_is_divergence(device):
    (grid, block), args = sparse_args(*sparse_case(8), factors=8)
    line = source_line("cg_chunked.cu", "const A dot = warp_sum(lane_dot<A, PER_LANE>(y, v));")
    message = (
        rf"(?s)warp divergence.*warp_sum, inlined into {line} in cg_sparse_lane_skips.*lane 31"
    )
    with pytest.raises(cuda_emulation.DivergenceError, match=message):
        launch(device, "cg_sparse_lane_skips<float, 1, false>", grid, block, args)


def test_a_read_past_a_chunk_faults_naming_the_argument_and_line(device):
    indptr, indices, data, Y, V = sparse_case(8)
    (grid, block), args = sparse_args(indptr, indices, data, Y, V, factors=8)
    line = source_line("cg_chunked.cu", "(Y + static_cast<long long>(indices[index]) * factors,")
    message = rf"SIGSEGV .* at {line} in cg_sparse_past_chunk.*0 bytes past the end of argument "
    with pytest.raises(cuda_emulation.MemoryFault, match=message + r"indices \(const int\*"):
        launch(device, "cg_sparse_past_chunk<float, 1, false>", grid, block, args)


def test_a_misaligned_vector_load_is_undefined_behaviour(device):
    # the vector instance on a factor array one float off a 16-byte boundary: what the host
    # must never launch (is_aligned sends such arrays to the strided layout)
    indptr, indices, data, Y, V = sparse_case(128, entries_per_row=5)
    shifted = np.zeros(Y.size + 4, np.float32)
    shifted = shifted[1 : 1 + Y.size].reshape(Y.shape)
    shifted[...] = Y
    assert shifted.ctypes.data % 16 == 4
    (grid, block), args = sparse_args(indptr, indices, data, shifted, V, factors=128)
    line = source_line("cg_chunked.cu", "words[w] = source[w];")
    with pytest.raises(cuda_emulation.UndefinedBehaviour, match=rf"{line} in load_lane"):
        launch(device, "cg_sparse<float, 4, true>", grid, block, args)
    aligned = sparse_args(indptr, indices, data, Y, V, factors=128)[1]  # the same, aligned
    launch(device, "cg_sparse<float, 4, true>", grid, block, aligned)


def test_a_local_array_overrun_is_undefined_behaviour(device):
    rows, factors = 8, 20
    x, r, p, Ap = (np.ones((rows, factors), np.float32) for _ in range(4))
    rsold, active = np.ones(rows, np.float32), np.ones(rows, np.int32)
    grid, block = warp_geometry(rows)
    args = (x, r, p, Ap, rsold, active, np.int32(rows), np.int32(factors), np.float32(0))
    with pytest.raises(cuda_emulation.UndefinedBehaviour, match=r"cg_chunked\.cu:\d+ in cg_update"):
        launch(device, "cg_update_overrun<float, 1>", grid, block, args)


# -- launch checks --------------------------------------------------------------------------


def test_every_launch_is_checked_against_the_kernels_signature(device):
    (grid, block), args = sparse_args(*sparse_case(8), factors=8)
    name = "cg_sparse_lane_skips<float, 1, false>"
    cases = {
        r"takes 14 arguments, got 13": args[:-1],
        r"argument n_chunks \(int\) needs numpy\.int32, got builtins\.int": (
            *args[:3],
            int(args[3]),
            *args[4:],
        ),
        r"argument sign \(float\) needs numpy\.float32, got numpy\.float64": (
            *args[:-1],
            np.float64(1),
        ),
        r"argument indices \(const int\*\) needs a C-contiguous int32 array, got int64": (
            *args[:5],
            args[5].astype(np.int64),
            *args[6:],
        ),
        r"argument Y \(const float\*\) .* \(not C-contiguous\)": (
            *args[:7],
            np.asfortranarray(np.ones((10, 8), np.float32)),
            *args[8:],
        ),
        r"argument active \(const int\*\) needs a device array, got int32": (
            *args[:10],
            np.int32(1),
            *args[11:],
        ),
        r"arguments V and out overlap": (*args[:9], args[8], *args[10:]),
    }
    for message, arguments in cases.items():
        with pytest.raises(cuda_emulation.ArgumentError, match=message):
            device.get_function(name)(grid, block, arguments)
    with pytest.raises(cuda_emulation.ArgumentError, match="512 threads per block, over .* 256"):
        device.get_function(name)(grid, (512,), args)
    with pytest.raises(cuda_emulation.EmulationError, match="not one of the module's"):
        device.get_function("cg_sparse<float, 3, true>")
