"""The autograd engine: ``Tensor``, ``Function``, ``backward`` and ``no_grad``.

This file and :mod:`adaref.ops` are the whole reverse-mode autograd. Read this one
first: it holds the four ideas every op relies on.

1. A :class:`Tensor` wraps one ``numpy.ndarray`` (float32 or float64) and, if it was
   produced by an op while gradients were enabled, the :class:`Function` that made it.
2. A :class:`Function` is one op: ``forward`` maps arrays to an array and ``backward``
   maps the output's gradient to one gradient per input (the vector-Jacobian
   product). Both sit side by side in :mod:`adaref.ops`.
3. :meth:`Tensor.backward` sorts the graph topologically and walks it in reverse,
   **accumulating** gradients for tensors used more than once (in place, into an
   array the engine allocated itself, once a tensor's second gradient arrives).
4. Broadcasting is undone **once, here** (:func:`unbroadcast`): an op's backward may
   return a gradient in the broadcast output shape, and the engine sums it back down to
   the input's shape. No op repeats that logic.

Dtype rule: float32 and float64 are kept as given, never silently cast. An op whose
tensor inputs mix the two raises :class:`DTypeError`; use :meth:`Tensor.astype`.
Python scalars and integer/bool arrays used as operands take the other operand's
dtype. A Tensor built from Python numbers or integer arrays is float64.

>>> import adaref
>>> x = adaref.Tensor([1.0, 2.0, 3.0], requires_grad=True)
>>> y = (x * x).sum()          # y = sum(x^2)
>>> y.backward()
>>> x.grad                     # dy/dx = 2x
array([2., 4., 6.])
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np

from adaref import kernels

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class ShapeError(ValueError):
    """Shapes that an op cannot combine; the message names the op and the shapes."""


class DTypeError(TypeError):
    """An unsupported dtype, or float32 mixed with float64 in one op."""


# ----------------------------------------------------------------------------
# Grad mode
# ----------------------------------------------------------------------------
_state = threading.local()


def is_grad_enabled() -> bool:
    """True unless inside :func:`no_grad`."""
    return getattr(_state, "grad_enabled", True)


@contextmanager
def no_grad() -> Iterator[None]:
    """Context in which ops record no graph (evaluation, optimiser steps).

    >>> import adaref
    >>> w = adaref.Tensor([1.0], requires_grad=True)
    >>> with adaref.no_grad():
    ...     y = w * 2
    >>> y.requires_grad
    False
    """
    previous = is_grad_enabled()
    _state.grad_enabled = False
    try:
        yield
    finally:
        _state.grad_enabled = previous


# ----------------------------------------------------------------------------
# Gradients of embedding tables: only the touched rows
# ----------------------------------------------------------------------------
class RowSparseGrad:
    """Gradient of an array that is nonzero only in some rows (entries of axis 0).

    ``rows`` (R,) are unique sorted row indices, ``values`` (R, ...) their gradients and
    ``shape`` (V, ...) the array's shape. An embedding lookup produces one for its (V, D)
    table, and optimisers update only ``rows``; the dispatcher's row gather produces one
    for an intermediate (B, F, D), which the engine adds into that tensor's gradient.
    ``to_dense()`` gives the ordinary array.
    """

    __slots__ = ("rows", "values", "shape")

    def __init__(self, rows: np.ndarray, values: np.ndarray, shape: tuple[int, ...]):
        self.rows, self.values, self.shape = rows, values, tuple(shape)

    @property
    def dtype(self) -> np.dtype:
        return self.values.dtype

    def to_dense(self) -> np.ndarray:
        dense = np.zeros(self.shape, dtype=self.values.dtype)
        dense[self.rows] = self.values  # rows are unique: plain assignment is exact
        return dense

    def __add__(self, other: "RowSparseGrad | np.ndarray") -> "RowSparseGrad | np.ndarray":
        if isinstance(other, np.ndarray):
            out = other.copy()
            out[self.rows] += self.values
            return out
        rows, inverse = np.unique(np.concatenate([self.rows, other.rows]), return_inverse=True)
        values = np.zeros((len(rows),) + self.shape[1:], dtype=self.values.dtype)
        np.add.at(values, inverse, np.concatenate([self.values, other.values]))
        return RowSparseGrad(rows, values, self.shape)

    __radd__ = __add__

    def __repr__(self) -> str:
        return f"RowSparseGrad(rows={self.rows.tolist()}, shape={self.shape})"


def dense(grad: "np.ndarray | RowSparseGrad") -> np.ndarray:
    """The gradient as a dense array, whatever form it is stored in."""
    return grad.to_dense() if isinstance(grad, RowSparseGrad) else grad


# ----------------------------------------------------------------------------
# Tensor
# ----------------------------------------------------------------------------
def _as_float_array(data: Any, dtype: Any = None) -> np.ndarray:
    if isinstance(data, Tensor):
        data = data.data
    arr = np.asarray(data)
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype not in FLOAT_DTYPES:
            raise DTypeError(f"Tensor: dtype must be float32 or float64, got {dtype}")
        return arr.astype(dtype, copy=False)
    if arr.dtype in FLOAT_DTYPES:
        return arr
    if arr.dtype.kind in "biu":
        return arr.astype(np.float64)
    raise DTypeError(f"Tensor: dtype must be float32 or float64 (or integer/bool, read as "
                     f"float64), got {arr.dtype}")


class Tensor:
    """An n-dimensional float array that records the ops applied to it.

    Args:
        data: array-like; float32 and float64 arrays are kept without a copy.
        requires_grad: whether :meth:`backward` should compute ``.grad`` for it.
        dtype: optional float32/float64 to cast ``data`` to.
        name: optional label used in error messages and by :mod:`adaref.nn`.
    """

    __slots__ = ("data", "grad", "requires_grad", "name", "_ctx", "__weakref__")
    __array_priority__ = 1000  # ndarray (op) Tensor defers to Tensor's reflected op

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None,
                 name: str | None = None):
        self.data: np.ndarray = _as_float_array(data, dtype)
        self.grad: np.ndarray | RowSparseGrad | None = None
        self.requires_grad = bool(requires_grad)
        self.name = name
        self._ctx: Function | None = None

    # --- array-like attributes ------------------------------------------------
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    dtype = property(lambda self: self.data.dtype)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.data, precision=4)}, dtype={self.dtype}{grad})"

    def numpy(self) -> np.ndarray:
        """The underlying array (not a copy)."""
        return self.data

    def item(self) -> float:
        return self.data.item()

    def detach(self) -> "Tensor":
        """The same values, cut from the graph: no gradient flows through it."""
        return Tensor(self.data)

    def zero_grad(self) -> None:
        self.grad = None

    # --- reverse mode ---------------------------------------------------------
    def backward(self, grad: Any = None) -> None:
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires it.

        ``grad`` is the upstream gradient (the vector of the vector-Jacobian product);
        it may be omitted only for a single-element tensor, and is read in this tensor's
        dtype. Gradients add up across calls until :meth:`zero_grad`.
        """
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad (no input did, or "
                               "it was computed under no_grad())")
        if grad is None:
            if self.size != 1:
                raise ShapeError(f"backward: a gradient is needed for a non-scalar output of "
                                 f"shape {self.shape}")
            grad = np.ones(self.shape, dtype=self.dtype)
        grad = _as_float_array(grad, self.dtype)
        if grad.shape != self.shape:
            raise ShapeError(f"backward: gradient shape {grad.shape} != tensor shape {self.shape}")

        grads: dict[int, np.ndarray | RowSparseGrad] = {id(self): grad}
        owned: set[int] = set()   # intermediates whose gradient array the engine allocated
        for node in reversed(_topological_order(self)):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._ctx is None:  # a leaf: keep its gradient
                if node.grad is None:   # a fresh array: an op may hand one array to two inputs
                    node.grad = np.array(g) if isinstance(g, np.ndarray) else g
                else:
                    node.grad = _accumulate(node.grad, g)
                continue
            ctx = node._ctx
            input_grads = ctx.backward(dense(g))
            for parent, pg in zip(ctx.parents, input_grads):
                if pg is None or not parent.requires_grad:
                    continue
                if not isinstance(pg, RowSparseGrad):
                    pg = unbroadcast(pg, parent.shape)
                key = id(parent)
                if key not in grads:
                    grads[key] = pg           # may be shared: an op can hand one array to two inputs
                elif parent._ctx is None:     # a leaf: a RowSparseGrad stays sparse
                    grads[key] = _accumulate(grads[key], pg)
                elif key in owned:
                    grads[key] = _add_into(grads[key], pg)
                else:                         # a copy of the first gradient, then in place
                    first = grads[key]        # np.array: a NumPy scalar becomes a writable 0-d array
                    grads[key] = _add_into(first.to_dense() if isinstance(first, RowSparseGrad)
                                           else np.array(first), pg)
                    owned.add(key)

    # Operators and methods are thin wrappers over adaref.ops (bound at the bottom).
    def __add__(self, other): return ops.add(self, other)
    def __radd__(self, other): return ops.add(other, self)
    def __sub__(self, other): return ops.sub(self, other)
    def __rsub__(self, other): return ops.sub(other, self)
    def __mul__(self, other): return ops.mul(self, other)
    def __rmul__(self, other): return ops.mul(other, self)
    def __truediv__(self, other): return ops.div(self, other)
    def __rtruediv__(self, other): return ops.div(other, self)
    def __pow__(self, other): return ops.pow(self, other)
    def __rpow__(self, other): return ops.pow(other, self)
    def __neg__(self): return ops.neg(self)
    def __matmul__(self, other): return ops.matmul(self, other)
    def __rmatmul__(self, other): return ops.matmul(other, self)
    def __getitem__(self, key): return ops.getitem(self, key)

    def sum(self, axis=None, keepdims=False): return ops.sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return ops.mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return ops.max(self, axis, keepdims)
    def reshape(self, *shape): return ops.reshape(self, shape[0] if len(shape) == 1 else shape)
    def transpose(self, *axes): return ops.transpose(self, axes[0] if len(axes) == 1 else (axes or None))
    def broadcast_to(self, shape): return ops.broadcast_to(self, shape)
    def astype(self, dtype): return ops.astype(self, dtype)
    def exp(self): return ops.exp(self)
    def log(self): return ops.log(self)
    def sqrt(self): return ops.sqrt(self)
    def abs(self): return ops.abs(self)
    def sigmoid(self): return ops.sigmoid(self)
    def tanh(self): return ops.tanh(self)
    def relu(self): return ops.relu(self)

    @property
    def T(self) -> "Tensor":
        return ops.transpose(self, None)


