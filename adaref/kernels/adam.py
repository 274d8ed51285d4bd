"""Adam's update in one pass over memory, in place (the rule of :mod:`adaref.optim.adam`).

With NumPy, Adam's rule is six or seven whole-array expressions, each reading and
writing a temporary the size of the parameter; at 6.2M parameters (the paper's model)
that is about 45 ms a step. The loop reads w, g, m, v once and writes w, m, v once,
running blocks of elements in parallel. ``adam_update_rows`` does the same for the rows
of an embedding table that a row-sparse gradient touches (lazy Adam), in place of
gathering them, applying the rule and scattering them back.

Both twins compute, per element and in this order (``c`` holds the constants in the
parameter's dtype, so a float32 parameter is updated in float32 arithmetic exactly as
``Adam.rule`` does with Python-float constants)::

    g  = g + c[L2X2] * w                      (only if c[L2X2] != 0)
    m  = c[B1] * m + c[ONE_MINUS_B1] * g
    v  = c[B2] * v + c[ONE_MINUS_B2] * (g * g)
    w  = w - c[LR] * (m / c[BC1]) / (sqrt(v / c[BC2]) + c[EPS])       (form 0, Algorithm 1)
    w  = w - c[KERAS_STEP] * m / (sqrt(v) + c[EPS])                   (form 1, Keras)

Every element is computed by the same IEEE operations in the same order in both twins
and in ``Adam.rule`` (no fused multiply-add, no reassociation), so all three agree
exactly (``tests/test_optim.py``).
"""
import numba
import numpy as np
from numba import prange   # a plain range without the JIT; parallel blocks with it

from adaref.kernels import Kernel

LR, B1, ONE_MINUS_B1, B2, ONE_MINUS_B2, EPS, L2X2, BC1, BC2, KERAS_STEP = range(10)
BLOCK = 4096               # elements per parallel block
ROW_BLOCK = 256            # rows per parallel block of the row-sparse update


def _adam_update_numpy(w, g, m, v, c, form):
    """Adam's step in place. Shapes: w, g, m, v (N,) of one dtype, C-contiguous; c (10,)
    of that dtype (indices above); form 0 = Algorithm 1, 1 = Keras. g is not modified."""
    if c[L2X2] != 0:
        g = g + c[L2X2] * w                                          # (N,)
    np.multiply(m, c[B1], out=m)
    m += c[ONE_MINUS_B1] * g
    np.multiply(v, c[B2], out=v)
    v += c[ONE_MINUS_B2] * (g * g)
    if form == 0:
        w -= c[LR] * (m / c[BC1]) / (np.sqrt(v / c[BC2]) + c[EPS])
    else:
        w -= c[KERAS_STEP] * m / (np.sqrt(v) + c[EPS])


def _adam_element(w, g, m, v, c, form):
    """One element's update, (w, m, v) -> new (w, m, v), in the module docstring's order."""
    if c[L2X2] != 0:
        g = g + c[L2X2] * w
    m = c[B1] * m + c[ONE_MINUS_B1] * g
    v = c[B2] * v + c[ONE_MINUS_B2] * (g * g)
    if form == 0:
        w = w - c[LR] * (m / c[BC1]) / (np.sqrt(v / c[BC2]) + c[EPS])
    else:
        w = w - c[KERAS_STEP] * m / (np.sqrt(v) + c[EPS])
    return w, m, v


_element = numba.njit(inline="always")(_adam_element)


def _adam_update_loop(w, g, m, v, c, form):
    n = w.shape[0]
    for blk in prange((n + BLOCK - 1) // BLOCK):    # each element is its own update: in parallel
        for i in range(blk * BLOCK, min(n, blk * BLOCK + BLOCK)):
            w[i], m[i], v[i] = _element(w[i], g[i], m[i], v[i], c, form)


# a model's biases and small weights (most of its ~100 parameters) run on one thread
adam_update = Kernel("adam_update", _adam_update_numpy, _adam_update_loop, parallel=True,
                     serial_below=1 << 15)


def _adam_update_rows_numpy(w, g, m, v, rows, c, form):
    """Adam's step in place on the rows ``rows`` (R,) (unique) of w, m, v (V, D), with
    their gradients g (R, D) (a :class:`~adaref.tensor.RowSparseGrad`'s values); the
    other rows are untouched. c and form as in :func:`_adam_update_numpy`."""
    ww, mm, vv = w[rows], m[rows], v[rows]                           # (R, D) copies
    _adam_update_numpy(ww, g, mm, vv, c, form)
    w[rows], m[rows], v[rows] = ww, mm, vv


def _adam_update_rows_loop(w, g, m, v, rows, c, form):
    n, d = rows.shape[0], w.shape[1]
    for blk in prange((n + ROW_BLOCK - 1) // ROW_BLOCK):   # unique rows: blocks in parallel
        for r in range(blk * ROW_BLOCK, min(n, blk * ROW_BLOCK + ROW_BLOCK)):
            i = rows[r]
            for j in range(d):
                w[i, j], m[i, j], v[i, j] = _element(w[i, j], g[r, j], m[i, j], v[i, j], c, form)


adam_update_rows = Kernel("adam_update_rows", _adam_update_rows_numpy, _adam_update_rows_loop,
                          parallel=True)
