"""Fused ops of the experts: each a :class:`~adaref.tensor.Function` whose forward and VJP
call the kernels of :mod:`adaref.kernels` (Numba or NumPy twin, by the one switch), and
next to each, the same op **composed** from core ops of :mod:`adaref.ops` (the
definition it must equal; ``tests/test_kernels_experts.py`` checks value and gradient
equality and runs both through the gradient oracle).

=====================  ==================================================  =================
fused op               computes                                            kernels
=====================  ==================================================  =================
``linear_act``         act(a @ W + b), act linear or relu                  bias_act
``hadamard_linear``    u * (a @ W) [+ b outside] or u * (a @ W + b)        hadamard
``attention``          softmax(scale q k^T, masked) v, per head            attention
``projected_attention``  attention of act(x Wq + bq), act(x Wk + bk),      attention,
                       act(x Wv + bv)                                      bias_act
``conv1d_act``         act(conv1d(x, W, zero padding) + b)                 im2col, col2im,
                                                                           bias_act
``maxpool1d``          max over non-overlapping windows of p positions     maxpool
=====================  ==================================================  =================

Every product by a weight matrix stays one NumPy ``@`` (BLAS): the kernels fuse the
elementwise work around it (bias, activation, Hadamard product, and their gradients)
into single passes, and do the attention and window bookkeeping that BLAS cannot.

>>> import numpy as np, adaref
>>> a, W, b = (adaref.Tensor(np.ones(s)) for s in [(2, 3), (3, 4), (4,)])
>>> linear_act(a, W, b, "relu").shape
(2, 4)
"""
from __future__ import annotations

import numpy as np

from adaref import ops, saved
from adaref.kernels.attention import attention_backward, attention_forward
from adaref.kernels.conv import col2im, im2col, maxpool_backward, maxpool_forward
from adaref.kernels.hadamard import (ACT_LINEAR, ACT_RELU, BIAS_INSIDE, BIAS_NONE,
                                     BIAS_OUTSIDE, bias_act_backward, bias_act_forward,
                                     column_sum, hadamard_backward, hadamard_forward)
from adaref.tensor import Function, ShapeError, Tensor

FUSED_ACTIVATIONS = {"linear": ACT_LINEAR, "relu": ACT_RELU}
BIAS_MODES = {None: BIAS_NONE, "outside": BIAS_OUTSIDE, "inside": BIAS_INSIDE}


def _rows(x: np.ndarray, width: int) -> np.ndarray:
    """``x`` as a C-contiguous (rows, width) array (a view when it already is one)."""
    return np.ascontiguousarray(x.reshape(-1, width))


def _bias_act_grad(g2: np.ndarray, y: np.ndarray, act: int, own_g: bool = False):
    """(gz, gb) for y = act(z + b) given g2 = dL/dy (N, M): gz = g * act'(.) (N, M) and
    gb = sum over rows of gz (M,). For a linear act gz is g2 itself (no copy); for relu
    ``y`` is y or the mask y > 0, and ``own_g`` lets gz overwrite g2 (the caller's own
    array, not the engine's)."""
    gb = np.empty(g2.shape[1], dtype=g2.dtype)                       # (M,)
    if act == ACT_LINEAR:
        column_sum(gb, g2)
        return g2, gb
    gz = g2 if own_g else np.empty_like(g2)                          # (N, M)
    bias_act_backward(gz, gb, g2, y, act)
    return gz, gb


# ============================================================================
# act(a @ W + b)
# ============================================================================
class LinearAct(Function):
    """y = act(a W + b): a (..., K), W (K, M), b (M,) -> y (..., M); act linear or relu.

    VJP with gz = g * act'(.):  ga = gz W^T,  gW = a^T gz,  gb = sum_rows gz.
    """

    name = "linear_act"

    def forward(self, a, W, b, act=ACT_LINEAR):
        self.lead, self.act = a.shape[:-1], act
        a2, self.W = _rows(a, W.shape[0]), W                         # (N, K), (K, M)
        y = a2 @ W                                                   # (N, M)  BLAS
        bias_act_forward(y, y, b, act)                               # in place
        self.a2 = saved.save(a2)                                     # for gW
        self.y = y if act == ACT_RELU else None                      # relu' reads y > 0
        return y.reshape(self.lead + (W.shape[1],))

    def backward(self, g):
        g2 = _rows(g, self.W.shape[1])                               # (N, M)
        gz, gb = _bias_act_grad(g2, self.y, self.act)
        ga = (gz @ self.W.T).reshape(self.lead + (self.W.shape[0],)) if self.needs_grad[0] else None
        gW = saved.load(self.a2).T @ gz if self.needs_grad[1] else None   # (K, M)
        return ga, gW, gb


