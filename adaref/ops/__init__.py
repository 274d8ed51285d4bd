"""Every differentiable op: its forward pass and its vector-Jacobian product, side by side.

Each op is a :class:`~adaref.tensor.Function` subclass: ``forward`` computes the
output from NumPy arrays and saves what ``backward`` needs; ``backward(g)`` returns
one gradient per tensor input, given the output's gradient ``g``. Gradients may keep
the broadcast output shape: the engine (:func:`adaref.tensor.unbroadcast`) reduces
them, once. Under each class is the public function that calls it.

Conventions: ``x``, ``a``, ``b`` are input arrays, ``y`` the output, ``g`` the
gradient of the loss with respect to ``y``. Shapes in comments.

One module per kind of op:

========================  ==================================================
:mod:`.binary`            add, sub, mul, div, pow (broadcasting), matmul, scaled_matmul
:mod:`.unary`             neg, exp, log, sqrt, abs, sigmoid, tanh, relu, gelu
:mod:`.reductions`        sum, mean, max
:mod:`.shape`             reshape, transpose, broadcast_to, concatenate, stack, astype
:mod:`.indexing`          getitem, take, gather, scatter_add
:mod:`.neural`            softmax, log_softmax, layer_norm, embedding
:mod:`.selection`         clip, where, topk_mask (a constant mask, no gradient)
========================  ==================================================

This package also gives :class:`~adaref.tensor.Tensor` its operators and methods
(``a + b``, ``a @ b``, ``x.sum()``, ``x[i]``; :func:`_bind_tensor_methods` at the
bottom), so that :mod:`adaref.tensor` never imports the ops: the dependency runs one
way, ops -> tensor.
"""
from __future__ import annotations

from adaref.ops.binary import (Add, Div, MatMul, Mul, Pow, ScaledMatMul, Sub, add, div, matmul, mul, pow,
                               scaled_matmul, sub)
from adaref.ops.indexing import GetItem, Gather, ScatterAdd, Take, gather, getitem, scatter_add, take
from adaref.ops.neural import (EmbeddingLookup, LayerNorm, LogSoftmax, Softmax, embedding,
                               layer_norm, log_softmax, softmax)
from adaref.ops.reductions import Max, Mean, Sum, max, mean, sum
from adaref.ops.selection import Clip, Where, clip, topk_mask, where
from adaref.ops.shape import (AsType, BroadcastTo, Concatenate, Reshape, Stack, Transpose, astype,
                              broadcast_to, concatenate, reshape, stack, transpose)
from adaref.ops.unary import (Abs, Exp, Gelu, Log, Neg, Relu, Sigmoid, Sqrt, Tanh, abs, exp, gelu,
                              log, neg, relu, sigmoid, sqrt, tanh)
from adaref.ops._common import _axes  # noqa: F401  (used by tests of axis handling)
from adaref.tensor import Tensor

__all__ = [
    "Abs", "Add", "AsType", "BroadcastTo", "Clip", "Concatenate", "Div", "EmbeddingLookup", "Exp",
    "Gather", "Gelu", "GetItem", "LayerNorm", "Log", "LogSoftmax", "MatMul", "Max", "Mean", "Mul",
    "Neg", "Pow", "Relu", "Reshape", "ScaledMatMul", "ScatterAdd", "Sigmoid", "Softmax", "Sqrt",
    "Stack", "Sub", "Sum", "Take", "Tanh", "Transpose", "Where",
    "abs", "add", "astype", "broadcast_to", "clip", "concatenate", "div", "embedding", "exp",
    "gather", "gelu", "getitem", "layer_norm", "log", "log_softmax", "matmul", "max", "mean", "mul",
    "neg", "pow", "relu", "reshape", "scaled_matmul", "scatter_add", "sigmoid", "softmax", "sqrt",
    "stack", "sub", "sum", "take", "tanh", "topk_mask", "transpose", "where",
]


def _bind_tensor_methods() -> None:
    """Tensor's operators and methods, each a thin wrapper over the op function above."""
    methods = {
        "__add__": lambda self, other: add(self, other),
        "__radd__": lambda self, other: add(other, self),
        "__sub__": lambda self, other: sub(self, other),
        "__rsub__": lambda self, other: sub(other, self),
        "__mul__": lambda self, other: mul(self, other),
        "__rmul__": lambda self, other: mul(other, self),
        "__truediv__": lambda self, other: div(self, other),
        "__rtruediv__": lambda self, other: div(other, self),
        "__pow__": lambda self, other: pow(self, other),
        "__rpow__": lambda self, other: pow(other, self),
        "__neg__": lambda self: neg(self),
        "__matmul__": lambda self, other: matmul(self, other),
        "__rmatmul__": lambda self, other: matmul(other, self),
        "__getitem__": lambda self, key: getitem(self, key),
        "sum": lambda self, axis=None, keepdims=False: sum(self, axis, keepdims),
        "mean": lambda self, axis=None, keepdims=False: mean(self, axis, keepdims),
        "max": lambda self, axis=None, keepdims=False: max(self, axis, keepdims),
        "reshape": lambda self, *shape: reshape(self, shape[0] if len(shape) == 1 else shape),
        "transpose": lambda self, *axes: transpose(self, axes[0] if len(axes) == 1 else (axes or None)),
        "broadcast_to": lambda self, shape: broadcast_to(self, shape),
        "astype": lambda self, dtype: astype(self, dtype),
        "exp": lambda self: exp(self),
        "log": lambda self: log(self),
        "sqrt": lambda self: sqrt(self),
        "abs": lambda self: abs(self),
        "sigmoid": lambda self: sigmoid(self),
        "tanh": lambda self: tanh(self),
        "relu": lambda self: relu(self),
        "T": property(lambda self: transpose(self, None)),
    }
    for name, method in methods.items():
        if not isinstance(method, property):
            method.__name__ = method.__qualname__ = name
        setattr(Tensor, name, method)


_bind_tensor_methods()