def _topological_order(root: Tensor) -> list[Tensor]:
    """Tensors reachable from ``root`` that require grad, each after all its inputs.

    Iterative depth-first search, so deep graphs never hit Python's recursion limit.
    """
    order: list[Tensor] = []
    seen: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        if node._ctx is not None:
            stack.extend((p, False) for p in node._ctx.parents
                         if p.requires_grad and id(p) not in seen)
    return order


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``grad`` over the axes that broadcasting added or stretched, back to ``shape``.

    >>> unbroadcast(np.ones((4, 2, 3)), (2, 1)).tolist()
    [[12.0], [12.0]]
    """
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


def _add_into(a: np.ndarray, b: "np.ndarray | RowSparseGrad") -> np.ndarray:
    """a += b in place, for a dense ``a`` that nothing else references; returns a.
    A RowSparseGrad b adds only its rows (kernel ``scatter_add_unique_rows``), so the
    backward of a row gather never builds a full-size array of zeros."""
    if isinstance(b, RowSparseGrad) and a.flags.c_contiguous:       # rows of a are (F*D,) views
        n = len(b.rows)
        kernels.scatter_add_unique_rows(a.reshape(a.shape[0], -1), b.rows,
                                        np.ascontiguousarray(b.values).reshape(n, -1))
    elif isinstance(b, RowSparseGrad):
        a[b.rows] += b.values
    else:
        a += b
    return a


def _accumulate(a, b):
    """a + b for dense arrays and RowSparseGrad in any combination."""
    if isinstance(a, RowSparseGrad) or isinstance(b, RowSparseGrad):
        return a + b if isinstance(a, RowSparseGrad) else b + a
    return a + b


# ----------------------------------------------------------------------------
# Function: the base of every op
# ----------------------------------------------------------------------------
class Function:
    """One differentiable op. Subclasses define, next to each other:

    * ``forward(self, *arrays, **options) -> ndarray``, saving on ``self`` what the
      backward pass needs;
    * ``backward(self, grad) -> tuple``: one gradient per tensor input (``None`` where
      ``self.needs_grad[i]`` is False or the input is not differentiable). A gradient
      may have the broadcast output shape: the engine reduces it.

    ``apply`` checks dtypes, runs ``forward`` and links the result into the graph.
    """

    name = "op"

    def __init__(self, parents: Sequence[Tensor]):
        self.parents = tuple(parents)
        self.needs_grad = tuple(p.requires_grad for p in self.parents)

    @classmethod
    def apply(cls, *inputs: Tensor, **options: Any) -> Tensor:
        dtypes = {t.data.dtype for t in inputs}
        if len(dtypes) > 1:
            raise DTypeError(f"{cls.name}: inputs mix {' and '.join(sorted(map(str, dtypes)))}; "
                             f"cast one explicitly with .astype()")
        ctx = cls(inputs)
        out = Tensor(ctx.forward(*(t.data for t in inputs), **options))
        if is_grad_enabled() and any(ctx.needs_grad):
            out.requires_grad = True
            out._ctx = ctx
        return out

    def forward(self, *arrays: np.ndarray, **options: Any) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, grad: np.ndarray) -> tuple:
        raise NotImplementedError(f"{type(self).__name__}.backward")


from adaref import ops  # noqa: E402  (ops builds on Function and Tensor above)