def linear_act(a: Tensor, W: Tensor, b: Tensor, act: str = "linear") -> Tensor:
    """act(a @ W + b) over the last axis, fused; ``act`` is "linear" or "relu"."""
    _check_linear("linear_act", a, W, b)
    return LinearAct.apply(a, W, b, act=_fused_act(act))


def linear_act_composed(a: Tensor, W: Tensor, b: Tensor, act: str = "linear") -> Tensor:
    """The definition of :func:`linear_act` in core ops."""
    y = ops.matmul(a, W) + b
    return ops.relu(y) if act == "relu" else y


# ============================================================================
# u * (a @ W) with the bias outside or inside
# ============================================================================
class HadamardLinear(Function):
    """y = u * z (+ b), z = a W: a (..., K), W (K, M), u (..., M), b (M,) -> y (..., M).

    ``mode``: BIAS_NONE y = u z; BIAS_OUTSIDE y = u z + b; BIAS_INSIDE y = u (z + b).
    VJP: gz = g u; gu = g z (or g (z + b) inside); gb = sum_rows g (outside) or
    sum_rows gz (inside); then ga = gz W^T, gW = a^T gz.
    """

    name = "hadamard_linear"

    def forward(self, a, W, u, b=None, mode=BIAS_NONE):
        self.lead, self.mode = a.shape[:-1], mode
        a2, self.W = _rows(a, W.shape[0]), W                         # (N, K), (K, M)
        u2 = _rows(u, W.shape[1])                                    # (N, M)
        self.b = np.zeros(W.shape[1], dtype=W.dtype) if b is None else b
        self.z = a2 @ W                                              # (N, M)  BLAS
        y = np.empty_like(self.z)
        hadamard_forward(y, self.z, u2, self.b, mode)
        self.a2, self.u2 = saved.save(a2), saved.save(u2)
        return y.reshape(self.lead + (W.shape[1],))

    def backward(self, g):
        g2 = _rows(g, self.W.shape[1])                               # (N, M)
        gz, gu = np.empty_like(g2), np.empty_like(g2)
        gb = np.empty(g2.shape[1], dtype=g2.dtype)
        hadamard_backward(gz, gu, gb, g2, self.z, saved.load(self.u2), self.b, self.mode)
        ga = (gz @ self.W.T).reshape(self.lead + (self.W.shape[0],)) if self.needs_grad[0] else None
        gW = saved.load(self.a2).T @ gz if self.needs_grad[1] else None   # (K, M)
        grads = (ga, gW, gu.reshape(self.lead + (self.W.shape[1],)))
        return grads if self.mode == BIAS_NONE else grads + (gb,)


def hadamard_linear(a: Tensor, W: Tensor, u: Tensor, b: Tensor | None = None,
                    bias: str | None = None) -> Tensor:
    """u * (a @ W), plus b outside (``bias="outside"``) or inside (``"inside"``)."""
    if (b is None) != (bias is None):
        raise ValueError("hadamard_linear: give both b and bias ('outside'/'inside') or neither")
    if bias not in BIAS_MODES:
        raise ValueError(f"hadamard_linear: bias must be 'outside', 'inside' or None, got {bias!r}")
    _check_linear("hadamard_linear", a, W, b)
    if u.shape != a.shape[:-1] + (W.shape[1],):
        raise ShapeError(f"hadamard_linear: u has shape {u.shape}, expected "
                         f"{a.shape[:-1] + (W.shape[1],)} from a {a.shape} and W {W.shape}")
    tensors = (a, W, u) if b is None else (a, W, u, b)
    return HadamardLinear.apply(*tensors, mode=BIAS_MODES[bias])


