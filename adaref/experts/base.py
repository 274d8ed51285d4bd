"""The expert interface shared by the five feature-interaction experts of §3.2, and the
FLOP-counting convention they all follow.

An expert maps the layer input X_{l-1} (B, F, D), and X_0 (B, F, D) where its equation
uses it, to an output X_l of the same shape (B, F, D). The SparseMoE layer calls
``expert(x, x0)`` on the examples routed to it.

FLOP convention (docs/decisions.md row 24), forward pass, **per example**:

* a multiply-add counts 2: a product (n x k) @ (k x m) is 2 n k m, a dot product of
  length k is 2 k (accumulated from zero);
* every other scalar arithmetic operation counts 1: add, subtract, multiply, divide,
  a comparison (relu, max), exp, sqrt, and one evaluation of an activation function
  (relu, gelu, sigmoid, tanh each count 1 per element; ``linear`` counts 0);
* a sum of n terms counts n (accumulated from zero, like the dot product); a maximum
  of n terms counts n - 1 comparisons;
* softmax over n entries counts 5n - 1: max (n - 1), subtract (n), exp (n), sum (n),
  divide (n);
* normalisation of n values (instance norm) counts 5n + 4 plus 2n for gain and
  bias: mean (n + 1), centre (n), variance (2n + 1), + eps and sqrt (2), divide (n);
* reshapes, transposes, flattening, zero padding and copies count 0; a convolution
  counts its full windows, padding zeros included (as it computes them).

Each expert's ``flops()`` gives its formula in its docstring;
``tests/test_experts_flops.py`` checks every formula against an independent scalar
loop that computes the expert's output and counts its operations one by one.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from adaref import ops
from adaref.config import ConfigError
from adaref.experts.fused import FUSED_ACTIVATIONS, linear_act
from adaref.nn.activations import ACTIVATIONS, activation
from adaref.nn.module import Module
from adaref.tensor import DTypeError, ShapeError, Tensor


class Expert(Module):
    """Base class: ``forward(x, x0)`` checks shapes and dtype, then calls ``interact``.

    Subclasses set ``name`` (the key in :data:`adaref.experts.EXPERTS`), ``uses_x0``,
    and define ``interact(x, x0) -> Tensor`` and ``flops() -> int``. Constructors take
    ``(config, num_fields, dim, *, rng, dtype)``.
    """

    name: ClassVar[str] = "expert"
    uses_x0: ClassVar[bool] = False

    def __init__(self, config, num_fields: int, dim: int, dtype=np.float64):
        super().__init__()
        if int(num_fields) != num_fields or num_fields < 1 or int(dim) != dim or dim < 1:
            raise ValueError(f"{type(self).__name__} expert: num_fields and dim must be positive "
                             f"integers, got F={num_fields}, D={dim}")
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise DTypeError(f"{type(self).__name__} expert: dtype must be float32 or float64, "
                             f"got {dtype}")
        self.config, self.num_fields, self.dim, self.dtype = config, int(num_fields), int(dim), dtype

    def forward(self, x: Tensor, x0: Tensor | None = None) -> Tensor:
        """X_l (B, F, D) from x = X_{l-1} (B, F, D) and x0 = X_0 (B, F, D)."""
        expected = f"(B, {self.num_fields}, {self.dim})"
        for label, t in (("x (X_{l-1})", x), ("x0 (X_0)", x0)):
            if t is None:
                if label.startswith("x0") and self.uses_x0:
                    raise ShapeError(f"{type(self).__name__} expert: needs x0 (X_0), got None")
                continue
            if not isinstance(t, Tensor):
                raise TypeError(f"{type(self).__name__} expert: {label} must be a Tensor, "
                                f"got {type(t).__name__}")
            if t.ndim != 3 or t.shape[1:] != (self.num_fields, self.dim):
                raise ShapeError(f"{type(self).__name__} expert: {label} has shape {t.shape}, "
                                 f"expected {expected}")
            if t.dtype != self.dtype:
                raise DTypeError(f"{type(self).__name__} expert: {label} is {t.dtype} but the "
                                 f"expert's parameters are {self.dtype}")
        if x0 is not None and x0.shape != x.shape:
            raise ShapeError(f"{type(self).__name__} expert: x {x.shape} and x0 {x0.shape} "
                             f"differ in batch size")
        y = self.interact(x, x0)
        assert y.shape == x.shape, (type(self).__name__, y.shape, x.shape)
        return y

    def interact(self, x: Tensor, x0: Tensor | None) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__}.interact")

    def flops(self) -> int:
        """Forward FLOPs per example (see the module docstring for the convention)."""
        raise NotImplementedError(f"{type(self).__name__}.flops")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(F={self.num_fields}, D={self.dim}, "
                f"{self.config!r})")


# ---------------------------------------------------------------------------------
# Helpers shared by the experts
# ---------------------------------------------------------------------------------
def check_activation(owner: str, key: str, name: str) -> None:
    """Raise a ConfigError naming the config key for an unknown activation."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"{owner}: {key}={name!r} is not an activation; choose one of "
                          f"{', '.join(ACTIVATIONS)}")


def dense(a: Tensor, W: Tensor, b: Tensor, act: str) -> Tensor:
    """act(a @ W + b): fused (one kernel pass after the BLAS matmul) for linear and
    relu; other activations are applied by their core op after the fused affine map."""
    if act in FUSED_ACTIVATIONS:
        return linear_act(a, W, b, act)
    return activation(act)(linear_act(a, W, b, "linear"))


def act_flops(act: str, n: int) -> int:
    """FLOPs of one activation over n elements: 0 for ``linear``, else n."""
    return 0 if act == "linear" else n


def dense_flops(n_in: int, n_out: int, act: str, rows: int = 1) -> int:
    """FLOPs of ``rows`` applications of act(a W + b), W (n_in, n_out)."""
    return rows * (2 * n_in * n_out + n_out + act_flops(act, n_out))


def instance_norm(x: Tensor, gain: Tensor, bias: Tensor, eps: float) -> Tensor:
    """Normalise each channel of x (B, F, C) over the F fields, then gain and bias (C,)."""
    xt = ops.transpose(x, (0, 2, 1))                                 # (B, C, F)
    y = ops.transpose(ops.layer_norm(xt, eps), (0, 2, 1))            # (B, F, C)
    return y * gain + bias                                           # (B, F, C)


def instance_norm_flops(n: int, channels: int) -> int:
    """Per example: ``channels`` normalisations over n values, with gain and bias."""
    return channels * (7 * n + 4)
