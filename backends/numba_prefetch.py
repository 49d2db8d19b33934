"""A software prefetch for Numba kernels: ``prefetch_row(M, i)`` asks the CPU to bring row i
of a 2-d array with contiguous rows into its caches.

The CG solve gathers rows of the other side's factors in the order of a row's stored
entries, which no hardware prefetcher can guess: once the factors outgrow one core's L2
cache, each row it reads waits for memory. Issuing the fetches of the rows a few entries
ahead lets those waits overlap the arithmetic on the current ones. The hint is LLVM's
``llvm.prefetch`` (read, keep in all levels, data cache): it never faults, so a row index
that is in range is all the caller must guarantee, and it changes no result.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["CACHE_LINE", "prefetch_row"]

#: bytes per cache line: one prefetch per line of a row
CACHE_LINE = 64


@intrinsic
def prefetch_row(typingctx, matrix, row):
    """Prefetch every cache line of ``matrix[row]`` (2-d, contiguous rows, row in range)."""
    if not isinstance(matrix, types.Array) or matrix.ndim != 2:
        return None
    if not isinstance(row, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        matrix_type, row_type = signature.args
        array = context.make_array(matrix_type)(context, builder, args[0])
        intp = context.get_value_type(types.intp)
        index = context.cast(builder, args[1], row_type, types.intp)
        start = cgutils.get_item_pointer(
            context, builder, matrix_type, array, [index, ir.Constant(intp, 0)], wraparound=False
        )
        byte = ir.IntType(8).as_pointer()
        columns = cgutils.unpack_tuple(builder, array.shape, 2)[1]
        itemsize = context.get_abi_sizeof(context.get_data_type(matrix_type.dtype))
        row_bytes = builder.mul(columns, ir.Constant(intp, itemsize))
        prefetch = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(ir.VoidType(), [byte] + [ir.IntType(32)] * 3),
            "llvm.prefetch.p0",
        )
        read, keep, data = (ir.Constant(ir.IntType(32), value) for value in (0, 3, 1))
        # one fetch per line the row touches, from the line holding its first byte
        first = builder.ptrtoint(start, intp)
        line = builder.and_(first, ir.Constant(intp, -CACHE_LINE))
        end = builder.add(first, row_bytes)
        lines = builder.udiv(
            builder.add(builder.sub(end, line), ir.Constant(intp, CACHE_LINE - 1)),
            ir.Constant(intp, CACHE_LINE),
        )
        with cgutils.for_range(builder, lines) as loop:
            address = builder.add(line, builder.mul(loop.index, ir.Constant(intp, CACHE_LINE)))
            builder.call(prefetch, [builder.inttoptr(address, byte), read, keep, data])
        return context.get_dummy_value()

    return types.void(matrix, row), codegen
