"""Neural-network ops: softmax, log-softmax, layer norm, embedding lookup.
"""
from __future__ import annotations

import numpy as np

from adaref import kernels
from adaref.tensor import Function, RowSparseGrad, ShapeError, Tensor, is_grad_enabled
from adaref.ops._common import _axes, _lift
from adaref.ops.indexing import _int_index


class Softmax(Function):
    """y = exp(x - max x) / sum exp(x - max x) along ``axis``; -inf entries get 0.

    VJP: gx = y * (g - sum(g * y)).
    """

    name = "softmax"

    def forward(self, x, axis=-1):
        self.axis = axis
        if x.ndim == 2 and axis == 1:                  # the gates' (B, N): one pass per row
            self.y = np.empty_like(x)
            if kernels.softmax_rows(self.y, np.ascontiguousarray(x)):
                _finite_max(x, axis, "softmax")         # raises, naming what is wrong
            return self.y
        z = np.exp(x - _finite_max(x, axis, "softmax"))
        self.y = z / z.sum(axis=axis, keepdims=True)
        return self.y

    def backward(self, g):
        y = self.y
        return (y * (g - (g * y).sum(axis=self.axis, keepdims=True)),)


class LogSoftmax(Function):
    """y = x - max x - log sum exp(x - max x) along ``axis``; -inf entries stay -inf.

    VJP: gx = g - softmax(x) * sum(g).
    """

    name = "log_softmax"

    def forward(self, x, axis=-1):
        self.axis = axis
        shifted = x - _finite_max(x, axis, "log_softmax")
        z = np.exp(shifted)
        total = z.sum(axis=axis, keepdims=True)
        self.p = z / total
        return shifted - np.log(total)

    def backward(self, g):
        return (g - self.p * g.sum(axis=self.axis, keepdims=True),)


def _finite_max(x: np.ndarray, axis: int, name: str) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    if not np.all(np.isfinite(m)):
        bad = "NaN" if np.isnan(m).any() else ("+inf" if np.isposinf(m).any() else "only -inf")
        raise ValueError(f"{name}: a slice along axis {axis} has {bad} entries; every slice "
                         f"needs at least one finite value and none NaN/+inf")
    return m


class LayerNorm(Function):
    """y = (x - mean) / sqrt(var + eps) * gain + bias over the last axis (biased
    variance, as TensorFlow's and PyTorch's layer norms); x (..., D), gain and bias
    (D,), both optional (then y = xhat, the plain normalisation).

    VJP with xhat = (x - mean) * inv, inv = 1/sqrt(var + eps), gh = g * gain, over D
    entries: gx = inv * (gh - mean(gh) - xhat * mean(gh * xhat)); ggain = sum over rows
    of g * xhat; gbias = sum over rows of g.
    Both directions run as one pass per row (kernels ``layer_norm_forward`` /
    ``layer_norm_backward``, Numba or NumPy twin), the affine map fused in.
    """

    name = "layer_norm"

    def forward(self, x, gain=None, bias=None, eps=1e-5):
        d = x.shape[-1]
        self.affine = gain is not None
        if not self.affine:
            gain, bias = np.ones(d, dtype=x.dtype), np.zeros(d, dtype=x.dtype)
        x2 = np.ascontiguousarray(x.reshape(-1, d))                    # (N, D)
        y = np.empty_like(x2)                                          # (N, D)
        keep = is_grad_enabled() and any(self.needs_grad)              # a backward can follow
        self.xhat = np.empty_like(x2) if keep else None                # (N, D)
        self.inv = np.empty((x2.shape[0], 1), dtype=x.dtype)           # (N, 1)
        self.gain = np.ascontiguousarray(gain)                         # (D,)
        kernels.layer_norm_forward(y, self.xhat, self.inv, x2, self.gain,
                                   np.ascontiguousarray(bias), x.dtype.type(eps))
        self.shape = x.shape
        return y.reshape(x.shape)

    def backward(self, g):
        g2 = np.ascontiguousarray(g.reshape(self.xhat.shape))          # (N, D)
        gx, ggain, gbias = np.empty_like(g2), np.empty_like(self.gain), np.empty_like(self.gain)
        kernels.layer_norm_backward(gx, ggain, gbias, g2, self.gain, self.xhat, self.inv)
        return (gx.reshape(self.shape), ggain, gbias) if self.affine else (gx.reshape(self.shape),)


