"""The autograd engine: ``Tensor``, ``Function``, ``backward`` and ``no_grad``.

This file, :mod:`adaref.accumulation` and the package :mod:`adaref.ops` are the whole
reverse-mode autograd. Read this one first: it holds the four ideas every op relies on.

1. A :class:`Tensor` wraps one ``numpy.ndarray`` (float32 or float64) and, if it was
   produced by an op while gradients were enabled, the :class:`Function` that made it.
2. A :class:`Function` is one op: ``forward`` maps arrays to an array and ``backward``
   maps the output's gradient to one gradient per input (the vector-Jacobian
   product). Both sit side by side in :mod:`adaref.ops`. The graph holds an array only
   where a ``forward`` saved it: an op refers to its inputs without their data
   (:class:`_Node`), and a backward pass releases each op once it has run.
3. :meth:`Tensor.backward` sorts the graph topologically and walks it in reverse
   once, **accumulating** the gradients of tensors used more than once with
   :func:`~adaref.accumulation.accumulate` (dense or row-sparse; in place, into an
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

from adaref.accumulation import RowSparseGrad, accumulate, dense

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

    __slots__ = ("data", "grad", "requires_grad", "name", "_ctx", "_node", "__weakref__")
    __array_priority__ = 1000  # ndarray (op) Tensor defers to Tensor's reflected op

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None,
                 name: str | None = None):
        self.data: np.ndarray = _as_float_array(data, dtype)
        self.grad: np.ndarray | RowSparseGrad | None = None
        self.requires_grad = bool(requires_grad)
        self.name = name
        self._ctx: Function | None = None
        self._node: _Node | None = None     # how the ops that read this tensor refer to it

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
    def backward(self, grad: Any = None, inputs: Sequence["Tensor"] | None = None,
                 retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires it.

        ``grad`` is the upstream gradient (the vector of the vector-Jacobian product);
        it may be omitted only for a single-element tensor, and is read in this tensor's
        dtype. Gradients add up across calls until :meth:`zero_grad`.

        The pass consumes the graph: as soon as an op's backward has run, the op drops
        what its forward saved and its links to its inputs (:meth:`Function.release`),
        so an intermediate array is freed once nothing else holds it, and the memory of
        a backward pass shrinks as it goes instead of adding its gradients on top of the
        whole forward graph. A second pass through the same graph raises; to go
        through it twice, pass ``retain_graph=True`` to the first (nothing is released).

        ``inputs``: compute the gradients of these leaves only. The graph is pruned to
        the ops that lie on a path from one of them to ``self``; every other op's
        backward is skipped, and an op whose inputs are only partly on such a path is
        told so (``Function.needs_grad``), so it computes no gradient for the rest
        (e.g. no weight gradient of a matmul whose input leads to a gate). The gradients
        of ``inputs`` are bit-identical to a full backward pass; other leaves' ``.grad``
        are left as they are.

        >>> w, a = Tensor([2.0], requires_grad=True), Tensor([3.0], requires_grad=True)
        >>> ((w * a) * a).sum().backward(inputs=[a])
        >>> a.grad, w.grad
        (array([12.]), None)
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

        order = _topological_order(self)
        needed = None if inputs is None else _on_paths_to(order, inputs)
        pending: dict[int, np.ndarray | RowSparseGrad] = {id(self): grad}  # summed so far
        owned: set[int] = set()   # pending sums held in arrays this pass allocated itself
        while order:               # outputs before inputs; a node leaves the list when done
            node = order.pop()
            g = pending.pop(id(node), None)
            owned.discard(id(node))
            ctx = node._ctx
            if ctx is None:            # a leaf: keep its gradient, adding across calls
                if g is not None and (needed is None or id(node) in needed):
                    node.grad = _private(g) if node.grad is None else accumulate(node.grad, g)
                continue
            if g is not None and (needed is None or id(node) in needed):
                for parent, pg in zip(ctx.parents, _vjp(ctx, dense(g), needed)):
                    if (pg is None or not parent.requires_grad
                            or (needed is not None and id(parent) not in needed)):
                        continue
                    if not isinstance(pg, RowSparseGrad):
                        pg = unbroadcast(pg, parent.shape)
                    _add_pending(pending, owned, parent, pg)
            del g
            if not retain_graph:
                ctx.release()

    # Operators (a + b, a @ b, x[i]) and methods (x.sum(), x.exp(), x.T, ...) are thin
    # wrappers over the op functions; adaref.ops attaches them (ops -> tensor, one way).


class _Node:
    """An intermediate tensor as the graph refers to it: its op, shape and whether it
    requires grad, **without its data**. The ops that read a tensor list it among their
    ``parents`` this way (a leaf as itself), so a forward graph holds an intermediate
    array only where an op saved it for its backward pass (or the caller still holds
    the tensor), not because another op read it. One node per tensor
    (:func:`_graph_node`), so the engine's bookkeeping by identity is unchanged.
    """

    __slots__ = ("_ctx", "requires_grad", "shape", "name")

    def __init__(self, t: "Tensor"):
        self._ctx, self.requires_grad, self.shape, self.name = t._ctx, t.requires_grad, t.shape, t.name

    def __repr__(self) -> str:
        return f"<graph node of a {self.shape} tensor made by {self._ctx.name if self._ctx else '?'}>"


def _graph_node(t: Tensor) -> "Tensor | _Node":
    """What an op's ``parents`` hold for its input ``t``: a leaf itself (the engine
    writes its ``.grad``), an intermediate as its :class:`_Node`."""
    if t._ctx is None:
        return t
    if t._node is None:
        t._node = _Node(t)
    return t._node


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
        if node._ctx is not None and node._ctx.released:
            raise RuntimeError(f"backward: the graph through {node._ctx.name} was already released by an "
                               f"earlier backward pass; pass retain_graph=True to that pass to go "
                               f"through the graph twice")
        if node._ctx is not None:
            stack.extend((p, False) for p in node._ctx.parents
                         if p.requires_grad and id(p) not in seen)
    return order


def _on_paths_to(order: list[Tensor], inputs: Sequence[Tensor]) -> set[int]:
    """Ids of the tensors of ``order`` (inputs before outputs) that depend on one of the
    leaves ``inputs``: exactly those whose gradient a pruned backward pass needs."""
    needed: set[int] = set()
    for t in inputs:
        if not isinstance(t, Tensor) or not t.requires_grad or t._ctx is not None:
            raise ValueError(f"backward: inputs must be leaf tensors that require grad; got "
                             f"{t!r:.60}" + ("" if not isinstance(t, Tensor) else
                                             " (computed by an op)" if t._ctx is not None else
                                             " (requires_grad=False)"))
        needed.add(id(t))
    for node in order:
        if node._ctx is not None and any(id(p) in needed for p in node._ctx.parents):
            needed.add(id(node))
    return needed


def _vjp(ctx: "Function", g: np.ndarray, needed: set[int] | None) -> tuple:
    """``ctx.backward(g)``; in a pruned pass (``needed``), with ``ctx.needs_grad`` narrowed
    for the call to the inputs on a path to a requested leaf."""
    if needed is None:
        return ctx.backward(g)
    saved = ctx.needs_grad
    ctx.needs_grad = tuple(n and id(p) in needed for n, p in zip(saved, ctx.parents))
    try:
        return ctx.backward(g)
    finally:
        ctx.needs_grad = saved


def _private(g: "np.ndarray | RowSparseGrad") -> "np.ndarray | RowSparseGrad":
    """A dense gradient copied into an array of its own: an op may hand one array to two
    inputs (``x + x``), so a leaf's first gradient must not be the op's array."""
    return np.array(g) if isinstance(g, np.ndarray) else g


def _add_pending(pending: dict, owned: set, parent: Tensor,
                 g: "np.ndarray | RowSparseGrad") -> None:
    """Add ``g`` to the gradient ``parent`` has received so far in this backward pass.

    The first gradient is kept as it is (it may be an op's array, shared). A leaf's sum
    is formed out of place, so an embedding table's row-sparse gradients stay sparse. An
    intermediate's sum is a dense array this pass allocates once, on the second
    gradient (the sum of the first two, in one pass when both are dense), and then adds
    into in place.
    """
    key = id(parent)
    if key not in pending:
        pending[key] = g
    elif parent._ctx is None:
        pending[key] = accumulate(pending[key], g)
    else:
        first = pending[key]
        if key not in owned:
            owned.add(key)
            if isinstance(first, np.ndarray) and isinstance(g, np.ndarray) and first.ndim:
                pending[key] = accumulate(first, g)     # out of place: a new array, one pass
                return
            # np.array: a NumPy scalar becomes a writable 0-d array
            pending[key] = first.to_dense() if isinstance(first, RowSparseGrad) else np.array(first)
        pending[key] = accumulate(pending[key], g, in_place=True)


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


# ----------------------------------------------------------------------------
# Function: the base of every op
# ----------------------------------------------------------------------------
class Function:
    """One differentiable op. Subclasses define, next to each other:

    * ``forward(self, *arrays, **options) -> ndarray``, saving on ``self`` what the
      backward pass needs, and only that (the input arrays are not kept otherwise:
      ``parents`` refers to an intermediate input without its data);
    * ``backward(self, grad) -> tuple``: one gradient per tensor input (``None`` where
      ``self.needs_grad[i]`` is False or the input is not differentiable). A gradient
      may have the broadcast output shape: the engine reduces it.

    ``apply`` checks dtypes, runs ``forward`` and links the result into the graph;
    :meth:`release` (called by the engine once ``backward`` has run) unlinks it.
    """

    name = "op"
    released = False

    def __init__(self, parents: Sequence[Tensor]):
        self.parents = tuple(_graph_node(p) for p in parents)   # leaves, and _Node's
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

    def release(self) -> None:
        """Drop everything ``forward`` saved and the links to the inputs, so that their
        arrays can be freed; the op can no longer run ``backward``."""
        self.__dict__.clear()
        self.parents, self.needs_grad, self.released = (), (), True

    def backward(self, grad: np.ndarray) -> tuple:
        raise NotImplementedError(f"{type(self).__name__}.backward")