def hadamard_linear_composed(a: Tensor, W: Tensor, u: Tensor, b: Tensor | None = None,
                             bias: str | None = None) -> Tensor:
    """The definition of :func:`hadamard_linear` in core ops."""
    z = ops.matmul(a, W)
    if bias == "inside":
        return u * (z + b)
    return u * z + b if bias == "outside" else u * z


# ============================================================================
# Attention over fields
# ============================================================================
class Attention(Function):
    """o = softmax(scale q k^T, masked keys -inf) v per example and head.

    Shapes: q, k, v (B, F, H, dh) -> o (B, F, H, dh); mask (B, F) bool (a constant).
    VJP in :mod:`adaref.kernels.attention`. Saved for it: q, k, v and the mask; the
    probabilities (B, H, F, F), 1.6 times the size of q, k and v together at F = 39,
    dh = 8, are recomputed by the backward kernel with the forward's arithmetic
    (bit-identical). :class:`ProjectedAttention` keeps the projections' input instead
    of q, k and v.
    """

    name = "attention"

    def forward(self, q, k, v, mask=None, scale=1.0):
        self.q, self.k, self.v = (np.ascontiguousarray(t) for t in (q, k, v))
        self.mask, self.scale = mask, scale
        o = np.empty_like(self.q)                                    # (B, F, H, dh)
        attention_forward(o, None, self.q, self.k, self.v, mask, scale)
        return o

    def backward(self, g):
        gq, gk, gv = (np.empty_like(self.q) for _ in range(3))
        attention_backward(gq, gk, gv, np.ascontiguousarray(g), self.q, self.k, self.v,
                           self.mask, self.scale)
        return gq, gk, gv


def attention(q: Tensor, k: Tensor, v: Tensor, mask: np.ndarray | None = None,
              scale: float | None = None) -> Tensor:
    """Multi-head scaled dot-product attention over fields, fused.

    q, k, v (B, F, H, dh); ``mask`` (B, F) bool marks the keys that may be attended
    to (None: all); ``scale`` defaults to 1/sqrt(dh).
    """
    if q.ndim != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ShapeError(f"attention: q, k, v must share one shape (B, F, H, dh), got "
                         f"{q.shape}, {k.shape}, {v.shape}")
    mask = _key_mask(mask, q.shape)
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else float(scale)
    return Attention.apply(q, k, v, mask=mask, scale=scale)


def attention_composed(q: Tensor, k: Tensor, v: Tensor, mask: np.ndarray | None = None,
                       scale: float | None = None) -> Tensor:
    """The definition of :func:`attention` in core ops."""
    mask = _key_mask(mask, q.shape)
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else float(scale)
    qh = ops.transpose(q, (0, 2, 1, 3))                              # (B, H, F, dh)
    kt = ops.transpose(k, (0, 2, 3, 1))                              # (B, H, dh, F)
    vh = ops.transpose(v, (0, 2, 1, 3))                              # (B, H, F, dh)
    s = ops.matmul(qh, kt) * scale                                   # (B, H, F, F)
    s = ops.where(mask[:, None, None, :], s, -np.inf)
    o = ops.matmul(ops.softmax(s, axis=-1), vh)                      # (B, H, F, dh)
    return ops.transpose(o, (0, 2, 1, 3))                            # (B, F, H, dh)


