"""1-D convolution (as im2col + one BLAS matmul) and max-pooling, forward and backward
(the convolution expert, eq. 3).

A 1-D convolution of x (B, L, C) with a kernel W (K, C, O), zero padding ``pad_left``
before and whatever ``T`` implies after, is

    y[b, t, o] = sum_{j < K, c < C} x[b, t + j - pad_left, c] * W[j, c, o]     (t < T)

(x read as 0 outside [0, L)). :data:`im2col` copies the windows into
``cols (B, T, K*C)`` with ``cols[b, t, j*C + c] = x[b, t + j - pad_left, c]``, so that
``y = cols @ W.reshape(K*C, O)`` is one BLAS matmul; :data:`col2im` is its adjoint,
adding the window gradients back onto x. Max-pooling takes non-overlapping windows of
``p`` positions (stride p, a trailing remainder dropped, as Keras' 'valid' pooling);
ties go to the **first** position of the window (as ``np.argmax``).

Agreement of the twins: im2col, the pooling forward and its backward only copy or
compare, and col2im adds the K contributions of each input element in order of j in
both twins, so Numba and NumPy agree **exactly** (tested).

>>> import numpy as np
>>> x = np.arange(3.0).reshape(1, 3, 1)
>>> cols = np.empty((1, 3, 2))
>>> im2col(cols, x, 1)                 # K = 2, one zero on the left
>>> cols[0].tolist()
[[0.0, 0.0], [0.0, 1.0], [1.0, 2.0]]
"""
import numpy as np

try:
    from numba import prange   # parallel examples under the JIT; a plain range without it
except ImportError:            # the NumPy twins run without Numba
    prange = range

from adaref.kernels import Kernel


def _im2col_numpy(cols, x, pad_left):
    """cols (B, T, K*C) from x (B, L, C), zero-padded by ``pad_left`` on the left."""
    nb, length, c = x.shape
    t_out = cols.shape[1]
    width = cols.shape[2] // c
    view = cols.reshape(nb, t_out, width, c)                        # (B, T, K, C)
    view[...] = 0.0
    for j in range(width):
        lo = max(0, pad_left - j)                                   # first t inside x
        hi = min(t_out, length + pad_left - j)                      # one past the last
        if hi > lo:
            view[:, lo:hi, j, :] = x[:, lo + j - pad_left:hi + j - pad_left, :]


def _im2col_loop(cols, x, pad_left):
    nb, length, c = x.shape
    t_out, kc = cols.shape[1], cols.shape[2]
    n = length * c
    xf = x.reshape(nb, n)                                           # (B, L*C) a view
    for b in prange(nb):          # each example writes its own windows: in parallel
        for t in range(t_out):
            start = (t - pad_left) * c                              # window's first entry
            if start >= 0 and start + kc <= n:                      # inside: one copy
                for e in range(kc):
                    cols[b, t, e] = xf[b, start + e]
            else:                                                   # overlaps the padding
                for e in range(kc):
                    s = start + e
                    cols[b, t, e] = xf[b, s] if 0 <= s < n else 0.0


def _col2im_numpy(gx, gcols, pad_left):
    """gx (B, L, C) = adjoint of im2col applied to gcols (B, T, K*C); overwrites gx."""
    nb, length, c = gx.shape
    t_out = gcols.shape[1]
    width = gcols.shape[2] // c
    view = gcols.reshape(nb, t_out, width, c)                       # (B, T, K, C)
    gx[...] = 0.0
    for j in range(width):
        lo = max(0, pad_left - j)
        hi = min(t_out, length + pad_left - j)
        if hi > lo:
            gx[:, lo + j - pad_left:hi + j - pad_left, :] += view[:, lo:hi, j, :]


def _col2im_loop(gx, gcols, pad_left):
    nb, length, c = gx.shape
    t_out = gcols.shape[1]
    width = gcols.shape[2] // c
    for b in prange(nb):                                            # examples in parallel
        for s in range(length):                                     # gather per target
            for ch in range(c):
                gx[b, s, ch] = 0.0
            for j in range(width):                                  # in order of j, as NumPy
                t = s + pad_left - j
                if 0 <= t < t_out:
                    for ch in range(c):
                        gx[b, s, ch] += gcols[b, t, j * c + ch]


def _maxpool_forward_numpy(out, index, x, p):
    """out (B, To, C) = max over windows of p positions of x (B, T, C), To = T // p;
    index (B, To, C) the winning position within its window (first on ties), any integer
    type that holds p - 1."""
    nb, t_out, c = out.shape
    windows = x[:, :t_out * p].reshape(nb, t_out, p, c)             # (B, To, p, C)
    index[...] = np.argmax(windows, axis=2)                         # (B, To, C)
    out[...] = np.take_along_axis(windows, index[:, :, None, :], axis=2)[:, :, 0, :]


def _maxpool_forward_loop(out, index, x, p):
    nb, t_out, c = out.shape
    for b in prange(nb):          # each example its own windows: in parallel
        for t in range(t_out):
            for ch in range(c):
                best = x[b, t * p, ch]
                arg = 0
                for r in range(1, p):
                    v = x[b, t * p + r, ch]
                    if v > best:
                        best, arg = v, r
                out[b, t, ch] = best
                index[b, t, ch] = arg


def _maxpool_backward_numpy(gx, g, index, p):
    """gx (B, T, C): g (B, To, C) routed to each window's winning position; 0 elsewhere."""
    nb, t_out, c = g.shape
    gx[...] = 0.0
    windows = gx[:, :t_out * p].reshape(nb, t_out, p, c)            # a view into gx
    np.put_along_axis(windows, index[:, :, None, :], g[:, :, None, :], axis=2)


def _maxpool_backward_loop(gx, g, index, p):
    nb, t_out, c = g.shape
    for b in prange(nb):          # each example writes its own rows of gx: in parallel
        for s in range(gx.shape[1]):
            for ch in range(c):
                gx[b, s, ch] = 0.0
        for t in range(t_out):
            for ch in range(c):
                gx[b, t * p + index[b, t, ch], ch] = g[b, t, ch]


im2col = Kernel("im2col", _im2col_numpy, _im2col_loop, parallel=True)
col2im = Kernel("col2im", _col2im_numpy, _col2im_loop, parallel=True)
maxpool_forward = Kernel("maxpool_forward", _maxpool_forward_numpy, _maxpool_forward_loop, parallel=True)
maxpool_backward = Kernel("maxpool_backward", _maxpool_backward_numpy, _maxpool_backward_loop,
                          parallel=True)
