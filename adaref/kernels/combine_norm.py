"""Inference kernel of a whole SparseMoE layer's output: the weighted combine of eq. 12
on top of the residual, then the per-field LayerNorm (docs/decisions.md row 15), in one
pass over each example's row.

    out[b] = Norm(base[b] + sum_{j: pos[b, j] >= 0} w[b, j] * ys[j][pos[b, j]])

Shapes: out, base (B, F*D); w (B, N); pos (B, N) int64, the position of example b
among the rows that expert j ran on, -1 where it did not run on b; ``ys`` a tuple of N
arrays (n_j, F*D), one per expert in gate order (an expert that ran on no example gets
an empty (0, F*D) array); gain, bias (D,). Norm normalises each of the F consecutive
groups of D values as :mod:`adaref.kernels.norm` does.

It computes what :func:`~adaref.kernels.dispatch.scatter_add_scaled` (expert by expert,
in gate order) followed by :func:`~adaref.kernels.norm.layer_norm_forward` compute, and
the NumPy twin is exactly that composition. The fused loop reads ``base`` and the
expert outputs once and writes ``out`` once, instead of a copy of ``base``, a scatter
and a normalisation pass over separate (B, F*D) arrays; there is no backward (training
keeps the two autograd ops, whose VJPs need the intermediate). Each row is independent,
so rows run in parallel (``prange``). The loop sums in the same order as the two
kernels; it is compiled with ``reassoc`` like the LayerNorm kernel, so the twins agree
to the LayerNorm bound (about D * eps relative to the row's scale).
"""
import math

import numpy as np
try:
    from numba import prange   # parallel rows under the JIT; a plain range without it
except ImportError:            # the NumPy twins run without Numba
    prange = range

from adaref.kernels import Kernel
from adaref.kernels.dispatch import _scatter_add_scaled_numpy
from adaref.kernels.norm import _layer_norm_forward_numpy


def _combine_norm_numpy(out, base, w, pos, ys, gain, bias, eps):
    """out (B, F*D) = Norm(base + sum_j w[:, j] * ys[j][pos[:, j]]); see the module."""
    out[...] = base
    for j, y in enumerate(ys):
        rows = np.flatnonzero(pos[:, j] >= 0)                                 # (n_j,) increasing
        _scatter_add_scaled_numpy(out, rows, np.ascontiguousarray(w[rows, j]), y[pos[rows, j]])
    d = gain.shape[0]
    flat = out.reshape(-1, d)                                                 # (B*F, D) view
    inv = np.empty((flat.shape[0], 1), dtype=out.dtype)
    _layer_norm_forward_numpy(flat, None, inv, flat, gain, bias, eps)             # in place


def _combine_norm_loop(out, base, w, pos, ys, gain, bias, eps):
    b_rows, c = out.shape
    d = gain.shape[0]
    for b in prange(b_rows):                         # rows are independent: in parallel
        for i in range(c):
            out[b, i] = base[b, i]
        for j in range(pos.shape[1]):                # experts in gate order, as the scatter
            p = pos[b, j]
            if p >= 0:
                s, y = w[b, j], ys[j]
                for i in range(c):
                    out[b, i] += s * y[p, i]
        for f in range(c // d):                      # the LayerNorm of each field, in place
            lo = f * d
            total = 0.0
            for i in range(d):
                total += out[b, lo + i]
            mu = total / d
            sq = 0.0
            for i in range(d):
                v = out[b, lo + i] - mu
                sq += v * v
            r = 1.0 / math.sqrt(sq / d + eps)
            for i in range(d):
                out[b, lo + i] = (out[b, lo + i] - mu) * r * gain[i] + bias[i]


combine_norm = Kernel("combine_norm", _combine_norm_numpy, _combine_norm_loop, parallel=True,
                      reassoc=True)
