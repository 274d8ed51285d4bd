"""Stochastic gradient descent, optionally with heavy-ball momentum.

Update, per element (Polyak's heavy ball in PyTorch's form, no dampening)::

    momentum = 0:   w <- w - lr * g
    momentum > 0:   b <- momentum * b + g          (b starts at 0, so b_1 = g)
                    w <- w - lr * b

With a :class:`~adaref.tensor.RowSparseGrad` and ``sparse_update="lazy"`` only the
batch's rows of ``w`` and ``b`` change. Without momentum this equals the dense update
exactly (an untouched row has g = 0). With momentum it does not: densely, a row keeps
moving by ``lr * b`` after its last touch while its ``b`` decays; lazily it stops.

>>> import numpy as np
>>> from adaref.nn import Parameter
>>> w = Parameter(np.array([1.0, -2.0]))
>>> opt = SGD([w], lr=0.1, momentum=0.5)
>>> for g in ([1.0, 2.0], [1.0, 0.0]):
...     w.grad = np.array(g)
...     opt.step()
>>> opt.state["b"]["0"]             # b_2 = 0.5 * [1, 2] + [1, 0]
array([1.5, 1. ])
>>> w.data                          # w_2 = [1, -2] - 0.1 * [1, 2] - 0.1 * [1.5, 1]
array([ 0.75, -2.3 ])
"""
from __future__ import annotations

import dataclasses

import numpy as np

from adaref.optim.base import Optimizer, OptimizerConfig, SparseUpdate


@dataclasses.dataclass(frozen=True)
class SGDConfig(OptimizerConfig):
    lr: float = 0.01                       # learning rate
    momentum: float = 0.0                  # heavy-ball coefficient in [0, 1); 0 = plain SGD
    sparse_update: SparseUpdate = "lazy"   # RowSparseGrad: touched rows only, or densify

    def _check(self) -> None:
        self._require(self.lr > 0, "lr", "> 0")
        self._require(0 <= self.momentum < 1, "momentum", "in [0, 1)")


class SGD(Optimizer):
    """SGD with optional momentum; state slot ``b`` (the momentum buffer) if momentum > 0."""

    config_class = SGDConfig

    def slots(self) -> tuple[str, ...]:
        return ("b",) if self.config.momentum else ()

    def rule(self, w: np.ndarray, g: np.ndarray, *b: np.ndarray) -> tuple[np.ndarray, ...]:
        c = self.config
        if not c.momentum:
            return (w - c.lr * g,)
        b_new = c.momentum * b[0] + g
        return w - c.lr * b_new, b_new
