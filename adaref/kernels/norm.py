"""Layer normalisation over the last axis with an optional affine map, forward and
backward (``ops.layer_norm``).

Rows are the (B * F) vectors of length D that are normalised on their own; gain and
bias (D,) are shared by every row:

    forward   mu = mean(x),  var = mean((x - mu)^2),  inv = 1 / sqrt(var + eps),
              xhat = (x - mu) * inv,  y = xhat * gain + bias
    backward  gh = g * gain
              gx = inv * (gh - mean(gh) - xhat * mean(gh * xhat))
              ggain = sum_rows g * xhat,  gbias = sum_rows g

Without an affine map the caller passes gain = 1 and bias = 0 (then y = xhat exactly).
The loops run rows in parallel (``prange``); a row's result depends on that row alone,
and the backward sums ggain and gbias over fixed blocks of ``ROWS`` rows, then the
blocks' sums in block order, so no result depends on the number of threads.
Fusing the affine map saves two passes over the (B, F, D) map in each direction.

Agreement of the twins: NumPy's means and column sums add pairwise, the loop adds left
to right (ggain and gbias by blocks), so the two differ by rounding only: at most
about D * eps relative to the row's scale for y and gx, N * eps for ggain and gbias (eps
the unit roundoff, N the rows; the loop is compiled with ``reassoc``, so LLVM may add in
any order, which the same bound covers); ``tests/test_kernels.py`` checks 1e-12 in float64.
"""
import math

import numpy as np
try:
    from numba import prange   # parallel rows under the JIT; a plain range without it
except ImportError:            # the NumPy twins run without Numba
    prange = range

from adaref.kernels import Kernel

ROWS = 256   # rows per parallel block of the backward (a fixed size: no thread-count effect)


def _layer_norm_forward_numpy(y, xhat, inv, x, gain, bias, eps):
    """y, xhat (N, D) and inv (N, 1) from x (N, D), gain and bias (D,); ``xhat=None``
    when no backward follows (it is not written)."""
    mu = x.mean(axis=-1, keepdims=True)
    centred = x - mu
    var = (centred * centred).mean(axis=-1, keepdims=True)
    inv[...] = 1 / np.sqrt(var + eps)
    h = centred * inv
    if xhat is not None:
        xhat[...] = h
    np.multiply(h, gain, out=y)
    y += bias


def _layer_norm_forward_loop(y, xhat, inv, x, gain, bias, eps):
    n, d = x.shape
    for i in prange(n):                              # rows are independent: in parallel
        total = 0.0
        for j in range(d):
            total += x[i, j]
        mu = total / d
        sq = 0.0
        for j in range(d):
            c = x[i, j] - mu
            sq += c * c
        r = 1.0 / math.sqrt(sq / d + eps)
        inv[i, 0] = r
        for j in range(d):
            h = (x[i, j] - mu) * r
            if xhat is not None:                     # pruned at compile time when None
                xhat[i, j] = h
            y[i, j] = h * gain[j] + bias[j]


def _layer_norm_backward_numpy(gx, ggain, gbias, g, gain, xhat, inv):
    """gx (N, D), ggain and gbias (D,) from the upstream g (N, D), gain (D,) and the
    saved xhat (N, D) and inv (N, 1)."""
    gh = g * gain
    gx[...] = inv * (gh - gh.mean(axis=-1, keepdims=True)
                     - xhat * (gh * xhat).mean(axis=-1, keepdims=True))
    ggain[...] = (g * xhat).sum(axis=0)
    gbias[...] = g.sum(axis=0)


def _layer_norm_backward_loop(gx, ggain, gbias, g, gain, xhat, inv):
    n, d = g.shape
    blocks = (n + ROWS - 1) // ROWS
    part = np.zeros((blocks, 2, d), dtype=ggain.dtype)     # each block's ggain, gbias sums
    for blk in prange(blocks):    # blocks of rows in parallel, each with its own sums
        for i in range(blk * ROWS, min(n, blk * ROWS + ROWS)):
            sg = 0.0
            sgx = 0.0
            for j in range(d):
                gh = g[i, j] * gain[j]
                sg += gh
                sgx += gh * xhat[i, j]
                part[blk, 0, j] += g[i, j] * xhat[i, j]
                part[blk, 1, j] += g[i, j]
            mg, mgx, r = sg / d, sgx / d, inv[i, 0]
            for j in range(d):
                gx[i, j] = r * (g[i, j] * gain[j] - mg - xhat[i, j] * mgx)
    for j in range(d):
        ggain[j] = 0.0
        gbias[j] = 0.0
    for blk in range(blocks):     # the blocks' sums, in block order
        for j in range(d):
            ggain[j] += part[blk, 0, j]
            gbias[j] += part[blk, 1, j]


layer_norm_forward = Kernel("layer_norm_forward", _layer_norm_forward_numpy, _layer_norm_forward_loop,
                            parallel=True, reassoc=True)
layer_norm_backward = Kernel("layer_norm_backward", _layer_norm_backward_numpy, _layer_norm_backward_loop,
                             parallel=True, reassoc=True)
