"""The fully connected tower ("DNN", "deep part") of DNN, Wide & Deep, DeepFM, DCN,
DCN-V2, PNN, xDeepFM, FiBiNET and AutoInt+."""
from __future__ import annotations

import numpy as np

from adaref.experts.base import dense, dense_flops
from adaref.nn import Linear, Module, ModuleList
from adaref.tensor import Tensor


class MLP(Module):
    r"""h_k = act(h_{k-1} W_k + b_k) for k = 1..K, h_0 the input.

    .. math::

        a^{(k)} = \sigma\big(W^{(k)} a^{(k-1)} + b^{(k)}\big), \qquad k = 1, \ldots, K

    ``units`` (u_1, ..., u_K) are the layer widths (K = 0: the identity). Every layer has
    the same activation (``relu`` in every baseline, as in the papers). No dropout or
    batch norm (determinism; the papers' regularisation is left to the trainer's L2).
    Parameters: ``layers.k.weight`` (u_{k-1}, u_k) Glorot uniform, ``layers.k.bias``
    (u_k,) zeros (:class:`adaref.nn.Linear`); the affine map and ReLU run as one fused op
    (:func:`adaref.experts.base.dense`).

    Shapes: (B, u_0) -> (B, u_K). FLOPs per example: sum_k 2 u_{k-1} u_k + u_k + a(u_k),
    a(n) = n (0 for ``linear``).

    >>> mlp = MLP(6, (4, 3), "relu", rng=np.random.default_rng(0))
    >>> mlp(Tensor(np.ones((2, 6)))).shape, mlp.out_features, mlp.flops()
    ((2, 3), 3, 86)
    """

    def __init__(self, in_features: int, units: tuple[int, ...], activation: str = "relu", *,
                 rng: np.random.Generator, dtype=np.float64):
        super().__init__()
        self.in_features, self.units, self.activation = in_features, tuple(units), activation
        widths = (in_features,) + self.units
        self.layers = ModuleList([Linear(widths[k], widths[k + 1], rng=rng, dtype=dtype)
                                  for k in range(len(self.units))])

    @property
    def out_features(self) -> int:
        return self.units[-1] if self.units else self.in_features

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = dense(x, layer.weight, layer.bias, self.activation)           # (B, u_k)
        return x

    def flops(self) -> int:
        widths = (self.in_features,) + self.units
        return sum(dense_flops(widths[k], widths[k + 1], self.activation)
                   for k in range(len(self.units)))
