"""Every differentiable op: its forward pass and its vector-Jacobian product, side by side.

Each op is a :class:`~adaref.tensor.Function` subclass: ``forward`` computes the
output from NumPy arrays and saves what ``backward`` needs; ``backward(g)`` returns
one gradient per tensor input, given the output's gradient ``g``. Gradients may keep
the broadcast output shape: the engine (:func:`adaref.tensor.unbroadcast`) reduces
them, once. Under each class is the public function that calls it.

Conventions: ``x``, ``a``, ``b`` are input arrays, ``y`` the output, ``g`` the
gradient of the loss with respect to ``y``. Shapes in comments.

Sections: elementwise binary, elementwise unary and activations, reductions,
shape, indexing, neural-network ops (softmax, log-softmax, layer norm, embedding),
selection (clip, where, top-k mask).
"""
from __future__ import annotations

import builtins
from typing import Any, Sequence

import numpy as np
from scipy.special import erf

from adaref import kernels
from adaref.tensor import DTypeError, Function, RowSparseGrad, ShapeError, Tensor, is_grad_enabled

_SQRT_2 = np.sqrt(2.0)
_SQRT_2PI = np.sqrt(2.0 * np.pi)


def _lift(x: Any, like: Any = None) -> Tensor:
    """``x`` as a Tensor: Python numbers and integer arrays take the dtype of ``like``."""
    if isinstance(x, Tensor):
        return x
    arr = np.asarray(x)
    is_scalar = arr.ndim == 0 and not isinstance(x, np.ndarray)   # Python or NumPy scalar
    if arr.dtype.kind in "biu" or (is_scalar and arr.dtype.kind == "f"):
        return Tensor(arr.astype(like.dtype if isinstance(like, Tensor) else np.float64))
    return Tensor(arr)  # float arrays keep their dtype; mixing is caught by Function.apply


def _pair(name: str, a: Any, b: Any) -> tuple[Tensor, Tensor]:
    a, b = _lift(a, b), _lift(b, a)
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ShapeError(f"{name}: cannot broadcast shapes {a.shape} and {b.shape}") from None
    return a, b


def _axes(axis: Any, ndim: int) -> tuple[int, ...]:
    """Normalise ``axis`` (None, int or tuple; negative allowed) to sorted positive axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < builtins.max(ndim, 1):
            raise ShapeError(f"axis {a} is out of range for a tensor with {ndim} dimensions")
        out.append(int(a) % builtins.max(ndim, 1))
    return tuple(sorted(set(out)))


def _restore_axes(g: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
    """Re-insert reduced axes into ``g`` so it broadcasts against the input."""
    return g if keepdims else np.expand_dims(g, axes)


# ============================================================================
# Elementwise binary ops
# ============================================================================
class Add(Function):
    name = "add"

    def forward(self, a, b):
        return a + b

    def backward(self, g):
        return g, g


class Sub(Function):
    name = "sub"

    def forward(self, a, b):
        return a - b

    def backward(self, g):
        return g, -g


class Mul(Function):
    name = "mul"

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        return g * self.b, g * self.a


class Div(Function):
    name = "div"

    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        ga = g / self.b
        return ga, (-ga * self.a / self.b if self.needs_grad[1] else None)


class Pow(Function):
    """y = a ** b. dy/da = b a^(b-1); dy/db = y ln a (computed only when b needs it)."""

    name = "pow"

    def forward(self, a, b):
        self.a, self.b = a, b
        self.y = a ** b
        return self.y

    def backward(self, g):
        ga = g * self.b * self.a ** (self.b - 1) if self.needs_grad[0] else None
        gb = g * self.y * np.log(self.a) if self.needs_grad[1] else None
        return ga, gb


def add(a, b) -> Tensor:
    """a + b with broadcasting."""
    return Add.apply(*_pair("add", a, b))


def sub(a, b) -> Tensor:
    """a - b with broadcasting."""
    return Sub.apply(*_pair("sub", a, b))


def mul(a, b) -> Tensor:
    """a * b (Hadamard product) with broadcasting."""
    return Mul.apply(*_pair("mul", a, b))


def div(a, b) -> Tensor:
    """a / b with broadcasting."""
    return Div.apply(*_pair("div", a, b))


def pow(a, b) -> Tensor:  # noqa: A001  (mirrors the operator's name)
    """a ** b with broadcasting; the gradient for b needs a > 0."""
    return Pow.apply(*_pair("pow", a, b))


class MatMul(Function):
    """y = a @ b, NumPy semantics: 1-D operands are promoted, leading dims broadcast.

    Shapes: a (..., n, k), b (..., k, m) -> y (..., n, m).
    VJP: ga = g @ b^T, gb = a^T @ g (the engine sums broadcast batch dims away).
    """

    name = "matmul"

    def forward(self, a, b):
        self.a, self.b = a, b
        return a @ b

    def backward(self, g):
        a, b = self.a, self.b
        # Promote 1-D operands to matrices so one formula covers every case.
        a2 = a[None, :] if a.ndim == 1 else a                       # (..., n, k)
        b2 = b[:, None] if b.ndim == 1 else b                       # (..., k, m)
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
        g2 = g.reshape(batch + (a2.shape[-2], b2.shape[-1]))        # (..., n, m)
        ga = gb = None
        if self.needs_grad[0]:
            ga = g2 @ np.swapaxes(b2, -1, -2)                       # (..., n, k)
            ga = ga[..., 0, :] if a.ndim == 1 else ga               # engine sums batch dims
        if self.needs_grad[1]:
            gb = np.swapaxes(a2, -1, -2) @ g2                       # (..., k, m)
            gb = gb[..., 0] if b.ndim == 1 else gb
        return ga, gb


def matmul(a, b) -> Tensor:
    """Matrix product a @ b, batched over leading dimensions (NumPy's ``matmul`` rules)."""
    a, b = _lift(a, b), _lift(b, a)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"matmul: scalar operand: shapes {a.shape} and {b.shape}")
    k_a = a.shape[-1]
    k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    try:
        if k_a != k_b:
            raise ValueError
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ShapeError(f"matmul: shapes {a.shape} and {b.shape} are not aligned "
                         f"(inner sizes {k_a} and {k_b}, batch dims must broadcast)") from None
    return MatMul.apply(a, b)


