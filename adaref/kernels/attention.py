"""Scaled dot-product attention over fields, forward and backward (the MHSA expert, eq. 4).

Layout: queries, keys and values are ``(B, F, H, dh)`` C-contiguous arrays, exactly as
a projection ``(B, F, H*dh)`` reshapes, so no transpose is needed around the kernel;
the output has the same layout. ``mask`` (B, F) bool marks the keys each example may
attend to (all True when there is nothing to mask); a masked key gets score -inf and
probability 0. Every example needs at least one unmasked key (the caller checks).

Forward, per example b, head h and query i:

    s_ij = scale * <q_i, k_j>            (masked j: -inf)
    a_ij = exp(s_ij - max_j s_ij) / sum_j exp(s_ij - max_j s_ij)
    o_i  = sum_j a_ij v_j

Backward, given go = dL/do and the saved probabilities a:

    gv_j = sum_i a_ij go_i
    ga_ij = <go_i, v_j>
    gs_ij = a_ij (ga_ij - sum_j' a_ij' ga_ij')
    gq_i = scale * sum_j gs_ij k_j ,   gk_j = scale * sum_i gs_ij q_i

Agreement of the twins: the NumPy twin uses batched matmuls (BLAS or NumPy's own
inner loops, whose summation order is not specified), the loop adds in index order.
Each output is a sum of at most max(F, dh) products, so the two differ by at most
about ``2 * max(F, dh) * eps * (sum of |terms|)`` (eps the dtype's unit roundoff);
``tests/test_kernels_experts.py`` checks a relative 1e-12 (float64) on the output
scale.

>>> import numpy as np
>>> q = np.zeros((1, 2, 1, 1)); v = np.array([1.0, 3.0]).reshape(1, 2, 1, 1)
>>> o, a = np.empty_like(q), np.empty((1, 1, 2, 2))
>>> attention_forward(o, a, q, q, v, np.ones((1, 2), bool), 1.0)
>>> o.ravel().tolist()      # equal scores: the mean of the values
[2.0, 2.0]
"""
import math

import numpy as np
from numba import prange   # a plain range without the JIT; parallel chunks with it

from adaref.kernels import Kernel

CHUNK = 64   # examples per parallel task: each task owns its scratch arrays


