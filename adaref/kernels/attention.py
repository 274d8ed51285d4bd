"""Scaled dot-product attention over fields, forward and backward (the MHSA expert, eq. 4).

Layout: queries, keys and values are ``(B, F, H, dh)`` C-contiguous arrays, exactly as
a projection ``(B, F, H*dh)`` reshapes, so no transpose is needed around the kernel;
the output has the same layout. ``mask`` (B, F) bool marks the keys each example may
attend to (all True when there is nothing to mask); a masked key gets score -inf and
probability 0. Every example needs at least one unmasked key (the caller checks).
The forward may write the probabilities into ``a`` (B, H, F, F) (``a=None``: not
written; the fused op passes None). The backward does not read them: it recomputes
them from q, k and the mask with the forward's own arithmetic (one routine, compiled
without fast-math flags in both kernels; the NumPy twin shares its function too), so
a training step keeps no (B, H, F, F) array and its results are bit-identical to
saving them.

Forward, per example b, head h and query i:

    s_ij = scale * <q_i, k_j>            (masked j: -inf)
    a_ij = exp(s_ij - max_j s_ij) / sum_j exp(s_ij - max_j s_ij)
    o_i  = sum_j a_ij v_j

Backward, given go = dL/do and the probabilities a (recomputed, the very values the
forward computes):

    gv_j = sum_i a_ij go_i
    ga_ij = <go_i, v_j>
    gs_ij = a_ij (ga_ij - sum_j' a_ij' ga_ij')
    gq_i = scale * sum_j gs_ij k_j ,   gk_j = scale * sum_i gs_ij q_i

Precision: both twins compute in the input's dtype, float64 in float64 and float32 in
float32, as NumPy's matmuls do (and PyTorch's and TensorFlow's CPU attention for
float32). The loops' scratch arrays have the input's dtype, so a float32 vector holds
twice the values of a float64 one; the exps come from :mod:`adaref.kernels.expm`
(within 2 ulp, float32 or float64).

Agreement of the twins: the NumPy twin uses batched matmuls (BLAS or NumPy's own
inner loops, whose summation order is not specified); the forward loop adds in index
order, the backward lets LLVM reorder its sums over queries (``reassoc``). Each output
is a sum of at most max(F, dh) products, so the two differ by at most about
``2 * max(F, dh) * eps * (sum of |terms|)`` (eps the dtype's unit roundoff);
``tests/test_kernels_experts.py`` checks a relative 1e-12 (float64) and 1e-5 (float32)
on the output scale.

>>> import numpy as np
>>> q = np.zeros((1, 2, 1, 1)); v = np.array([1.0, 3.0]).reshape(1, 2, 1, 1)
>>> o, a = np.empty_like(q), np.empty((1, 1, 2, 2))
>>> attention_forward(o, a, q, q, v, np.ones((1, 2), bool), 1.0)
>>> o.ravel().tolist()      # equal scores: the mean of the values
[2.0, 2.0]
"""

import numba
import numpy as np
from numba import prange   # a plain range without the JIT; parallel chunks with it

from adaref.kernels import Kernel
from adaref.kernels.expm import exp_nonpositive

CHUNK = 64   # examples per parallel task: each task owns its scratch arrays
LANES = 8    # float64 per 512-bit vector, float32 per 256-bit: query columns are padded to a multiple


def _padded(nf):
    """The scratch arrays' number of query columns: F rounded up to a multiple of
    LANES, so that every loop over queries runs in whole vectors (LLVM's scalar
    remainder loop had up to LANES - 1 iterations of every F = 39 row). The columns
    past F belong to no query; nothing is read from them."""
    return (nf + LANES - 1) // LANES * LANES


padded = numba.njit(inline="always")(_padded)


