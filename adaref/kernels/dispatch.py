"""Row gather/scatter kernels of the sparse dispatcher (eq. 12): dispatch examples to
an expert, combine the experts' outputs back, and the backward passes of both.

Rows are examples; each example's feature map is flattened to one row of length
F*D, so every kernel works on 2-D arrays ``(rows, F*D)``. Within one expert the row
indices are unique, so each output row is written by one iteration: the loops over rows
run in parallel (``prange``), and Numba and NumPy agree exactly (no reordered sums),
except the dot products of :data:`gather_scaled_dot`, which the NumPy twin sums with
``np.einsum`` (pairwise order) and the loop in vectorised float64 lanes: there the two
agree to rounding.
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


def _gather_scaled_dot_numpy(out, dots, g, rows, scale, values):
    """The combine's backward for one expert in one pass over g's rows (eq. 12):
    out[i] = scale[i] * g[rows[i]] and dots[i] = sum_c g[rows[i], c] * values[i, c].
    Shapes: out (n, C), dots (n,), g (B, C), rows (n,), scale (n,), values (n, C).

    ``out`` is exactly :data:`gather_rows_scaled`'s. The twins' ``dots`` differ in the
    order of the sum (the loop adds in vectorised float64 lanes, the twin pairwise in
    the inputs' dtype): |diff| <= C * eps * sum_c |g * values|, eps of the inputs' dtype.
    """
    gathered = g[rows]                                                     # (n, C)
    np.multiply(gathered, scale[:, None], out=out)
    np.einsum("nc,nc->n", gathered, values, out=dots)


def _gather_scaled_dot_loop(out, dots, g, rows, scale, values):
    n, c = out.shape
    for i in prange(n):           # each iteration writes its own row and dot: in parallel
        r, s = rows[i], scale[i]
        acc = 0.0                 # float64; reassociated into lanes (Kernel(reassoc=True))
        for j in range(c):
            v = g[r, j]           # g's row is read once for both results
            out[i, j] = v * s
            acc += v * values[i, j]
        dots[i] = acc


gather_rows = Kernel("gather_rows", _gather_rows_numpy, _gather_rows_loop, parallel=True)
scatter_add_scaled = Kernel("scatter_add_scaled", _scatter_add_scaled_numpy, _scatter_add_scaled_loop,
                            parallel=True)
gather_rows_scaled = Kernel("gather_rows_scaled", _gather_rows_scaled_numpy, _gather_rows_scaled_loop,
                            parallel=True)
gather_scaled_dot = Kernel("gather_scaled_dot", _gather_scaled_dot_numpy, _gather_scaled_dot_loop,
                           parallel=True, reassoc=True)