class EmbeddingLookup(Function):
    """y = weight[ids]: weight (V, D), ids (...) int -> y (..., D).

    The VJP for ``weight`` is a :class:`~adaref.tensor.RowSparseGrad`: only the rows
    that ``ids`` touch, each the sum of the gradients of its occurrences
    (kernel ``scatter_add_rows``, Numba or NumPy twin).
    """

    name = "embedding"

    def forward(self, weight, ids=None):
        self.shape, self.ids = weight.shape, ids
        return np.take(weight, ids, axis=0)      # (..., D); weight[ids], several times faster

    def backward(self, g):
        rows, inverse = _unique_inverse(self.ids.reshape(-1), self.shape[0])   # (R,), (n,)
        values = np.zeros((len(rows), self.shape[1]), dtype=g.dtype)  # (R, D)
        kernels.scatter_add_rows(values, inverse.reshape(-1).astype(np.int64),
                                 np.ascontiguousarray(g.reshape(-1, self.shape[1])))
        return (RowSparseGrad(rows.astype(np.int64), values, self.shape),)


def _unique_inverse(ids: np.ndarray, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(ids, return_inverse=True)`` for ids (n,) in [0, vocab): the sorted
    distinct ids (R,) and each id's position among them (n,). When the table is not much
    larger than the batch, a mark per row and a running count replace the sort."""
    if vocab > 16 * ids.size:
        rows, inverse = np.unique(ids, return_inverse=True)
        return rows, inverse.reshape(-1)
    present = np.zeros(vocab, dtype=bool)
    present[ids] = True
    kind = np.int32 if vocab < 2 ** 31 else np.int64                # half the memory
    position = np.cumsum(present, dtype=kind)                        # (V,) 1 + rank among present
    return np.flatnonzero(present), position[ids].astype(np.int64) - 1


def softmax(x, axis: int = -1) -> Tensor:
    """Numerically stable softmax along ``axis``. Entries equal to -inf (masked) get
    probability 0; a slice with no finite entry is an error."""
    x = _lift(x)
    return Softmax.apply(x, axis=_axes(axis, x.ndim)[0])


def log_softmax(x, axis: int = -1) -> Tensor:
    """Numerically stable log-softmax along ``axis``; -inf entries stay -inf."""
    x = _lift(x)
    return LogSoftmax.apply(x, axis=_axes(axis, x.ndim)[0])


def layer_norm(x, eps: float = 1e-5, gain=None, bias=None) -> Tensor:
    """Normalise over the last axis to zero mean and unit (biased) variance, then
    ``* gain + bias`` (each (D,)) when given: both or neither.

    >>> y = layer_norm(Tensor(np.array([[1.0, 3.0]])), 1e-12, Tensor(np.array([2.0, 2.0])),
    ...                Tensor(np.array([0.0, 1.0])))
    >>> y.data.tolist()
    [[-2.0, 3.0]]
    """
    x = _lift(x)
    if (gain is None) != (bias is None):
        raise ValueError("layer_norm: give both gain and bias, or neither")
    if gain is None:
        return LayerNorm.apply(x, eps=eps)
    gain, bias = _lift(gain), _lift(bias)
    d = x.shape[-1] if x.ndim else None
    if gain.shape != (d,) or bias.shape != (d,):
        raise ShapeError(f"layer_norm: gain {gain.shape} and bias {bias.shape} must be (D,) = ({d},) "
                         f"for input shape {x.shape}")
    return LayerNorm.apply(x, gain, bias, eps=eps)


def embedding(weight, ids) -> Tensor:
    """Look up rows of ``weight`` (V, D) for integer ``ids`` of any shape -> (..., D).

    The gradient of ``weight`` touches only the looked-up rows (a RowSparseGrad).
    """
    weight = _lift(weight)
    if weight.ndim != 2:
        raise ShapeError(f"embedding: weight must be 2-D (V, D), got shape {weight.shape}")
    ids = _int_index("embedding", ids, weight.shape[0])
    if ids.size and ids.min() < 0:
        raise IndexError(f"embedding: negative id {ids.min()}")
    return EmbeddingLookup.apply(weight, ids=ids)