def _probabilities_numpy(q, k, mask, scale):
    """The probabilities (B, H, F, F) in the input dtype, from q, k (B, F, H, dh) and
    mask (B, F) bool: the forward's and the backward's one computation."""
    qh = q.transpose(0, 2, 1, 3)                                    # (B, H, F, dh)
    kh = k.transpose(0, 2, 3, 1)                                    # (B, H, dh, F)
    s = np.matmul(qh, kh)                                           # (B, H, F, F)
    s *= scale
    s[~np.broadcast_to(mask[:, None, None, :], s.shape)] = -np.inf  # masked keys
    s -= s.max(axis=-1, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(axis=-1, keepdims=True)
    return s


def _attention_forward_numpy(o, a, q, k, v, mask, scale):
    """o (B, F, H, dh) and a (B, H, F, F) (None: not written) from q, k, v (B, F, H, dh),
    mask (B, F) bool."""
    s = _probabilities_numpy(q, k, mask, scale)                     # (B, H, F, F)
    if a is not None:
        a[...] = s
    vh = v.transpose(0, 2, 1, 3)                                    # (B, H, F, dh)
    o[...] = np.matmul(s, vh).transpose(0, 2, 1, 3)                 # (B, F, H, dh)


def _key_dots(out, xt, y, b, h):
    """out[j, i] = sum_d xt[d, i] * y[b, j, h, d], summed over d in order: the dot
    products of every key j < F with every query column i < out.shape[1] (xt: queries
    transposed, (dh, padded F)), the inner loop over query columns (vectorised)."""
    nk, nq, dh = out.shape[0], out.shape[1], xt.shape[0]
    for j in range(nk):
        for i in range(nq):
            out[j, i] = 0.0
        for d in range(dh):
            yd = y[b, j, h, d]
            for i in range(nq):
                out[j, i] += xt[d, i] * yd


key_dots = numba.njit(inline="always")(_key_dots)


def _probabilities_loop(st, qt, m, inv, pow2, q, k, mask, scale, b, h):
    """st[j, i] <- the probability a_ij of example b, head h (scratch of q's dtype laid
    out [key j, query column i]), and qt[d, i] <- q[b, i, h, d] (the queries transposed,
    which the backward reuses); m, inv (P,) and pow2 (F*P,) are scratch, all of q's
    dtype, P = :func:`padded` F query columns: the columns i >= F of qt must hold zeros
    (the caller zeroes them once), so those columns are the probabilities of a zero
    query, finite and never read. Compiled on its own without fast-math flags and called (not inlined
    by Numba) from both the forward and the backward kernel, so both compute
    bit-identical probabilities."""
    nf, dh = q.shape[1], q.shape[3]
    nq = st.shape[1]
    flat = st.reshape(nf * nq)
    sc, one = st.dtype.type(scale), st.dtype.type(1.0)    # constants in the scratch's dtype
    for i in range(nq):
        m[i] = -np.inf
    for i in range(nf):
        for d in range(dh):
            qt[d, i] = q[b, i, h, d]
    key_dots(st, qt, k, b, h)           # st[j, i] = <q_i, k_j>
    for j in range(nf):                 # scaled, masked, and each query's max
        if mask[b, j]:
            for i in range(nq):
                st[j, i] *= sc
                if st[j, i] > m[i]:
                    m[i] = st[j, i]
        else:
            for i in range(nq):
                st[j, i] = -np.inf      # masked key: probability 0
    for j in range(nf):
        for i in range(nq):
            st[j, i] -= m[i]
    exp_nonpositive(flat, pow2, nf * nq)
    for i in range(nq):
        inv[i] = 0.0
    for j in range(nf):                 # sum over keys j in index order
        for i in range(nq):
            inv[i] += st[j, i]
    for i in range(nq):
        inv[i] = one / inv[i]
    for j in range(nf):
        for i in range(nq):
            st[j, i] *= inv[i]


probabilities_loop = numba.njit(nogil=True)(_probabilities_loop)


def _attention_forward_loop(o, a, q, k, v, mask, scale):
    # One example and head at a time, in scratch of q's dtype laid out [key j, query i] so
    # that every inner loop runs over the F queries (LLVM vectorises them) and the
    # softmax's exps are one call over F*F values (kernels.expm).
    nb, nf, nh, dh = q.shape
    nq = padded(nf)                                 # query columns: F and zero padding
    for c in prange((nb + CHUNK - 1) // CHUNK):     # chunks of examples run in parallel
        dt = q.dtype                                # scratch in the input's dtype
        qt = np.zeros((dh, nq), dt)                 # one head's queries, transposed
        st = np.empty((nf, nq), dt)                 # st[j, i]: probability a_ij
        pow2 = np.empty(nf * nq, dt)                # scratch of exp_nonpositive
        m = np.empty(nq, dt)                        # max score of each query
        inv = np.empty(nq, dt)                      # 1 / sum of each query's exps
        ot = np.empty((dh, nq), dt)                 # output, transposed
        for b in range(c * CHUNK, min(nb, (c + 1) * CHUNK)):
            for h in range(nh):
                probabilities_loop(st, qt, m, inv, pow2, q, k, mask, scale, b, h)
                if a is not None:
                    for i in range(nf):
                        for j in range(nf):
                            a[b, h, i, j] = st[j, i]
                for d in range(dh):                 # o = a v, summed over j in order
                    for i in range(nq):
                        ot[d, i] = 0.0
                for j in range(nf):
                    for d in range(dh):
                        vd = v[b, j, h, d]
                        for i in range(nq):
                            ot[d, i] += st[j, i] * vd
                for i in range(nf):
                    for d in range(dh):
                        o[b, i, h, d] = ot[d, i]


def _attention_backward_numpy(gq, gk, gv, go, q, k, v, mask, scale):
    """gq, gk, gv (B, F, H, dh) from go (B, F, H, dh), q, k, v and the mask; the
    probabilities are recomputed as the forward computes them."""
    a = _probabilities_numpy(q, k, mask, scale)                     # (B, H, F, F)
    goh = go.transpose(0, 2, 1, 3)                                  # (B, H, F, dh)
    qh, kh = q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3)       # (B, H, F, dh)
    vt = v.transpose(0, 2, 3, 1)                                    # (B, H, dh, F)
    gv[...] = np.matmul(a.transpose(0, 1, 3, 2), goh).transpose(0, 2, 1, 3)
    ga = np.matmul(goh, vt)                                         # (B, H, F, F)
    gs = a * (ga - (ga * a).sum(axis=-1, keepdims=True))            # (B, H, F, F)
    gs *= scale
    gq[...] = np.matmul(gs, kh).transpose(0, 2, 1, 3)               # (B, F, H, dh)
    gk[...] = np.matmul(gs.transpose(0, 1, 3, 2), qh).transpose(0, 2, 1, 3)


def _attention_backward_loop(gq, gk, gv, go, q, k, v, mask, scale):
    # As the forward: scratch in the input's dtype laid out [key j, query i], loops over
    # queries i innermost; the sums over i (gk, gv) are reductions LLVM may reorder
    # (reassoc). The probabilities come from the forward's routine (no reassoc there),
    # so they are the very values the forward computes.
    nb, nf, nh, dh = q.shape
    nq = padded(nf)                                 # query columns: F and zero padding
    for c in prange((nb + CHUNK - 1) // CHUNK):     # chunks of examples run in parallel
        dt = q.dtype                                # scratch in the input's dtype
        sc, zero = dt.type(scale), dt.type(0.0)
        at = np.empty((nf, nq), dt)                 # at[j, i] = a_ij (recomputed)
        pow2 = np.empty(nf * nq, dt)                # scratch of the recomputation
        m = np.empty(nq, dt)
        inv = np.empty(nq, dt)
        ga = np.empty((nf, nq), dt)                 # ga[j, i] = <go_i, v_j>, then gs
        qt = np.zeros((dh, nq), dt)                 # queries, transposed (padding: 0)
        got = np.zeros((dh, nq), dt)                # output gradient, transposed (0)
        gqt = np.empty((dh, nq), dt)                # query gradient, transposed
        row = np.empty(nq, dt)                      # sum_j a_ij ga_ij of each query
        for b in range(c * CHUNK, min(nb, (c + 1) * CHUNK)):
            for h in range(nh):
                probabilities_loop(at, qt, m, inv, pow2, q, k, mask, scale, b, h)
                for i in range(nf):
                    for d in range(dh):
                        got[d, i] = go[b, i, h, d]
                for d in range(dh):
                    for i in range(nq):
                        gqt[d, i] = 0.0
                for i in range(nq):
                    row[i] = 0.0
                key_dots(ga, got, v, b, h)          # ga[j, i] = <go_i, v_j>
                for j in range(nf):
                    for i in range(nq):
                        row[i] += at[j, i] * ga[j, i]
                # a padding column has got = 0, so ga = row = gs = 0 there: it adds
                # exact zeros to gk and gv
                for j in range(nf):
                    for i in range(nq):
                        ga[j, i] = at[j, i] * (ga[j, i] - row[i]) * sc        # gs
                    for d in range(dh):
                        kd = k[b, j, h, d]
                        sk = zero
                        sv = zero
                        for i in range(nq):
                            gqt[d, i] += ga[j, i] * kd
                            sk += ga[j, i] * qt[d, i]
                            sv += at[j, i] * got[d, i]
                        gk[b, j, h, d] = sk
                        gv[b, j, h, d] = sv
                for i in range(nf):
                    for d in range(dh):
                        gq[b, i, h, d] = gqt[d, i]


attention_forward = Kernel("attention_forward", _attention_forward_numpy, _attention_forward_loop,
                           parallel=True)
attention_backward = Kernel("attention_backward", _attention_backward_numpy,
                            _attention_backward_loop, parallel=True, reassoc=True)
