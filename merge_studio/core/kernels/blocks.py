"""Pieces every merge kernel uses: read a stored entry as float32, add a scaled term, check,
measure and store a block.

A kernel works on blocks of :data:`BLOCK` entries that stay in the L1 cache and makes as few
passes over a block as it can: each pass reads the stored entries itself (:func:`stored_float`)
instead of widening them into a buffer first, and the last pass checks, rounds and stores.

Every pass is a small compiled function of its own (``…_into``): numba optimises each
function before LLVM inlines it into its caller, so each pass is vectorised on its own. Written
inline in a kernel, the same loops were vectorised or not depending on the number of models
(the tuple's length is part of the kernel's type, and two models unrolled into a scalar loop
three times slower). A loop over models inside the loop over entries would not vectorise at all.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from merge_studio.core.kernels import BLOCK  # noqa: F401 - the kernels take it from here
# Metric sums may be re-associated (they are estimates shown per layer, not output bytes).
SUMS = {"reassoc", "nsz", "contract"}


@intrinsic
def as_bits(typingctx, value):  # type: ignore[no-untyped-def]
    """The bit pattern (uint32) of the float32 ``value``."""
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


@intrinsic
def widened(typingctx, stored, by):  # type: ignore[no-untyped-def]
    """A stored entry (uint16 or uint32 bits) as float32 bits shifted up ``by`` (uint32), in
    32-bit arithmetic: numba would widen integers to 64 bits first, which halves the lanes."""
    if not (isinstance(stored, types.Integer) and stored.bitwidth in (16, 32) and isinstance(by, types.Integer)):
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        i32 = ir.IntType(32)
        value, shift = args
        value = builder.zext(value, i32) if stored.bitwidth < 32 else value
        shift = builder.trunc(shift, i32) if by.bitwidth > 32 else builder.zext(shift, i32) if by.bitwidth < 32 else shift
        return builder.bitcast(builder.shl(value, shift), ir.FloatType())

    return types.float32(stored, by), codegen


@njit(nogil=True, error_model="numpy", cache=True)
def stored_float(source: np.ndarray, j: int, by: np.uint32) -> np.float32:
    """Entry ``j`` of stored bits as float32: bfloat16 shifted up 16 (exactly torch's
    conversion), float32 as is."""
    return widened(source[j], by)


@njit(nogil=True, error_model="numpy", fastmath={"contract"}, cache=True)
def add_scaled(acc: np.float32, x: np.float32, w: np.float32) -> np.float32:
    """acc + w·x with one rounding where the CPU has a fused multiply-add, as torch's
    vectorised ``Tensor.add_(x, alpha=w)`` computes it (LLVM contracts only this expression)."""
    return acc + x * w


@intrinsic
def rounded_to_bfloat16(typingctx, value):  # type: ignore[no-untyped-def]
    """The bfloat16 bits (in a uint32) of the float32 ``value``, rounded to nearest even as
    torch rounds (finite values only: :func:`store` counts the others), in 32-bit arithmetic."""
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        i32 = ir.IntType(32)
        b = builder.bitcast(args[0], i32)
        odd = builder.and_(builder.lshr(b, ir.Constant(i32, 16)), ir.Constant(i32, 1))
        return builder.lshr(builder.add(builder.add(b, ir.Constant(i32, 0x7FFF)), odd), ir.Constant(i32, 16))

    return types.uint32(types.float32), codegen


@intrinsic
def not_within(typingctx, value, limit):  # type: ignore[no-untyped-def]
    """1 when ``|value| ≤ limit`` fails (beyond it, or NaN), else 0, as a uint32: counted in
    32-bit lanes."""
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        magnitude = builder.call(builder.module.declare_intrinsic("llvm.fabs", [ir.FloatType()]), [args[0]])
        within = builder.fcmp_ordered("<=", magnitude, args[1])
        return builder.zext(builder.not_(within), ir.IntType(32))

    return types.uint32(types.float32, types.float32), codegen


@njit(nogil=True, error_model="numpy", cache=True)
def widen_into(dest: np.ndarray, source: np.ndarray, by: np.uint32) -> None:
    """dest = the stored block as float32."""
    for j in range(source.shape[0]):
        dest[j] = stored_float(source, j, by)


@njit(nogil=True, error_model="numpy", cache=True)
def scale_into(result: np.ndarray, source: np.ndarray, by: np.uint32, w: np.float32) -> None:
    """result = θ·w for a stored block θ."""
    for j in range(source.shape[0]):
        result[j] = stored_float(source, j, by) * w


@njit(nogil=True, error_model="numpy", cache=True)
def add_scaled_into(result: np.ndarray, source: np.ndarray, by: np.uint32, w: np.float32) -> None:
    """result += θ·w for a stored block θ, fused as torch's ``add_(θ, alpha=w)`` is."""
    for j in range(source.shape[0]):
        result[j] = add_scaled(result[j], stored_float(source, j, by), w)


@njit(nogil=True, error_model="numpy", cache=True)
def divide_into(result: np.ndarray, divisor: np.float32) -> None:
    """result /= divisor (a true division, as torch divides)."""
    for j in range(result.shape[0]):
        result[j] = result[j] / divisor


@njit(nogil=True, error_model="numpy", cache=True)
def store(result: np.ndarray, dest: np.ndarray, out_shift: int, limit: np.float32) -> int:
    """Store a block's float32 results in the output dtype and return how many are not finite
    or beyond ``limit`` (counted in 32-bit lanes, alongside the stores)."""
    bad = np.uint32(0)
    for j in range(result.shape[0]):
        bad += not_within(result[j], limit)
    if out_shift:
        for j in range(result.shape[0]):
            dest[j] = rounded_to_bfloat16(result[j])
    else:
        for j in range(result.shape[0]):
            dest[j] = as_bits(result[j])
    return int(bad)


@njit(nogil=True, error_model="numpy", fastmath=SUMS, cache=True)
def change_sums(result: np.ndarray, reference: np.ndarray, by: np.uint32, metrics: np.ndarray) -> None:
    """Add Σ(result − reference)² and Σ reference² to ``metrics[0]`` and ``metrics[1]``;
    ``reference`` is stored bits (see :func:`stored_float`)."""
    d2 = np.float32(0.0)
    r2 = np.float32(0.0)
    for j in range(result.shape[0]):
        f = stored_float(reference, j, by)
        d = result[j] - f
        d2 += d * d
        r2 += f * f
    metrics[0] += np.float64(d2)
    metrics[1] += np.float64(r2)


@njit(nogil=True, error_model="numpy", fastmath=SUMS, cache=True)
def plain_sum(x: np.ndarray) -> float:
    s = np.float32(0.0)
    for j in range(x.shape[0]):
        s += x[j]
    return np.float64(s)
