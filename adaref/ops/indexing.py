"""Indexing: getitem, take, gather (take_along_axis), scatter_add.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from adaref.tensor import DTypeError, Function, ShapeError, Tensor
from adaref.ops._common import _axes, _lift


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