# ============================================================================
# Elementwise unary ops and activations
# ============================================================================
class Neg(Function):
    name = "neg"

    def forward(self, x):
        return -x

    def backward(self, g):
        return (-g,)


class Exp(Function):
    name = "exp"

    def forward(self, x):
        self.y = np.exp(x)
        return self.y

    def backward(self, g):
        return (g * self.y,)


class Log(Function):
    name = "log"

    def forward(self, x):
        self.x = x
        return np.log(x)

    def backward(self, g):
        return (g / self.x,)


class Sqrt(Function):
    name = "sqrt"

    def forward(self, x):
        self.y = np.sqrt(x)
        return self.y

    def backward(self, g):
        return (g / (2 * self.y),)


class Abs(Function):
    """y = |x|; the subgradient at 0 is taken as 0."""

    name = "abs"

    def forward(self, x):
        self.x = x
        return np.abs(x)

    def backward(self, g):
        return (g * np.sign(self.x),)


class Sigmoid(Function):
    """y = 1 / (1 + e^-x), computed without overflow for large |x|; dy/dx = y (1 - y)."""

    name = "sigmoid"

    def forward(self, x):
        z = np.exp(-np.abs(x))                          # in (0, 1]: never overflows
        self.y = np.where(x >= 0, 1 / (1 + z), z / (1 + z)).astype(x.dtype, copy=False)
        return self.y

    def backward(self, g):
        return (g * self.y * (1 - self.y),)


class Tanh(Function):
    name = "tanh"

    def forward(self, x):
        self.y = np.tanh(x)
        return self.y

    def backward(self, g):
        return (g * (1 - self.y * self.y),)


class Relu(Function):
    """y = max(x, 0); the subgradient at 0 is taken as 0."""

    name = "relu"

    def forward(self, x):
        self.positive = x > 0
        return np.maximum(x, 0)          # keeps the dtype; NaN stays NaN (np.where would give 0)

    def backward(self, g):
        return (g * self.positive,)


