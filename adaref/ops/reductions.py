"""Reductions: sum, mean, max.
"""
from __future__ import annotations

import numpy as np

from adaref.tensor import Function, ShapeError, Tensor
from adaref.ops._common import _axes, _lift, _restore_axes


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
