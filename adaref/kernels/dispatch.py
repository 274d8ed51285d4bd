"""Row gather/scatter kernels of the sparse dispatcher (eq. 12): dispatch examples to
an expert, combine the experts' outputs back, and the backward passes of both.

Rows are examples; each example's feature map is flattened to one row of length
F*D, so every kernel works on 2-D arrays ``(rows, F*D)``. Within one expert the row
indices are unique, so each output row is written by one iteration: the loops over rows
run in parallel (``prange``), and Numba and NumPy agree exactly (no reordered sums),
except :data:`rowwise_dot`, whose NumPy twin sums with ``np.einsum`` (pairwise order):
there the two agree to a few float64 ulps.
"""
import numpy as np
try:
    from numba import prange   # parallel rows under the JIT; a plain range without it
except ImportError:            # the NumPy twins run without Numba
    prange = range

from adaref.kernels import Kernel


def _gather_rows_numpy(out, x, rows):
    """out[i] = x[rows[i]]. Shapes: out (n, C), x (B, C), rows (n,) int64."""
    np.take(x, rows, axis=0, out=out)


def _gather_rows_loop(out, x, rows):
    n, c = out.shape
    for i in prange(n):           # each iteration writes its own row: in parallel
        r = rows[i]
        for j in range(c):
            out[i, j] = x[r, j]


def _scatter_add_scaled_numpy(out, rows, scale, values):
    """out[rows[i]] += scale[i] * values[i]. Shapes: out (B, C), rows (n,) unique (the
    loop writes rows in parallel: a repeated row would race), scale (n,), values (n, C)."""
    out[rows] += scale[:, None] * values


def _scatter_add_scaled_loop(out, rows, scale, values):
    n, c = values.shape
    for i in prange(n):           # rows are unique: each out row has one writer
        r, s = rows[i], scale[i]
        for j in range(c):
            out[r, j] += s * values[i, j]


def _gather_rows_scaled_numpy(out, g, rows, scale):
    """out[i] = scale[i] * g[rows[i]]. Shapes: out (n, C), g (B, C), rows (n,), scale (n,)."""
    np.multiply(g[rows], scale[:, None], out=out)


def _gather_rows_scaled_loop(out, g, rows, scale):
    n, c = out.shape
    for i in prange(n):           # each iteration writes its own row: in parallel
        r, s = rows[i], scale[i]
        for j in range(c):
            out[i, j] = g[r, j] * s


def _rowwise_dot_numpy(out, g, rows, values):
    """out[i] = sum_c g[rows[i], c] * values[i, c]. Shapes: out (n,), g (B, C), values (n, C).

    The NumPy twin sums with einsum (pairwise); the loop sums left to right: they agree
    to rounding, |diff| <= C * eps * sum_c |g * values|.
    """
    np.einsum("nc,nc->n", g[rows], values, out=out)


def _rowwise_dot_loop(out, g, rows, values):
    n, c = values.shape
    for i in prange(n):           # each iteration sums its own row: in parallel
        r = rows[i]
        acc = 0.0
        for j in range(c):
            acc += g[r, j] * values[i, j]
        out[i] = acc


gather_rows = Kernel("gather_rows", _gather_rows_numpy, _gather_rows_loop, parallel=True)
scatter_add_scaled = Kernel("scatter_add_scaled", _scatter_add_scaled_numpy, _scatter_add_scaled_loop,
                            parallel=True)
gather_rows_scaled = Kernel("gather_rows_scaled", _gather_rows_scaled_numpy, _gather_rows_scaled_loop,
                            parallel=True)
rowwise_dot = Kernel("rowwise_dot", _rowwise_dot_numpy, _rowwise_dot_loop, parallel=True)