class Gelu(Function):
    """GELU. ``approximate=False``: y = x Phi(x) with Phi the normal CDF (TensorFlow's and
    PyTorch's default). ``approximate=True``: the tanh form
    y = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
    """

    name = "gelu"

    def forward(self, x, approximate=False):
        self.x, self.approximate = x, approximate
        if approximate:
            c = np.sqrt(2 / np.pi).astype(x.dtype)
            self.t = np.tanh(c * (x + 0.044715 * x ** 3))
            return (0.5 * x * (1 + self.t)).astype(x.dtype, copy=False)
        self.cdf = (0.5 * (1 + erf(x / _SQRT_2))).astype(x.dtype, copy=False)
        return x * self.cdf

    def backward(self, g):
        x = self.x
        if self.approximate:
            c = np.sqrt(2 / np.pi)
            dt = (1 - self.t ** 2) * c * (1 + 3 * 0.044715 * x ** 2)
            return ((g * (0.5 * (1 + self.t) + 0.5 * x * dt)).astype(x.dtype, copy=False),)
        pdf = np.exp(-0.5 * x * x) / _SQRT_2PI
        return ((g * (self.cdf + x * pdf)).astype(x.dtype, copy=False),)


def neg(x) -> Tensor:
    return Neg.apply(_lift(x))


def exp(x) -> Tensor:
    return Exp.apply(_lift(x))


def log(x) -> Tensor:
    """Natural logarithm."""
    return Log.apply(_lift(x))


def sqrt(x) -> Tensor:
    return Sqrt.apply(_lift(x))


def abs(x) -> Tensor:  # noqa: A001
    return Abs.apply(_lift(x))


def sigmoid(x) -> Tensor:
    """Logistic function, stable for large |x|."""
    return Sigmoid.apply(_lift(x))


def tanh(x) -> Tensor:
    return Tanh.apply(_lift(x))


def relu(x) -> Tensor:
    return Relu.apply(_lift(x))


def gelu(x, approximate: bool = False) -> Tensor:
    """Gaussian error linear unit; exact (erf) by default, tanh form if ``approximate``."""
    return Gelu.apply(_lift(x), approximate=approximate)


# ============================================================================
# Reductions
# ============================================================================
class Sum(Function):
    name = "sum"

    def forward(self, x, axes=(), keepdims=False):
        self.shape, self.axes, self.keepdims = x.shape, axes, keepdims
        return np.sum(x, axis=axes, keepdims=keepdims)

    def backward(self, g):
        g = _restore_axes(g, self.axes, self.keepdims)
        return (np.broadcast_to(g, self.shape),)


class Mean(Function):
    name = "mean"

    def forward(self, x, axes=(), keepdims=False):
        self.shape, self.axes, self.keepdims = x.shape, axes, keepdims
        self.count = int(np.prod([x.shape[a] for a in axes]))
        return np.mean(x, axis=axes, keepdims=keepdims)

    def backward(self, g):
        g = _restore_axes(g, self.axes, self.keepdims) / self.count
        return (np.broadcast_to(g, self.shape),)


class Max(Function):
    """Maximum over axes. Where several elements tie for the maximum, the gradient is
    shared equally among them (so it sums to the upstream gradient)."""

    name = "max"

    def forward(self, x, axes=(), keepdims=False):
        self.axes, self.keepdims = axes, keepdims
        y = np.max(x, axis=axes, keepdims=True)
        self.winners = x == y
        self.count = self.winners.sum(axis=axes, keepdims=True).astype(x.dtype)
        return y if keepdims else np.squeeze(y, axis=axes)

    def backward(self, g):
        g = _restore_axes(g, self.axes, self.keepdims)
        return (g * self.winners / self.count,)


def _reduce(cls, x, axis, keepdims) -> Tensor:
    x = _lift(x)
    axes = _axes(axis, x.ndim)
    if cls is Max and any(x.shape[a] == 0 for a in axes):
        raise ShapeError(f"max: reduction over an empty axis of shape {x.shape}")
    return cls.apply(x, axes=axes, keepdims=keepdims)


