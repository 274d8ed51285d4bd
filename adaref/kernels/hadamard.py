"""Elementwise work around a BLAS matmul ``z = a @ W``: the Hadamard interaction of the
PIN (eq. 5) and Cross (eq. 6) experts, and the bias + activation of a dense layer
(eq. 2, and the convolution's and attention's projections).

The matmul itself stays a NumPy ``@`` (BLAS); these kernels fuse what comes after it
into one pass over memory, forward and backward. All arrays are 2-D and C-contiguous:
rows are examples (or example x position), columns are features.

Bias modes of :data:`hadamard_forward` / :data:`hadamard_backward` (an ``int`` so one
compiled loop serves all three):

* ``BIAS_NONE`` (0): y = u * z               (PIN, eq. 5)
* ``BIAS_OUTSIDE`` (1): y = u * z + b        (Cross as eq. 6 writes it)
* ``BIAS_INSIDE`` (2): y = u * (z + b)       (Cross in the DCN-V2 form)

Activations of :data:`bias_act_forward` / :data:`bias_act_backward`: ``ACT_LINEAR``
(0) and ``ACT_RELU`` (1).

Agreement of the twins: every elementwise output (y, gz, gu) is computed by the same
float operations in the same order in both, so they agree **exactly**; the loops run
blocks of rows in parallel and then sum the bias gradient on one thread, in row order,
so their results do not depend on the number of threads. The bias
gradient gb is a sum over the N rows: the loop adds in row order; NumPy's ``sum(axis=0)``
does too when M > 1 in practice, but switches to pairwise summation when the column is
the contiguous axis (M = 1), so the stated bound for gb is
``|gb_numba - gb_numpy| <= 2 N eps sum_i |terms_i|`` (eps the unit roundoff); the tests
check exact equality of y, gz, gu and this bound for gb.

>>> import numpy as np
>>> z, u, b = np.ones((2, 3)), np.full((2, 3), 2.0), np.arange(3.0)
>>> out = np.empty((2, 3))
>>> hadamard_forward(out, z, u, b, BIAS_INSIDE)
>>> out[0].tolist()
[2.0, 4.0, 6.0]
"""
import numba
import numpy as np
from numba import prange   # a plain range without the JIT; parallel blocks with it

from adaref.kernels import Kernel

BIAS_NONE, BIAS_OUTSIDE, BIAS_INSIDE = 0, 1, 2
ACT_LINEAR, ACT_RELU = 0, 1
ROWS = 256                 # rows per parallel block of the elementwise loops


def _column_sums(gb, a):
    """gb[j] = sum_i a[i, j], adding the rows in order (one thread: the same bits on any
    number of threads, and as NumPy's ``sum(axis=0)`` for M > 1). Shapes: gb (M,), a (N, M)."""
    n, m = a.shape
    for j in range(m):
        gb[j] = 0.0
    for i in range(n):
        for j in range(m):
            gb[j] += a[i, j]


column_sums = numba.njit(inline="always")(_column_sums)


# --- y = u * z (+ b) ---------------------------------------------------------------
def _hadamard_forward_numpy(out, z, u, b, mode):
    """out = u * z (mode 0), u * z + b (mode 1) or u * (z + b) (mode 2).

    Shapes: out, z, u (N, M); b (M,) (read only in modes 1 and 2).
    """
    if mode == BIAS_INSIDE:
        np.add(z, b, out=out)                         # (N, M)
        np.multiply(out, u, out=out)                  # (N, M)
    else:
        np.multiply(u, z, out=out)                    # (N, M)
        if mode == BIAS_OUTSIDE:
            np.add(out, b, out=out)                   # (N, M)


