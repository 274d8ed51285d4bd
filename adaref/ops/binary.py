"""Elementwise binary ops (broadcasting) and matrix multiplication.
"""
from __future__ import annotations

import numpy as np

from adaref.tensor import Function, ShapeError, Tensor
from adaref.ops._common import _lift, _pair


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