def sum(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Sum over ``axis`` (None: all; int or tuple; negative allowed)."""
    return _reduce(Sum, x, axis, keepdims)


def mean(x, axis=None, keepdims: bool = False) -> Tensor:
    """Mean over ``axis``."""
    return _reduce(Mean, x, axis, keepdims)


def max(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Maximum over ``axis``; ties share the gradient equally."""
    return _reduce(Max, x, axis, keepdims)


# ============================================================================
# Shape ops
# ============================================================================
class Reshape(Function):
    name = "reshape"

    def forward(self, x, shape=()):
        self.shape = x.shape
        return x.reshape(shape)

    def backward(self, g):
        return (g.reshape(self.shape),)


class Transpose(Function):
    name = "transpose"

    def forward(self, x, axes=None):
        self.inverse = None if axes is None else tuple(np.argsort(axes))
        return np.transpose(x, axes)

    def backward(self, g):
        return (np.transpose(g, self.inverse),)


class BroadcastTo(Function):
    """The VJP of a broadcast is a sum over the stretched axes: the engine's
    ``unbroadcast`` already does exactly that, so backward passes ``g`` through."""

    name = "broadcast_to"

    def forward(self, x, shape=()):
        return np.broadcast_to(x, shape)

    def backward(self, g):
        return (g,)


class Concatenate(Function):
    name = "concatenate"

    def forward(self, *xs, axis=0):
        self.axis = axis
        self.splits = np.cumsum([x.shape[axis] for x in xs])[:-1]
        return np.concatenate(xs, axis=axis)

    def backward(self, g):
        return tuple(np.split(g, self.splits, axis=self.axis))


class Stack(Function):
    name = "stack"

    def forward(self, *xs, axis=0):
        self.axis = axis
        return np.stack(xs, axis=axis)

    def backward(self, g):
        return tuple(np.moveaxis(g, self.axis, 0))


class AsType(Function):
    """Explicit cast between float32 and float64; the gradient is cast back."""

    name = "astype"

    def forward(self, x, dtype=np.float64):
        self.dtype = x.dtype
        return x.astype(dtype)

    def backward(self, g):
        return (g.astype(self.dtype),)


def reshape(x, shape) -> Tensor:
    x = _lift(x)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    try:
        np.empty(x.shape, dtype=np.int8).reshape(shape)
    except ValueError:
        raise ShapeError(f"reshape: cannot reshape {x.shape} ({x.size} elements) into {shape}") from None
    return Reshape.apply(x, shape=shape)


def transpose(x, axes=None) -> Tensor:
    """Permute axes (reverse them if ``axes`` is None)."""
    x = _lift(x)
    if axes is not None:
        axes = tuple(int(a) % x.ndim for a in axes)
        if sorted(axes) != list(range(x.ndim)):
            raise ShapeError(f"transpose: axes {axes} are not a permutation for shape {x.shape}")
    return Transpose.apply(x, axes=axes)


def broadcast_to(x, shape) -> Tensor:
    x = _lift(x)
    shape = tuple(shape)
    try:
        np.broadcast_shapes(x.shape, shape)
        if np.broadcast_shapes(x.shape, shape) != shape:
            raise ValueError
    except ValueError:
        raise ShapeError(f"broadcast_to: cannot broadcast {x.shape} to {shape}") from None
    return BroadcastTo.apply(x, shape=shape)


def concatenate(xs: Sequence, axis: int = 0) -> Tensor:
    """Join tensors along an existing axis."""
    xs = [_lift(x) for x in xs]
    if not xs:
        raise ShapeError("concatenate: no tensors given")
    ref = xs[0].shape
    axis = _axes(axis, len(ref))[0]
    for x in xs[1:]:
        if x.ndim != len(ref) or any(x.shape[i] != ref[i] for i in range(len(ref)) if i != axis):
            raise ShapeError(f"concatenate: shapes {ref} and {x.shape} differ outside axis {axis}")
    return Concatenate.apply(*xs, axis=axis)


def stack(xs: Sequence, axis: int = 0) -> Tensor:
    """Join same-shape tensors along a new axis."""
    xs = [_lift(x) for x in xs]
    if not xs:
        raise ShapeError("stack: no tensors given")
    for x in xs[1:]:
        if x.shape != xs[0].shape:
            raise ShapeError(f"stack: shapes {xs[0].shape} and {x.shape} differ")
    axis = int(axis) % (xs[0].ndim + 1)
    return Stack.apply(*xs, axis=axis)


def astype(x, dtype) -> Tensor:
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise DTypeError(f"astype: dtype must be float32 or float64, got {dtype}")
    return AsType.apply(_lift(x), dtype=dtype)


# ============================================================================
# Indexing: getitem, take, gather (take_along_axis), scatter_add
# ============================================================================
def _along(axis: int, index: np.ndarray) -> tuple:
    """The index tuple that selects ``index`` along ``axis`` (``x[:, :, index]``)."""
    return (slice(None),) * axis + (index,)


class GetItem(Function):
    """y = x[key] for any NumPy key (basic or advanced). The VJP scatters g back with
    ``np.add.at``, so repeated indices accumulate."""

    name = "getitem"

    def forward(self, x, key=()):
        self.shape, self.key = x.shape, key
        return x[key]

    def backward(self, g):
        gx = np.zeros(self.shape, dtype=g.dtype)
        np.add.at(gx, self.key, g)
        return (gx,)


class Take(Function):
    """y = np.take(x, index, axis): shape x.shape[:axis] + index.shape + x.shape[axis+1:]."""

    name = "take"

    def forward(self, x, index=None, axis=0):
        self.shape, self.index, self.axis = x.shape, index, axis
        return np.take(x, index, axis=axis)

    def backward(self, g):
        gx = np.zeros(self.shape, dtype=g.dtype)
        np.add.at(gx, _along(self.axis, self.index), g)
        return (gx,)


class Gather(Function):
    """y = np.take_along_axis(x, index, axis): y[i][j][k] = x[i][index[i][j][k]][k] (axis=1)."""

    name = "gather"

    def forward(self, x, index=None, axis=0):
        self.shape, self.axis = x.shape, axis
        self.full_index = tuple(index if d == axis else np.arange(n).reshape(
            [-1 if e == d else 1 for e in range(index.ndim)])
            for d, n in enumerate(index.shape))
        return np.take_along_axis(x, index, axis=axis)

    def backward(self, g):
        gx = np.zeros(self.shape, dtype=g.dtype)
        np.add.at(gx, self.full_index, g)
        return (gx,)


class ScatterAdd(Function):
    """y = base, then y[..., index[i], ...] += src[..., i, ...] along ``axis``.

    The inverse of :class:`Take`: base (..., N, ...), index (M,), src (..., M, ...).
    VJP: g_base = g; g_src = take(g, index, axis).
    """

    name = "scatter_add"

    def forward(self, base, src, index=None, axis=0):
        self.index, self.axis = index, axis
        y = base.copy()
        np.add.at(y, _along(axis, index), src)
        return y

    def backward(self, g):
        return g, np.take(g, self.index, axis=self.axis)


def _int_index(name: str, index: Any, size: int) -> np.ndarray:
    index = np.asarray(index)
    if index.dtype.kind not in "iu":
        raise DTypeError(f"{name}: indices must be integers, got {index.dtype}")
    if index.size and (index.min() < -size or index.max() >= size):
        raise IndexError(f"{name}: index {index.min() if index.min() < -size else index.max()} "
                         f"is out of range for an axis of size {size}")
    return index


def getitem(x, key) -> Tensor:
    """x[key] with NumPy indexing; repeated advanced indices accumulate in the gradient."""
    x = _lift(x)
    if isinstance(key, Tensor):
        raise DTypeError("getitem: index with an integer/bool NumPy array, not a Tensor")
    try:
        np.empty(x.shape, dtype=np.int8)[key]
    except IndexError as e:
        raise IndexError(f"getitem: {e} (tensor shape {x.shape})") from None
    return GetItem.apply(x, key=key)


def take(x, index, axis: int = 0) -> Tensor:
    """Select entries ``index`` (any integer shape) along ``axis``."""
    x = _lift(x)
    axis = _axes(axis, x.ndim)[0]
    return Take.apply(x, index=_int_index("take", index, x.shape[axis]), axis=axis)


def gather(x, index, axis: int) -> Tensor:
    """``np.take_along_axis``: ``index`` has x's number of dimensions and picks, per
    position, one entry along ``axis``."""
    x = _lift(x)
    axis = _axes(axis, x.ndim)[0]
    index = _int_index("gather", index, x.shape[axis])
    if index.ndim != x.ndim or any(index.shape[d] not in (x.shape[d],) for d in range(x.ndim) if d != axis):
        raise ShapeError(f"gather: index shape {index.shape} does not match input shape {x.shape} "
                         f"outside axis {axis}")
    return Gather.apply(x, index=index, axis=axis)


def scatter_add(base, index, src, axis: int = 0) -> Tensor:
    """Add the slices of ``src`` into ``base`` at positions ``index`` (1-D) along ``axis``.

    >>> import adaref
    >>> scatter_add(np.zeros(3), np.array([0, 2, 0]), np.array([1.0, 2.0, 3.0])).data
    array([4., 0., 2.])
    """
    base, src = _lift(base, src), _lift(src, base)
    axis = _axes(axis, base.ndim)[0]
    index = _int_index("scatter_add", index, base.shape[axis])
    if index.ndim != 1:
        raise ShapeError(f"scatter_add: index must be 1-D, got shape {index.shape}")
    expected = base.shape[:axis] + index.shape + base.shape[axis + 1:]
    if src.shape != expected:
        raise ShapeError(f"scatter_add: src shape {src.shape} != {expected} expected from base "
                         f"{base.shape}, index {index.shape} and axis {axis}")
    return ScatterAdd.apply(base, src, index=index, axis=axis)


# ============================================================================
# Neural-network ops
# ============================================================================
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
        rows, inverse = np.unique(self.ids, return_inverse=True)   # (R,), (n,)
        values = np.zeros((len(rows), self.shape[1]), dtype=g.dtype)  # (R, D)
        kernels.scatter_add_rows(values, inverse.reshape(-1).astype(np.int64),
                                 np.ascontiguousarray(g.reshape(-1, self.shape[1])))
        return (RowSparseGrad(rows.astype(np.int64), values, self.shape),)


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


# ============================================================================
# Selection: clip, where, top-k mask
# ============================================================================
class Clip(Function):
    """y = min(max(x, lo), hi); gradient passes where lo <= x <= hi (as PyTorch's clamp)."""

    name = "clip"

    def forward(self, x, lo=None, hi=None):
        self.inside = np.ones(x.shape, dtype=bool)
        if lo is not None:
            self.inside &= x >= lo
        if hi is not None:
            self.inside &= x <= hi
        return np.clip(x, lo, hi).astype(x.dtype, copy=False)

    def backward(self, g):
        return (g * self.inside,)


class Where(Function):
    """y = a where cond else b (cond a boolean array, not differentiated)."""

    name = "where"

    def forward(self, a, b, cond=None):
        self.cond = cond
        return np.where(cond, a, b)

    def backward(self, g):
        zero = np.zeros((), dtype=g.dtype)
        return np.where(self.cond, g, zero), np.where(self.cond, zero, g)


def clip(x, lo: float | None = None, hi: float | None = None) -> Tensor:
    """Clamp to [lo, hi] (either may be None)."""
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"clip: lo={lo} > hi={hi}")
    return Clip.apply(_lift(x), lo=lo, hi=hi)


