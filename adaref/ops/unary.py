"""Elementwise unary ops and activations.
"""
from __future__ import annotations

import numpy as np
from scipy.special import erf

from adaref.tensor import Function, Tensor
from adaref.ops._common import _lift

_SQRT_2 = np.sqrt(2.0)
_SQRT_2PI = np.sqrt(2.0 * np.pi)


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
