"""Fully connected layer."""
from __future__ import annotations

import numpy as np

from adaref import ops
from adaref.nn.init import glorot_uniform
from adaref.nn.module import Module, Parameter
from adaref.tensor import ShapeError, Tensor


class Linear(Module):
    """y = x W + b over the last axis.

    Shapes: x (..., in_features) -> y (..., out_features).
    Parameters: ``weight`` (in_features, out_features), Glorot-uniform;
    ``bias`` (out_features,), zeros (absent if ``bias=False``).
    Note the layout: ``weight`` is stored (in, out) as in TensorFlow/Keras (PyTorch
    stores its transpose); a port from PyTorch loads ``weight.T``.

    >>> layer = Linear(4, 2, rng=np.random.default_rng(0))
    >>> layer(Tensor(np.ones((3, 4)))).shape
    (3, 2)
    """

    #: parameter -> layout (read by :func:`adaref.crosscheck.spec`)
    PARAM_LAYOUTS = {"weight": "(in, out): y = x @ weight + bias (PyTorch stores the transpose)",
                     "bias": "(out,)"}

    def __init__(self, in_features: int, out_features: int, *, rng: np.random.Generator,
                 bias: bool = True, dtype=np.float64):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(glorot_uniform(rng, in_features, out_features,
                                               (in_features, out_features), dtype))
        self.bias = Parameter(np.zeros(out_features, dtype=dtype)) if bias else None

    def forward(self, x: Tensor, scale: np.ndarray | None = None) -> Tensor:
        """y = x W + b; with ``scale`` (a constant of x's shape, x 2-D), y = (x * scale) W + b
        without keeping the product x * scale for the backward pass
        (:func:`~adaref.ops.scaled_matmul`; bit-identical to scaling x first)."""
        if x.shape[-1] != self.in_features:
            raise ShapeError(f"Linear: input has {x.shape[-1]} features (shape {x.shape}), "
                             f"expected {self.in_features}")
        if scale is not None:
            y = ops.scaled_matmul(x, self.weight, scale)    # (B, out)
        else:
            y = ops.matmul(x, self.weight)                  # (..., out)
        return y + self.bias if self.bias is not None else y
