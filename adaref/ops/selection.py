"""Selection: clip, where, the top-k mask.
"""
from __future__ import annotations

import numpy as np

from adaref import kernels
from adaref.tensor import DTypeError, Function, ShapeError, Tensor
from adaref.ops._common import _axes, _lift, _pair


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
