"""exp(x) for x <= 0 in a form LLVM vectorises, for the softmax inside Numba kernels.

Numba calls the C library's scalar ``exp`` for ``math.exp`` (no SVML here), one value
at a time; a softmax over fields spends most of its time there. This routine is the
textbook method, written as two plain loops over a buffer so that LLVM turns them into
SIMD code:

    k = round(x / ln 2),   r = x - k ln 2   (ln 2 split in two parts, Cody-Waite),
    exp(r) = sum_{n <= 13} r^n / n!  (|r| <= ln(2)/2: truncation below 1e-17 relative),
    exp(x) = exp(r) * 2^k, with 2^k built from its IEEE-754 bits.

Accuracy: within 2 ulp of ``np.exp`` in float64 for -708 <= x <= 0 (tested); below
-708 (exp(x) < 3.3e-308, subnormal or 0) the result is 0, so a masked score of -inf
gets probability exactly 0. NaN stays NaN. Only for x <= 0 (a max-shifted softmax).

>>> import numpy as np
>>> t = np.array([0.0, -1.0, -np.inf]); pow2 = np.empty(3)
>>> exp_nonpositive(t, pow2.view(np.int64), pow2, 3)
>>> np.allclose(t, [1.0, np.exp(-1.0), 0.0], rtol=1e-15, atol=0)
True
"""
import numba
import numpy as np

LOG2E = 1.4426950408889634           # 1 / ln 2
LN2_HI = 0.693145751953125           # ln 2 = LN2_HI + LN2_LO; LN2_HI has 11 significant
LN2_LO = 1.4286068203094173e-06      # bits, so k * LN2_HI is exact for |k| <= 1024
EXP_MIN = -708.0                     # below: exp(x) < 3.3e-308, returned as 0


def _exp_nonpositive(t, bits, pow2, n):
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


exp_nonpositive = numba.njit(inline="always")(_exp_nonpositive)
