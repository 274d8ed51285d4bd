"""Softmax and top-k along a short last axis, one row at a time: the gates' (B, N)
scores (eqs. 9-11; ``ops.softmax`` and ``ops.topk_mask`` on 2-D input, last axis).

NumPy reduces a short last axis slowly: a (4096, 5) softmax is six passes over the
array with a reduction each (~0.2 ms), and a top-k is a stable argsort. One loop over
rows does each in a single pass.

* ``softmax_rows(y, x) -> bad``: y[i] = exp(x[i] - max x[i]) / sum_j exp(x[i, j] - max x[i])
  (x, y (n, c)); an entry of -inf gets 0. Returns the number of rows whose maximum is
  not finite (a NaN, a +inf, or every entry -inf); those rows of y are undefined and
  the caller raises.
* ``topk_rows(mask, x, k) -> nan_rows``: mask[i, j] is True for the k largest entries
  of row i, ties going to the lowest index (docs/decisions.md row 12), as ``k`` successive
  maxima. Returns the number of rows with a NaN (their mask is undefined; the caller
  raises).

Agreement of the twins: the top-k masks are identical (the same comparisons decide).
The softmax loop shifts, exponentiates (the vectorised exp of :mod:`adaref.kernels.expm`,
within 2 ulp of NumPy's) and adds in float64, NumPy in the array's dtype, so for
float32 the loop is the more accurate: the two agree to about (2 + |x - max x|) * eps
relative (the shift's rounding is amplified by exp; eps the dtype's roundoff), which
``tests/test_kernels.py`` checks. A shifted score below -708 (an exp under 3.3e-308)
gives exactly 0 in the loop and a subnormal in NumPy.
"""
import numpy as np

from adaref.kernels import Kernel
from adaref.kernels.expm import exp_nonpositive

BLOCK = 512   # rows of scores per call of the vectorised exp


def _softmax_rows_numpy(y, x):
    """y (n, c) = softmax of each row of x (n, c); returns the rows with a non-finite max."""
    m = x.max(axis=1, keepdims=True)                                 # (n, 1)
    bad = int(np.count_nonzero(~np.isfinite(m)))
    with np.errstate(invalid="ignore"):
        np.exp(x - m, out=y)
        y /= y.sum(axis=1, keepdims=True)
    return bad


def _softmax_rows_loop(y, x):
    # Blocks of rows: shift each row by its max into a float64 buffer, take all the
    # block's exps in one vectorised call (kernels.expm), then normalise row by row.
    n, c = x.shape
    t = np.empty(BLOCK * c)                         # shifted scores, then their exps
    pow2 = np.empty(BLOCK * c)                      # scratch of exp_nonpositive
    ok = np.empty(BLOCK, dtype=np.bool_)            # the row's max is finite
    bad = 0
    for start in range(0, n, BLOCK):
        rows = min(BLOCK, n - start)
        for r in range(rows):
            m = -np.inf
            nan = False
            for j in range(c):
                v = x[start + r, j]
                if v != v:
                    nan = True
                elif v > m:
                    m = v
            ok[r] = not nan and -np.inf < m < np.inf
            bad += not ok[r]
            for j in range(c):
                t[r * c + j] = x[start + r, j] - m if ok[r] else 0.0
        exp_nonpositive(t, pow2, rows * c)
        for r in range(rows):
            if ok[r]:
                total = 0.0
                for j in range(c):
                    total += t[r * c + j]
                for j in range(c):
                    y[start + r, j] = t[r * c + j] / total
    return bad


def _topk_rows_numpy(mask, x, k):
    """mask (n, c) bool: the k largest of each row of x (n, c), lowest index on ties;
    returns the rows with a NaN."""
    nan_rows = int(np.count_nonzero(np.isnan(x).any(axis=1)))
    order = np.argsort(-x, axis=1, kind="stable")                   # stable: ties keep index order
    mask[...] = False
    np.put_along_axis(mask, order[:, :k], True, axis=1)
    return nan_rows


def _topk_rows_loop(mask, x, k):
    n, c = x.shape
    nan_rows = 0
    for i in range(n):
        nan = False
        for j in range(c):
            mask[i, j] = False
            nan = nan or x[i, j] != x[i, j]
        nan_rows += nan
        for _ in range(k):
            best = -1
            for j in range(c):
                if not mask[i, j] and (best < 0 or x[i, j] > x[i, best]):
                    best = j                                        # strict >: lowest index wins
            mask[i, best] = True
    return nan_rows


softmax_rows = Kernel("softmax_rows", _softmax_rows_numpy, _softmax_rows_loop)
topk_rows = Kernel("topk_rows", _topk_rows_numpy, _topk_rows_loop)
