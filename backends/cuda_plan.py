"""Host-side plan of the CUDA kernels: chunks of rows, factor buckets, launch geometry, batches.

Everything here is plain Python on NumPy (or, for :func:`plan_chunks`, any array module
``xp`` with NumPy's API, so the plan is built where the matrix lives), so it is unit-tested
in CI without a GPU. ``backends.cupy_cuda`` launches the kernels exactly as planned here, and
``backends.chunked_cg`` runs the same plan in NumPy to check the decomposition.

Chunks. No row may bound a half-iteration (a popular item has tens of thousands of entries):
the sparse part of every CG product is cut into *chunks* of at most ``chunk_entries``
consecutive stored entries of one row. One warp handles one chunk; a row of one chunk adds
its sum straight into the row's accumulator, the chunks of a longer row add theirs with
atomics (the segmented reduction). Empty rows have no chunk.

Factor buckets. The kernels keep each lane's share of a factor vector in registers, so the
number of values per lane is a template parameter: factors = 32 x {1, 2, 4, 8} (32, 64, 128,
256) run the *vector* layout (lane l owns values [l * n, (l + 1) * n), loaded as one or two
16-byte words where the type allows); any other count up to ``MAX_KERNEL_FACTORS`` runs the
*strided* layout of the next bucket up (lane l owns l, l + 32, ...). Beyond that the backend
falls back to the array-code reference CG.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "CHUNK_ENTRIES",
    "MAX_KERNEL_FACTORS",
    "VECTOR_PER_LANE",
    "STRIDED_PER_LANE",
    "WARPS_PER_BLOCK",
    "TOPK_SEGMENT_ITEMS",
    "factor_layout",
    "is_aligned",
    "order_key",
    "plan_chunks",
    "warp_geometry",
    "topk_batch_rows",
    "topk_segments",
]

#: stored entries per chunk: long enough to hide the atomics' cost, short enough that
#: ML-20M's 20M entries give ~80k chunks, ten per resident warp of an H100/H200
CHUNK_ENTRIES = 256
#: values of a factor vector per lane with the vector (contiguous, wide-load) layout
VECTOR_PER_LANE = (1, 2, 4, 8)
#: values per lane with the strided layout, for any factor count up to 32 x the largest
STRIDED_PER_LANE = (1, 2, 4, 8, 16, 32)
MAX_KERNEL_FACTORS = 32 * STRIDED_PER_LANE[-1]
#: warps per block of every warp-per-item kernel (256 threads: the kernels' launch bound)
WARPS_PER_BLOCK = 8


def factor_layout(factors, itemsize, vector_types=True, aligned=True):
    """Return ``(per_lane, vector)`` for a kernel over ``factors``-long rows, or None.

    ``vector`` is True for the contiguous wide-load layout: factors exactly 32 x a vector
    bucket, a storage type that has a vector instance (``vector_types``) and row starts
    aligned to one lane's share (``aligned``: every row's first byte on a multiple of
    ``per_lane * itemsize``, capped at 16). None when factors exceed MAX_KERNEL_FACTORS.
    """
    if factors < 1:
        raise ValueError(f"factors must be at least 1, got {factors}")
    if factors > MAX_KERNEL_FACTORS:
        return None
    per_lane = factors // 32
    if vector_types and aligned and factors % 32 == 0 and per_lane in VECTOR_PER_LANE:
        return per_lane, True
    needed = math.ceil(factors / 32)
    return next(n for n in STRIDED_PER_LANE if n >= needed), False


def is_aligned(address, factors, per_lane, itemsize):
    """Whether each row of a C-contiguous ``factors``-wide array at ``address`` takes wide loads."""
    word = min(per_lane * itemsize, 16)
    return address % word == 0 and (factors * itemsize) % word == 0


def plan_chunks(xp, indptr, chunk_entries=CHUNK_ENTRIES):
    """Cut the rows of a CSR matrix into chunks of at most ``chunk_entries`` entries.

    Parameters
    ----------
    xp : module
        The array module ``indptr`` lives in (numpy or cupy).
    indptr : array of int
        The CSR row pointer (n_rows + 1 offsets).
    chunk_entries : int
        The most entries one chunk (one warp) handles.

    Returns
    -------
    chunk_row, chunk_begin, chunk_end : int32 arrays
        For chunk c: its row and its entries ``[chunk_begin[c], chunk_end[c])``. Chunks are
        ordered by row, then by position in the row; every stored entry is in exactly one
        chunk; empty rows have none.
    """
    if chunk_entries < 1:
        raise ValueError(f"chunk_entries must be at least 1, got {chunk_entries}")
    starts = indptr[:-1].astype(xp.int64)
    lengths = indptr[1:].astype(xp.int64) - starts
    counts = (lengths + chunk_entries - 1) // chunk_entries
    offsets = xp.zeros(len(counts) + 1, dtype=xp.int64)
    xp.cumsum(counts, out=offsets[1:])
    n_chunks = int(offsets[-1])
    chunk = xp.arange(n_chunks, dtype=xp.int64)
    # the row of chunk c is the last row whose first chunk is at or before c
    chunk_row = xp.searchsorted(offsets[1:], chunk, side="right")
    begin = starts[chunk_row] + (chunk - offsets[chunk_row]) * chunk_entries
    end = xp.minimum(begin + chunk_entries, starts[chunk_row] + lengths[chunk_row])
    return chunk_row.astype(xp.int32), begin.astype(xp.int32), end.astype(xp.int32)


def warp_geometry(items):
    """``(grid, block)`` for a kernel running one warp per item (chunk or row).

    ``WARPS_PER_BLOCK`` warps per block and enough blocks for every item; the kernels return
    early in warps past the last item. At least one block, so an empty launch is legal.
    """
    blocks = max(1, -(-items // WARPS_PER_BLOCK))
    return (blocks,), (32 * WARPS_PER_BLOCK,)


def topk_batch_rows(n_queries, n_items, k, segments, score_bytes, free_bytes, sm_count):
    """Queries scored per batch by ``topk``: as many as a quarter of free memory holds.

    A batch holds its score block (``n_items`` scores of ``score_bytes`` per query) and its
    candidates (``segments * k`` ids, scores and three float64 sort keys per query). At least
    ``4 * sm_count`` rows when memory allows, so the selection fills the device; at least 1;
    at most ``n_queries``.
    """
    per_row = n_items * score_bytes + segments * k * (4 + score_bytes + 3 * 8 + 8)
    rows = (free_bytes // 4) // max(per_row, 1)
    if rows < 4 * sm_count:
        # not enough memory for a full device: take what fits, even if that is one row
        rows = max(rows, 1)
    return int(min(max(rows, 1), max(n_queries, 1)))


#: target length of one top-k segment: a few hundred blocks' segments stay in the L2 cache
#: between the select's passes (512 blocks x 16k float32 scores = 32 MB of 50-60 MB)
TOPK_SEGMENT_ITEMS = 1 << 14


def topk_segments(n_items, k, segment_items=TOPK_SEGMENT_ITEMS):
    """Return ``(segments, segment_length)``: how one query's scores are split among blocks.

    Each block selects the exact top ``k`` of ``segment_length`` consecutive candidates, so
    every segment, the last (shorter) one included, must hold at least ``k``. The union of
    the segments' top ``k`` contains the row's top ``k`` (the order is total), which one sort
    of the ``segments * k`` candidates then finds.
    """
    if not 1 <= k <= n_items:
        raise ValueError(f"need 1 <= k <= n_items, got k={k}, n_items={n_items}")
    segments = max(1, n_items // max(segment_items, k))
    while True:
        length = -(-n_items // segments)
        last = n_items - (segments - 1) * length
        if segments == 1 or last >= k:
            return segments, length
        segments -= 1


def order_key(scores):
    """NumPy statement of ``order_key`` in kernels/common.cuh, for float32 or float64 scores.

    A better (larger) score gets a smaller unsigned key; 0.0 and -0.0 get the same key; -inf
    the largest key of any number and NaN (either sign) the largest key of all, so NaN ranks
    last, after -inf, as NumPy's sort puts it.
    """
    scores = np.asarray(scores)
    unsigned = {4: np.uint32, 8: np.uint64}[scores.dtype.itemsize]
    sign = unsigned(1) << unsigned(8 * scores.dtype.itemsize - 1)
    bits = np.where(scores == 0, 0, scores).astype(scores.dtype).view(unsigned)
    ascending = np.where(bits & sign, ~bits, bits | sign)
    return np.where(np.isnan(scores), np.iinfo(unsigned).max, ~ascending).astype(unsigned)