def _attention_forward_numpy(o, a, q, k, v, mask, scale):
    """o (B, F, H, dh) and a (B, H, F, F) from q, k, v (B, F, H, dh), mask (B, F) bool."""
    qh = q.transpose(0, 2, 1, 3)                                    # (B, H, F, dh)
    kh = k.transpose(0, 2, 3, 1)                                    # (B, H, dh, F)
    vh = v.transpose(0, 2, 1, 3)                                    # (B, H, F, dh)
    s = np.matmul(qh, kh)                                           # (B, H, F, F)
    s *= scale
    s[~np.broadcast_to(mask[:, None, None, :], s.shape)] = -np.inf  # masked keys
    s -= s.max(axis=-1, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(axis=-1, keepdims=True)
    a[...] = s                                                      # (B, H, F, F)
    o[...] = np.matmul(s, vh).transpose(0, 2, 1, 3)                 # (B, F, H, dh)


def _attention_forward_loop(o, a, q, k, v, mask, scale):
    nb, nf, nh, dh = q.shape
    for c in prange((nb + CHUNK - 1) // CHUNK):     # chunks of examples run in parallel
        qh = np.empty((nf, dh), dtype=q.dtype)      # one head's queries, contiguous
        kt = np.empty((dh, nf), dtype=q.dtype)      # its keys, transposed
        vh = np.empty((nf, dh), dtype=q.dtype)      # its values
        s = np.empty((nf, nf), dtype=q.dtype)       # scores, then probabilities
        oh = np.empty((nf, dh), dtype=q.dtype)      # its output
        for b in range(c * CHUNK, min(nb, (c + 1) * CHUNK)):
            for h in range(nh):
                for j in range(nf):
                    for d in range(dh):
                        qh[j, d] = q[b, j, h, d]
                        kt[d, j] = k[b, j, h, d]
                        vh[j, d] = v[b, j, h, d]
                for i in range(nf):                 # s = q k^T, summed over d in order
                    for j in range(nf):
                        s[i, j] = 0.0
                    for d in range(dh):
                        qd = qh[i, d]
                        for j in range(nf):
                            s[i, j] += qd * kt[d, j]
                for i in range(nf):                 # masked stable softmax per row
                    m = -np.inf
                    for j in range(nf):
                        if mask[b, j]:
                            s[i, j] *= scale
                            if s[i, j] > m:
                                m = s[i, j]
                    total = 0.0
                    for j in range(nf):
                        e = math.exp(s[i, j] - m) if mask[b, j] else 0.0
                        s[i, j] = e
                        total += e
                    for j in range(nf):
                        s[i, j] /= total
                        a[b, h, i, j] = s[i, j]
                for i in range(nf):                 # o = a v, summed over j in order
                    for d in range(dh):
                        oh[i, d] = 0.0
                    for j in range(nf):
                        p = s[i, j]
                        for d in range(dh):
                            oh[i, d] += p * vh[j, d]
                    for d in range(dh):
                        o[b, i, h, d] = oh[i, d]


def _attention_backward_numpy(gq, gk, gv, go, q, k, v, a, scale):
    """gq, gk, gv (B, F, H, dh) from go (B, F, H, dh) and the saved a (B, H, F, F)."""
    goh = go.transpose(0, 2, 1, 3)                                  # (B, H, F, dh)
    qh, kh = q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3)       # (B, H, F, dh)
    vt = v.transpose(0, 2, 3, 1)                                    # (B, H, dh, F)
    gv[...] = np.matmul(a.transpose(0, 1, 3, 2), goh).transpose(0, 2, 1, 3)
    ga = np.matmul(goh, vt)                                         # (B, H, F, F)
    gs = a * (ga - (ga * a).sum(axis=-1, keepdims=True))            # (B, H, F, F)
    gs *= scale
    gq[...] = np.matmul(gs, kh).transpose(0, 2, 1, 3)               # (B, F, H, dh)
    gk[...] = np.matmul(gs.transpose(0, 1, 3, 2), qh).transpose(0, 2, 1, 3)


def _attention_backward_loop(gq, gk, gv, go, q, k, v, a, scale):
    nb, nf, nh, dh = q.shape
    for c in prange((nb + CHUNK - 1) // CHUNK):     # chunks of examples run in parallel
        qh = np.empty((nf, dh), dtype=q.dtype)      # one head's arrays, contiguous
        kh = np.empty((nf, dh), dtype=q.dtype)
        vh = np.empty((nf, dh), dtype=q.dtype)
        gh = np.empty((nf, dh), dtype=q.dtype)
        gqh = np.empty((nf, dh), dtype=q.dtype)
        gkh = np.empty((nf, dh), dtype=q.dtype)
        gvh = np.empty((nf, dh), dtype=q.dtype)
        gs = np.empty(nf, dtype=q.dtype)
        for b in range(c * CHUNK, min(nb, (c + 1) * CHUNK)):
            for h in range(nh):
                for j in range(nf):
                    for d in range(dh):
                        qh[j, d] = q[b, j, h, d]
                        kh[j, d] = k[b, j, h, d]
                        vh[j, d] = v[b, j, h, d]
                        gh[j, d] = go[b, j, h, d]
                        gqh[j, d] = 0.0
                        gkh[j, d] = 0.0
                        gvh[j, d] = 0.0
                for i in range(nf):
                    row = 0.0
                    for j in range(nf):
                        p = a[b, h, i, j]
                        ga = 0.0
                        for d in range(dh):
                            ga += gh[i, d] * vh[j, d]
                            gvh[j, d] += p * gh[i, d]
                        gs[j] = ga
                        row += ga * p
                    for j in range(nf):
                        g = a[b, h, i, j] * (gs[j] - row) * scale
                        for d in range(dh):
                            gqh[i, d] += g * kh[j, d]
                            gkh[j, d] += g * qh[i, d]
                for j in range(nf):
                    for d in range(dh):
                        gq[b, j, h, d] = gqh[j, d]
                        gk[b, j, h, d] = gkh[j, d]
                        gv[b, j, h, d] = gvh[j, d]


attention_forward = Kernel("attention_forward", _attention_forward_numpy, _attention_forward_loop,
                           parallel=True)
attention_backward = Kernel("attention_backward", _attention_backward_numpy,
                            _attention_backward_loop, parallel=True)
