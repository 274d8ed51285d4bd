"""The estimator of each layer (§3.4, eq. 17; docs/decisions.md row 17)."""
from __future__ import annotations

import numpy as np

from adaref.nn import Linear, Module
from adaref.tensor import ShapeError, Tensor


class Estimator(Module):
    """logit = W_l vec(X_l) + b_l, and y_hat = sigmoid(logit) (eq. 17).

    Decision (row 17): eq. 17 writes W_l in R^{1 x F}, which cannot map the (F, D) map
    to a scalar; adaref flattens X_l to F*D and uses ``linear.weight`` (F*D, 1) and
    ``linear.bias`` (1,) (the authors' code does the same). Returns the logit (B,); the
    sigmoid is applied by the caller (the loss uses the logit for stability).

    >>> est = Estimator(6, rng=np.random.default_rng(0))
    >>> est(Tensor(np.ones((4, 3, 2)))).shape
    (4,)
    """

    EQUATION = "eq. 17"

    def __init__(self, in_features: int, *, rng: np.random.Generator, dtype=np.float64):
        super().__init__()
        self.in_features = in_features
        self.linear = Linear(in_features, 1, rng=rng, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 3 or x.shape[1] * x.shape[2] != self.in_features:
            raise ShapeError(f"Estimator: input must be (B, F, D) with F*D = {self.in_features}, "
                             f"got {x.shape}")
        return self.linear(x.reshape(x.shape[0], self.in_features)).reshape(x.shape[0])   # (B,)

    def flops(self) -> int:
        """2 F*D (the dot product) + 1 (bias) + 1 (the sigmoid, one activation evaluation),
        in the convention of :mod:`adaref.experts.base`."""
        return 2 * self.in_features + 2