def where(cond, a, b) -> Tensor:
    """Elementwise select: ``a`` where ``cond`` is True, else ``b`` (all broadcast)."""
    cond = np.asarray(cond.data if isinstance(cond, Tensor) else cond)
    if cond.dtype != bool:
        raise DTypeError(f"where: cond must be a boolean array, got {cond.dtype}")
    a, b = _pair("where", a, b)
    try:
        np.broadcast_shapes(cond.shape, a.shape, b.shape)
    except ValueError:
        raise ShapeError(f"where: cannot broadcast cond {cond.shape} with {a.shape} and {b.shape}") from None
    return Where.apply(a, b, cond=cond)


def topk_mask(x, k: int, axis: int = -1) -> np.ndarray:
    """Boolean mask of the ``k`` largest entries along ``axis`` (eq. 11's TopK).

    Ties are broken deterministically: among equal values the **lowest index wins**
    (docs/decisions.md row 12; TensorFlow's ``top_k`` does the same). The mask is a
    constant (no gradient); apply it with :func:`where`, e.g. ``where(mask, g, -inf)``.

    >>> topk_mask(np.array([1.0, 3.0, 3.0, 2.0]), k=2).tolist()
    [False, True, True, False]
    >>> topk_mask(np.array([5.0, 5.0, 5.0]), k=1).tolist()
    [True, False, False]
    """
    arr = np.asarray(x.data if isinstance(x, Tensor) else x)
    axis = _axes(axis, arr.ndim)[0]
    n = arr.shape[axis]
    if not 1 <= k <= n:
        raise ValueError(f"topk_mask: k={k} must be in [1, {n}] for axis {axis} of shape {arr.shape}")
    if arr.ndim == 2 and axis == 1 and arr.dtype.kind == "f":    # the gates' (B, N)
        mask = np.empty(arr.shape, dtype=bool)
        if kernels.topk_rows(mask, np.ascontiguousarray(arr), k):
            raise ValueError("topk_mask: input contains NaN")
        return mask
    if np.isnan(arr).any():
        raise ValueError("topk_mask: input contains NaN")
    order = np.argsort(-arr, axis=axis, kind="stable")   # stable: equal values keep index order
    mask = np.zeros(arr.shape, dtype=bool)
    np.put_along_axis(mask, np.take(order, np.arange(k), axis=axis), True, axis=axis)
    return mask
