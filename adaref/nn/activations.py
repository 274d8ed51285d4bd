"""Activation modules, and :func:`activation` to pick one by its config name."""
from __future__ import annotations

from typing import Callable

from adaref import ops
from adaref.nn.module import Module
from adaref.tensor import Tensor

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": ops.relu,
    "gelu": ops.gelu,                                   # exact (erf) GELU
    "gelu_tanh": lambda x: ops.gelu(x, approximate=True),
    "sigmoid": ops.sigmoid,
    "tanh": ops.tanh,
    "linear": lambda x: x,
}


class Activation(Module):
    """An elementwise activation chosen by name: one of :data:`ACTIVATIONS`.

    >>> import numpy as np
    >>> Activation("relu")(Tensor(np.array([-1.0, 2.0]))).data
    array([0., 2.])
    """

    def __init__(self, name: str):
        super().__init__()
        self.fn = activation(name)
        self.name = name

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


def activation(name: str) -> Callable[[Tensor], Tensor]:
    """The activation function called ``name``; a clear error for an unknown name."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of "
                         f"{', '.join(ACTIVATIONS)}") from None
