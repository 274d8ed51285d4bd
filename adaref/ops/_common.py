"""Helpers shared by the op modules: lifting operands to Tensors, axes."""
from __future__ import annotations

import builtins
from typing import Any

import numpy as np

from adaref.tensor import ShapeError, Tensor


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
