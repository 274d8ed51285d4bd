"""exp(x) for x <= 0 in a form LLVM vectorises, for the softmaxes inside Numba kernels.

Numba calls the C library's scalar ``exp`` for ``math.exp`` (no SVML here), one value
at a time; a softmax over fields spends most of its time there. This routine is the
textbook method, written as two plain loops over a buffer so that LLVM turns them into
SIMD code:

    k = round(x / ln 2),   r = x - k ln 2   (ln 2 split in two parts, Cody-Waite),
    exp(r) = sum_{n <= N} r^n / n!,   exp(x) = exp(r) * 2^k, 2^k built from its IEEE bits.

:func:`exp_nonpositive` works in the buffer's own dtype:

* float64: N = 13 (|r| <= ln(2)/2: truncation below 1e-17 relative); within 2 ulp of
  ``np.exp`` for -708 <= x <= 0, and 0 below -708 (exp(x) < 3.3e-308).
* float32: N = 7 (truncation below 1e-8 relative), float32 arithmetic throughout (eight
  values per 256-bit vector instead of four); within 2 float32 ulp of the exact exp for
  -87 <= x <= 0, and 0 below -87 (exp(x) < 1.7e-38, next to float32's smallest normal).

Both are tested (``tests/test_kernels_experts.py``). A masked score of -inf gets
probability exactly 0; NaN stays NaN. Only for x <= 0 (a max-shifted softmax).

>>> import numpy as np
>>> t = np.array([0.0, -1.0, -np.inf]); pow2 = np.empty(3)
>>> exp_nonpositive(t, pow2, 3)
>>> np.allclose(t, [1.0, np.exp(-1.0), 0.0], rtol=1e-15, atol=0)
True
"""
import math

import numba
import numpy as np
from numba import types
from numba.extending import overload

LOG2E = 1.4426950408889634           # 1 / ln 2
LN2_HI = 0.693145751953125           # ln 2 = LN2_HI + LN2_LO; LN2_HI has 11 significant
LN2_LO = 1.4286068203094173e-06      # bits, so k * LN2_HI is exact for |k| <= 1024
EXP_MIN = -708.0                     # below: exp(x) < 3.3e-308, returned as 0


def _exp64(t, bits, pow2, n):
    """t[:n] <- exp(t[:n]) in place (float64, every t <= 0). ``bits`` (int64) and
    ``pow2`` (float64) are one scratch buffer of at least n entries seen as both types
    (``pow2.view(np.int64)``): the first loop writes 2^k as bits, the second reads it
    as a float."""
    for j in range(n):
        x = t[j]
        xc = EXP_MIN if x < EXP_MIN else x          # NaN passes through
        k = np.floor(xc * LOG2E + 0.5)
        r = xc - k * LN2_HI - k * LN2_LO            # |r| <= ln(2) / 2
        p = 1.0 / 6227020800.0                      # Horner: sum r^n / n!, n = 13..0
        p = p * r + 1.0 / 479001600.0
        p = p * r + 1.0 / 39916800.0
        p = p * r + 1.0 / 3628800.0
        p = p * r + 1.0 / 362880.0
        p = p * r + 1.0 / 40320.0
        p = p * r + 1.0 / 5040.0
        p = p * r + 1.0 / 720.0
        p = p * r + 1.0 / 120.0
        p = p * r + 1.0 / 24.0
        p = p * r + 1.0 / 6.0
        p = p * r + 0.5
        p = p * r + 1.0
        p = p * r + 1.0
        t[j] = 0.0 if x < EXP_MIN else p
        bits[j] = (np.int64(k) + 1023) << 52        # the bits of 2^k (k >= -1022)
    for j in range(n):
        t[j] *= pow2[j]


LOG2E_32 = np.float32(LOG2E)
LN2_HI_32 = np.float32(0.693359375)      # ln 2 = LN2_HI_32 + LN2_LO_32; 9 significant bits,
LN2_LO_32 = np.float32(-2.12194440e-4)   # so k * LN2_HI_32 is exact for |k| <= 2^15
EXP_MIN_32 = np.float32(-87.0)           # below: exp(x) < 1.7e-38, returned as 0
F32 = tuple(np.float32(1.0 / math.factorial(n)) for n in range(8))   # 1 / n!, n = 0..7
HALF_32, ZERO_32 = np.float32(0.5), np.float32(0.0)


def _exp32(t, bits, pow2, n):
    """The float32 form of :func:`_exp64` (float32 arithmetic, degree 7): t[:n] <-
    exp(t[:n]) in place, every t <= 0; ``bits`` (int32) and ``pow2`` (float32) are one
    scratch buffer seen as both types."""
    for j in range(n):
        x = t[j]
        xc = EXP_MIN_32 if x < EXP_MIN_32 else x    # NaN passes through
        k = np.floor(xc * LOG2E_32 + HALF_32)
        r = xc - k * LN2_HI_32 - k * LN2_LO_32      # |r| <= ln(2) / 2 (and rounding)
        p = F32[7]                                  # Horner: sum r^n / n!, n = 7..0
        p = p * r + F32[6]
        p = p * r + F32[5]
        p = p * r + F32[4]
        p = p * r + F32[3]
        p = p * r + F32[2]
        p = p * r + F32[1]
        p = p * r + F32[0]
        t[j] = ZERO_32 if x < EXP_MIN_32 else p
        bits[j] = (np.int32(k) + 127) << 23         # the bits of 2^k (k >= -126)
    for j in range(n):
        t[j] *= pow2[j]


_exp64_jit = numba.njit(inline="always")(_exp64)
_exp32_jit = numba.njit(inline="always")(_exp32)


def exp_nonpositive(t, pow2, n):
    """t[:n] <- exp(t[:n]) in place, every t <= 0, in t's dtype (float64 or float32);
    ``pow2`` is scratch of t's dtype with at least n entries. Inside Numba code the
    overload below picks the routine at compile time; called from Python (or with the
    JIT disabled) this body does, by dtype."""
    if t.dtype == np.float32:
        _exp32(t, pow2.view(np.int32), pow2, n)
    else:
        _exp64(t, pow2.view(np.int64), pow2, n)


@overload(exp_nonpositive, inline="always")
def _exp_nonpositive_jit(t, pow2, n):
    if t.dtype == types.float32:
        return lambda t, pow2, n: _exp32_jit(t, pow2.view(np.int32), pow2, n)
    return lambda t, pow2, n: _exp64_jit(t, pow2.view(np.int64), pow2, n)