def _hadamard_forward_loop(out, z, u, b, mode):
    n, m = z.shape
    for blk in prange((n + ROWS - 1) // ROWS):   # blocks of rows: in parallel
        for i in range(blk * ROWS, min(n, blk * ROWS + ROWS)):
            if mode == 2:
                for j in range(m):
                    out[i, j] = (z[i, j] + b[j]) * u[i, j]
            elif mode == 1:
                for j in range(m):
                    out[i, j] = u[i, j] * z[i, j] + b[j]
            else:
                for j in range(m):
                    out[i, j] = u[i, j] * z[i, j]


def _hadamard_backward_numpy(gz, gu, gb, g, z, u, b, mode):
    """Gradients of y = u * z (+ b, by ``mode``) given g = dL/dy.

    Writes gz = g * u, gu = g * z (modes 0, 1) or g * (z + b) (mode 2), and
    gb = sum over rows of g (mode 1) or of gz (mode 2); gb is untouched in mode 0.
    Shapes: gz, gu, g, z, u (N, M); gb, b (M,).
    """
    np.multiply(g, u, out=gz)                         # (N, M)
    if mode == BIAS_INSIDE:
        np.add(z, b, out=gu)                          # (N, M)
        np.multiply(g, gu, out=gu)
        np.sum(gz, axis=0, out=gb)                    # (M,)
    else:
        np.multiply(g, z, out=gu)                     # (N, M)
        if mode == BIAS_OUTSIDE:
            np.sum(g, axis=0, out=gb)                 # (M,)


def _hadamard_backward_loop(gz, gu, gb, g, z, u, b, mode):
    n, m = z.shape
    for blk in prange((n + ROWS - 1) // ROWS):   # blocks of rows: in parallel
        for i in range(blk * ROWS, min(n, blk * ROWS + ROWS)):
            for j in range(m):
                gz[i, j] = g[i, j] * u[i, j]
            if mode == 2:
                for j in range(m):
                    gu[i, j] = g[i, j] * (z[i, j] + b[j])
            else:
                for j in range(m):
                    gu[i, j] = g[i, j] * z[i, j]
    if mode == 2:
        column_sums(gb, gz)
    elif mode == 1:
        column_sums(gb, g)


hadamard_forward = Kernel("hadamard_forward", _hadamard_forward_numpy, _hadamard_forward_loop, parallel=True)
hadamard_backward = Kernel("hadamard_backward", _hadamard_backward_numpy, _hadamard_backward_loop,
                           parallel=True)


# --- y = act(z + b) ----------------------------------------------------------------
def _bias_act_forward_numpy(out, z, b, act):
    """out = act(z + b), act 0 = linear, 1 = relu (max(v, 0)).

    Shapes: out, z (N, M); b (M,). ``out`` may be ``z`` itself (in place).
    """
    np.add(z, b, out=out)                             # (N, M)
    if act == ACT_RELU:
        np.maximum(out, 0.0, out=out)


def _bias_act_forward_loop(out, z, b, act):
    n, m = z.shape
    for blk in prange((n + ROWS - 1) // ROWS):   # blocks of rows: in parallel
        for i in range(blk * ROWS, min(n, blk * ROWS + ROWS)):
            if act == 1:
                for j in range(m):
                    v = z[i, j] + b[j]
                    out[i, j] = v if not v <= 0.0 else 0.0   # NaN propagates, as np.maximum
            else:
                for j in range(m):
                    out[i, j] = z[i, j] + b[j]


def _bias_act_backward_numpy(gz, gb, g, y, act):
    """Gradients of y = act(z + b): gz = g * act'(.), gb = sum over rows of gz.

    For relu, act' = 1 where y > 0, else 0 (the subgradient at 0 is 0).
    Shapes: gz, g, y (N, M); gb (M,). ``gz`` may be ``g`` itself (in place).
    """
    if act == ACT_RELU:
        np.multiply(g, y > 0, out=gz)                 # (N, M)
    elif gz is not g:
        np.copyto(gz, g)
    np.sum(gz, axis=0, out=gb)                        # (M,)


def _bias_act_backward_loop(gz, gb, g, y, act):
    n, m = g.shape
    for j in range(m):
        gb[j] = 0.0
    for i in range(n):
        gzrow, grow, yrow = gz[i], g[i], y[i]         # (M,) views
        if act == 1:
            for j in range(m):
                v = grow[j]
                gzrow[j] = v if yrow[j] > 0.0 else 0.0 * v   # 0 * g, as g * False in NumPy
        else:
            for j in range(m):
                gzrow[j] = grow[j]
        for j in range(m):
            gb[j] += gzrow[j]


def _column_sum_numpy(gb, a):
    """gb = sum over rows of a: the bias gradient of a linear layer (gz = g). Shapes:
    gb (M,), a (N, M). Both twins add the rows in order (NumPy's ``sum(axis=0)`` does for
    M > 1; for M = 1 it sums pairwise, within the module's bound)."""
    np.sum(a, axis=0, out=gb)


bias_act_forward = Kernel("bias_act_forward", _bias_act_forward_numpy, _bias_act_forward_loop, parallel=True)
bias_act_backward = Kernel("bias_act_backward", _bias_act_backward_numpy, _bias_act_backward_loop)
column_sum = Kernel("column_sum", _column_sum_numpy, _column_sums)
