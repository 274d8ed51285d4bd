"""Layer normalisation with learnable gain and bias."""
from __future__ import annotations

import numpy as np

from adaref import ops
from adaref.nn.module import Module, Parameter
from adaref.tensor import ShapeError, Tensor


class LayerNorm(Module):
    """y = gain * (x - mean) / sqrt(var + eps) + bias over the last axis (size ``dim``).

    In AdaEnsemble (docs/decisions.md row 15) the last axis is D: each field's vector is
    normalised on its own. ``gain`` (dim,) starts at 1, ``bias`` (dim,) at 0.

    >>> ln = LayerNorm(4)
    >>> y = ln(Tensor(np.arange(8.0).reshape(2, 4)))
    >>> np.allclose(y.data.mean(axis=-1), 0) and np.allclose(y.data.var(axis=-1), 1, atol=1e-4)
    True
    """

    PARAM_LAYOUTS = {"gain": "(D,) multiplies the normalised values", "bias": "(D,) added after the gain"}

    def __init__(self, dim: int, *, eps: float = 1e-5, dtype=np.float64):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.gain = Parameter(np.ones(dim, dtype=dtype))
        self.bias = Parameter(np.zeros(dim, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.dim:
            raise ShapeError(f"LayerNorm: last axis of input shape {x.shape} is not {self.dim}")
        return ops.layer_norm(x, self.eps, self.gain, self.bias)                # (..., D)