class ProjectedAttention(Function):
    """o = attention(q, k, v) with q = act(x Wq + bq), k = act(x Wk + bk), v = act(x Wv + bv)
    reshaped to heads: x (B, F, D), W* (D, A), b* (A,) -> o (B, F, H, A // H); act linear
    or relu; mask (B, F) bool (a constant).

    The same arithmetic as three :class:`LinearAct` and an :class:`Attention` (values
    and gradients bit-identical, x's three gradients added in the order the engine adds
    them: (q + k) + v), but only x and the weights are saved: q, k and v (three
    (B, F, A) arrays) are computed again in the backward pass, three small products
    (K = D), and the probabilities by the attention kernel.
    """

    name = "projected_attention"

    def forward(self, x, Wq, bq, Wk, bk, Wv, bv, heads=1, act=ACT_LINEAR, mask=None, scale=1.0):
        self.shape, self.heads, self.act, self.mask, self.scale = x.shape, heads, act, mask, scale
        x2 = _rows(x, Wq.shape[0])                                   # (B*F, D)
        self.Ws, self.bs = (Wq, Wk, Wv), (bq, bk, bv)
        q, k, v = self._project(x2)                                  # (B, F, H, dh) each
        o = np.empty_like(q)
        attention_forward(o, None, q, k, v, mask, scale)
        self.x2 = saved.save(x2)
        return o

    def _project(self, x2: np.ndarray) -> list[np.ndarray]:
        """q, k, v, each act(x W + b) as :class:`LinearAct` computes it, (B, F, H, dh)."""
        nb, nf, _ = self.shape
        out = []
        for W, b in zip(self.Ws, self.bs):
            y = x2 @ W                                               # (B*F, A)  BLAS
            bias_act_forward(y, y, b, self.act)                      # in place
            out.append(y.reshape(nb, nf, self.heads, W.shape[1] // self.heads))
        return out

    def backward(self, g):
        x2 = saved.load(self.x2)
        qkv = self._project(x2)
        gqkv = [np.empty_like(qkv[0]) for _ in range(3)]
        attention_backward(*gqkv, np.ascontiguousarray(g), *qkv, self.mask, self.scale)
        gx, grads = None, []
        for i, (W, y, gy) in enumerate(zip(self.Ws, qkv, gqkv)):     # q, k, v: the engine's order
            g2 = _rows(gy, W.shape[1])                               # (B*F, A)
            gz, gb = _bias_act_grad(g2, _rows(y, W.shape[1]), self.act, own_g=True)   # gy is ours
            if self.needs_grad[0]:
                ga = (gz @ W.T).reshape(self.shape)                  # (B, F, D)
                gx = ga if gx is None else np.add(gx, ga, out=gx)
            grads += [x2.T @ gz if self.needs_grad[1 + 2 * i] else None, gb]
        return (gx, *grads)


def projected_attention(x: Tensor, Wq: Tensor, bq: Tensor, Wk: Tensor, bk: Tensor, Wv: Tensor,
                        bv: Tensor, heads: int, act: str = "linear", mask: np.ndarray | None = None,
                        scale: float | None = None) -> Tensor:
    """Multi-head attention over fields of the projections act(x W + b) of x (B, F, D),
    fused: q, k and v are not kept for the backward pass. Returns (B, F, H, A // H);
    ``scale`` defaults to 1/sqrt(A // H)."""
    for name, W, b in (("q", Wq, bq), ("k", Wk, bk), ("v", Wv, bv)):
        _check_linear(f"projected_attention ({name})", x, W, b)
        if W.shape != Wq.shape:
            raise ShapeError(f"projected_attention: W{name} has shape {W.shape}, Wq {Wq.shape}")
    if x.ndim != 3 or heads < 1 or Wq.shape[1] % heads:
        raise ShapeError(f"projected_attention: need x (B, F, D) and heads dividing {Wq.shape[1]}, "
                         f"got x {x.shape}, heads {heads}")
    dh = Wq.shape[1] // heads
    mask = _key_mask(mask, x.shape[:2] + (heads, dh))
    scale = 1.0 / np.sqrt(dh) if scale is None else float(scale)
    return ProjectedAttention.apply(x, Wq, bq, Wk, bk, Wv, bv, heads=int(heads), act=_fused_act(act),
                                    mask=mask, scale=scale)


def projected_attention_composed(x: Tensor, Wq: Tensor, bq: Tensor, Wk: Tensor, bk: Tensor,
                                 Wv: Tensor, bv: Tensor, heads: int, act: str = "linear",
                                 mask: np.ndarray | None = None, scale: float | None = None) -> Tensor:
    """The definition of :func:`projected_attention` in core ops."""
    shape = x.shape[:2] + (heads, Wq.shape[1] // heads)
    q, k, v = (ops.reshape(linear_act_composed(x, W, b, act), shape)
               for W, b in ((Wq, bq), (Wk, bk), (Wv, bv)))
    return attention_composed(q, k, v, mask, scale)


def _key_mask(mask, shape) -> np.ndarray:
    if mask is None:
        return np.ones(shape[:2], dtype=bool)
    mask = np.ascontiguousarray(mask)
    if mask.dtype != bool or mask.shape != shape[:2]:
        raise ShapeError(f"attention: mask must be bool of shape {shape[:2]}, got "
                         f"{mask.dtype} {mask.shape}")
    if not mask.any(axis=1).all():
        raise ValueError(f"attention: example {int(np.argmin(mask.any(axis=1)))} has every key "
                         f"masked; softmax needs at least one")
    return mask


# ============================================================================
# 1-D convolution and max-pooling
# ============================================================================
class Conv1dAct(Function):
    """y = act(conv1d(x, W) + b): x (B, L, C), W (K, C, O), b (O,) -> y (B, T, O),
    T = L + pad_left + pad_right - K + 1, zero padding.

    Forward: cols = im2col(x) (B, T, K*C); y = act(cols @ W.reshape(K*C, O) + b).
    VJP with gz = g * act'(.): gW = cols^T gz, gb = sum gz, gx = col2im(gz W^T).
    Saved: x (through :mod:`adaref.saved`: a dispatched copy is gathered again) and, for
    relu, where y > 0 (one byte per entry; y itself is freed once its reader, the
    pooling, is done with it); cols, K times the size of x, is a temporary of each
    direction (im2col only copies, so the backward's cols equal the forward's).
    """

    name = "conv1d_act"

    def forward(self, x, W, b, pad_left=0, pad_right=0, act=ACT_LINEAR):
        nb, length, c = x.shape
        width, _, n_out = W.shape
        self.W_shape, self.pad_left, self.act = W.shape, pad_left, act
        x = np.ascontiguousarray(x)
        self.x_shape = x.shape
        t_out = length + pad_left + pad_right - width + 1
        self.W2 = W.reshape(width * c, n_out)                        # (K*C, O)
        y = self._cols(x, t_out) @ self.W2                           # (B*T, O)  BLAS
        self.x = saved.save(x)
        bias_act_forward(y, y, b, act)
        self.positive = y > 0 if act == ACT_RELU else None           # (B*T, O) bool
        return y.reshape(nb, t_out, n_out)

    def _cols(self, x: np.ndarray, t_out: int) -> np.ndarray:
        """im2col(x) as a (B*T, K*C) matrix."""
        nb = x.shape[0]
        cols = np.empty((nb, t_out, self.W2.shape[0]), dtype=x.dtype)   # (B, T, K*C)
        im2col(cols, x, self.pad_left)
        return cols.reshape(nb * t_out, self.W2.shape[0])

    def backward(self, g):
        nb, t_out, n_out = g.shape
        g2 = _rows(g, n_out)                                         # (B*T, O)
        # relu' from the mask: the kernel reads y > 0, and (y > 0) > 0 is the same test
        gz, gb = _bias_act_grad(g2, self.positive, self.act)
        gx = gW = None
        if self.needs_grad[0]:
            gcols = (gz @ self.W2.T).reshape(nb, t_out, self.W2.shape[0])   # (B, T, K*C)
            gx = np.empty(self.x_shape, dtype=g.dtype)               # (B, L, C)
            col2im(gx, gcols, self.pad_left)
            del gcols
        if self.needs_grad[1]:
            gW = (self._cols(saved.load(self.x), t_out).T @ gz).reshape(self.W_shape)  # (K, C, O)
        return gx, gW, gb


def conv1d_act(x: Tensor, W: Tensor, b: Tensor, padding: tuple[int, int] = (0, 0),
               act: str = "linear") -> Tensor:
    """act(Conv1D(x) + b) along axis 1 with zero padding (left, right), fused."""
    _check_conv(x, W, b, padding)
    return Conv1dAct.apply(x, W, b, pad_left=padding[0], pad_right=padding[1],
                           act=_fused_act(act))


def conv1d_act_composed(x: Tensor, W: Tensor, b: Tensor, padding: tuple[int, int] = (0, 0),
                        act: str = "linear") -> Tensor:
    """The definition of :func:`conv1d_act` in core ops: sum_j x_pad[:, t+j] @ W[j] + b."""
    nb, length, c = x.shape
    width = W.shape[0]
    zeros = [Tensor(np.zeros((nb, p, c), dtype=x.dtype)) for p in padding]
    xp = ops.concatenate([zeros[0], x, zeros[1]], axis=1)            # (B, L + pads, C)
    t_out = length + padding[0] + padding[1] - width + 1
    y = sum(ops.matmul(xp[:, j:j + t_out, :], W[j]) for j in range(width)) + b   # (B, T, O)
    return ops.relu(y) if act == "relu" else y


class MaxPool1d(Function):
    """y[b, t, c] = max_{r < p} x[b, t p + r, c]: x (B, T, C) -> y (B, T // p, C).

    VJP: the gradient goes to the window's first maximal position, 0 elsewhere. The
    winning position r < p of each output is saved in the smallest unsigned integer
    type that holds p - 1 (one byte for any window up to 256).
    """

    name = "maxpool1d"

    def forward(self, x, p=2):
        nb, length, c = x.shape
        self.shape, self.p = x.shape, p
        y = np.empty((nb, length // p, c), dtype=x.dtype)            # (B, To, C)
        self.index = np.empty(y.shape, dtype=np.min_scalar_type(p - 1))
        maxpool_forward(y, self.index, np.ascontiguousarray(x), p)
        return y

    def backward(self, g):
        gx = np.empty(self.shape, dtype=g.dtype)                     # (B, T, C)
        maxpool_backward(gx, np.ascontiguousarray(g), self.index, self.p)
        return (gx,)


def maxpool1d(x: Tensor, p: int) -> Tensor:
    """Max over non-overlapping windows of ``p`` positions along axis 1 (remainder dropped)."""
    if x.ndim != 3 or not 1 <= p <= x.shape[1]:
        raise ShapeError(f"maxpool1d: need x (B, T, C) with 1 <= p <= T, got x {x.shape}, p={p}")
    return MaxPool1d.apply(x, p=int(p))


def maxpool1d_composed(x: Tensor, p: int) -> Tensor:
    """The definition of :func:`maxpool1d` in core ops (ties share the gradient here)."""
    nb, length, c = x.shape
    t_out = length // p
    return ops.max(ops.reshape(x[:, :t_out * p, :], (nb, t_out, p, c)), axis=2)


# ============================================================================
# Checks
# ============================================================================
def _fused_act(act: str) -> int:
    try:
        return FUSED_ACTIVATIONS[act]
    except KeyError:
        raise ValueError(f"fused activation must be one of {', '.join(FUSED_ACTIVATIONS)}, "
                         f"got {act!r}") from None


def _check_linear(name: str, a: Tensor, W: Tensor, b: Tensor | None) -> None:
    if W.ndim != 2 or a.ndim < 1 or a.shape[-1] != W.shape[0]:
        raise ShapeError(f"{name}: a {a.shape} and W {W.shape} are not aligned "
                         f"(need a (..., K), W (K, M))")
    if b is not None and b.shape != (W.shape[1],):
        raise ShapeError(f"{name}: b has shape {b.shape}, expected ({W.shape[1]},)")


def _check_conv(x: Tensor, W: Tensor, b: Tensor, padding: tuple[int, int]) -> None:
    if x.ndim != 3 or W.ndim != 3 or W.shape[1] != x.shape[2] or b.shape != (W.shape[2],):
        raise ShapeError(f"conv1d_act: need x (B, L, C), W (K, C, O), b (O,); got x {x.shape}, "
                         f"W {W.shape}, b {b.shape}")
    if min(padding) < 0 or x.shape[1] + sum(padding) < W.shape[0]:
        raise ShapeError(f"conv1d_act: sequence of length {x.shape[1]} with padding {padding} "
                         f"is shorter than the kernel width {W.shape[0]}")
