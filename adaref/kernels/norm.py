"""Layer normalisation over the last axis, forward and backward (``ops.layer_norm``).

Rows are the (B * F) vectors of length D that are normalised on their own:

    forward   mu = mean(x),  var = mean((x - mu)^2),  inv = 1 / sqrt(var + eps),
              xhat = (x - mu) * inv
    backward  gx = inv * (g - mean(g) - xhat * mean(g * xhat))

Agreement of the twins: NumPy's means sum pairwise, the loop sums left to right, so the
two differ by rounding only: at most about D * eps relative to the row's scale (eps the
unit roundoff); ``tests/test_kernels.py`` checks 1e-12 in float64.
"""
import math

import numpy as np

from adaref.kernels import Kernel


def _layer_norm_forward_numpy(xhat, inv, x, eps):
    """xhat (N, D) and inv (N, 1) from x (N, D)."""
    mu = x.mean(axis=-1, keepdims=True)
    centred = x - mu
    var = (centred * centred).mean(axis=-1, keepdims=True)
    inv[...] = 1 / np.sqrt(var + eps)
    np.multiply(centred, inv, out=xhat)


def _layer_norm_forward_loop(xhat, inv, x, eps):
    n, d = x.shape
    for i in range(n):
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
            xhat[i, j] = (x[i, j] - mu) * r


def _layer_norm_backward_numpy(gx, g, xhat, inv):
    """gx (N, D) from the upstream g (N, D), the saved xhat (N, D) and inv (N, 1)."""
    gx[...] = inv * (g - g.mean(axis=-1, keepdims=True)
                     - xhat * (g * xhat).mean(axis=-1, keepdims=True))


def _layer_norm_backward_loop(gx, g, xhat, inv):
    n, d = g.shape
    for i in range(n):
        sg = 0.0
        sgx = 0.0
        for j in range(d):
            sg += g[i, j]
            sgx += g[i, j] * xhat[i, j]
        mg, mgx, r = sg / d, sgx / d, inv[i, 0]
        for j in range(d):
            gx[i, j] = r * (g[i, j] - mg - xhat[i, j] * mgx)


layer_norm_forward = Kernel("layer_norm_forward", _layer_norm_forward_numpy, _layer_norm_forward_loop)
layer_norm_backward = Kernel("layer_norm_backward", _layer_norm_backward_numpy, _layer_norm_backward_loop)
