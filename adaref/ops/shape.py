"""Shape ops: reshape, transpose, broadcast_to, concatenate, stack, astype.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from adaref.tensor import DTypeError, Function, ShapeError, Tensor
from adaref.ops._common import _axes, _lift


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
