"""Dense expert, eq. 2 of §3.2.1, and the authors' GatedDense (docs/decisions.md row 4)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from adaref.config import Config, ConfigError
from adaref.experts.base import Expert, act_flops, check_activation, dense, dense_flops
from adaref.experts.fused import hadamard_linear
from adaref.nn.init import glorot_uniform
from adaref.nn.module import Parameter
from adaref import ops
from adaref.tensor import Tensor


@dataclass(frozen=True)
class DenseConfig(Config):
    """Configuration of the Dense expert (docs/decisions.md row 4)."""

    # sigma of eq. 2, a name from adaref.nn.ACTIVATIONS (row 4: ReLU in both presets)
    activation: str = "relu"
    # row 4: "plain" = eq. 2 on the flattened map (paper); "gated" = the authors'
    # GatedDense, sigma(W x + b) * 2 sigmoid(W2 relu(W1 x0 + b1) + b2) (upstream)
    form: Literal["plain", "gated"] = "plain"
    # row 4 / "Other facts" r: the gate's hidden width is max(1, F*D // gate_reduction)
    gate_reduction: int = 16

    def __post_init__(self):
        check_activation("DenseConfig", "activation", self.activation)
        if self.form not in ("plain", "gated"):
            raise ConfigError(f"DenseConfig: form must be 'plain' or 'gated', got {self.form!r}")
        if not isinstance(self.gate_reduction, int) or self.gate_reduction < 1:
            raise ConfigError(f"DenseConfig: gate_reduction must be a positive integer, "
                              f"got {self.gate_reduction!r}")


class Dense(Expert):
    r"""Dense expert (eq. 2): a fully connected layer on the flattened feature map.

    .. math::

        X_l = \sigma(W_l \cdot X_{l-1})                                   \quad (2)

    Decision (row 4, what W acts on), ``form="plain"`` (``paper`` preset): X_{l-1} is
    flattened to x in R^{FD}, and y = sigma(x W + b) is reshaped back to (F, D); W is
    FD x FD and a bias b is added (the paper writes none; every dense layer of the
    authors' code has one).

    ``form="gated"`` (``upstream`` preset; authors' code, moe.py, "GatedDense"):

    .. math::

        y = \sigma(x W + b) \circ 2\,\mathrm{sigmoid}(\mathrm{relu}(x_0 W_1 + b_1) W_2 + b_2)

    with x_0 the flattened X_0; the hidden width is R = max(1, FD // r), r =
    ``gate_reduction`` (16).

    Shapes: x, x0 (B, F, D) -> (B, F, D). Parameters (weights stored (in, out), Glorot
    uniform; biases zero):

    * ``W`` (FD, FD), ``b`` (FD,);
    * gated only: ``W1`` (FD, R), ``b1`` (R,), ``W2`` (R, FD), ``b2`` (FD,).

    FLOPs per example: plain 2(FD)^2 + FD + a(FD), with a(n) = 0 for ``linear``, else
    n; gated adds 2 FD R + 2R (matmul, bias, relu) + 2 R FD + FD (matmul, bias) + 3 FD
    (sigmoid, times 2, Hadamard).

    The matmul is BLAS; bias and ReLU (and their gradients) are one fused kernel pass
    (:func:`adaref.experts.fused.linear_act`).

    >>> import numpy as np, adaref
    >>> expert = Dense(DenseConfig(), num_fields=3, dim=2, rng=np.random.default_rng(0))
    >>> x = adaref.Tensor(np.ones((4, 3, 2)))
    >>> expert(x, x).shape, expert.flops()
    ((4, 3, 2), 84)
    """

    EQUATION = "eq. 2"
    PARAM_LAYOUTS = {"W": "(in F*D, out F*D), both axes field-major (f*D + d)", "b": "(F*D,) field-major",
                     "W1": "(in F*D, out R): gate of the gated form, on vec(X_0)", "b1": "(R,)",
                     "W2": "(in R, out F*D)", "b2": "(F*D,) field-major"}

    name = "dense"

    def __init__(self, config: DenseConfig, num_fields: int, dim: int, *,
                 rng: np.random.Generator, dtype=np.float64):
        super().__init__(config, num_fields, dim, dtype)
        n = self.num_fields * self.dim                                      # FD
        self.W = Parameter(glorot_uniform(rng, n, n, (n, n), self.dtype))   # (FD, FD)
        self.b = Parameter(np.zeros(n, dtype=self.dtype))                   # (FD,)
        self.uses_x0 = config.form == "gated"
        if config.form == "gated":
            r = self.gate_width
            self.W1 = Parameter(glorot_uniform(rng, n, r, (n, r), self.dtype))  # (FD, R)
            self.b1 = Parameter(np.zeros(r, dtype=self.dtype))                  # (R,)
            self.W2 = Parameter(glorot_uniform(rng, r, n, (r, n), self.dtype))  # (R, FD)
            self.b2 = Parameter(np.zeros(n, dtype=self.dtype))                  # (FD,)

    @property
    def gate_width(self) -> int:
        """R, the gate's hidden width (gated form)."""
        return max(1, self.num_fields * self.dim // self.config.gate_reduction)

    def interact(self, x: Tensor, x0: Tensor | None) -> Tensor:
        nb, n = x.shape[0], self.num_fields * self.dim
        flat = ops.reshape(x, (nb, n))                                      # (B, FD)
        if self.config.form == "plain":
            y = dense(flat, self.W, self.b, self.config.activation)         # (B, FD)
        else:
            h = dense(ops.reshape(x0, (nb, n)), self.W1, self.b1, "relu")   # (B, R)
            gate = ops.sigmoid(dense(h, self.W2, self.b2, "linear")) * 2.0  # (B, FD)
            if self.config.activation == "linear":
                y = hadamard_linear(flat, self.W, gate, self.b, "inside")  # (B, FD)
            else:
                y = dense(flat, self.W, self.b, self.config.activation) * gate  # (B, FD)
        return ops.reshape(y, x.shape)                                      # (B, F, D)

    def flops(self) -> int:
        n, act = self.num_fields * self.dim, self.config.activation
        total = dense_flops(n, n, act)                                      # sigma(x W + b)
        if self.config.form == "gated":
            r = self.gate_width
            total += dense_flops(n, r, "relu") + dense_flops(r, n, "linear")
            total += act_flops("sigmoid", n) + 2 * n                        # sigmoid, *2, Hadamard
        return total
