"""Cross expert, eq. 6 of §3.2.5 (DCN), docs/decisions.md row 8."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from adaref import ops
from adaref.config import Config, ConfigError
from adaref.experts.base import Expert
from adaref.experts.fused import hadamard_linear
from adaref.nn.init import glorot_uniform
from adaref.nn.module import Parameter
from adaref.tensor import Tensor


@dataclass(frozen=True)
class CrossConfig(Config):
    """Configuration of the Cross expert (docs/decisions.md row 8)."""

    # row 8: "outside" = X_0 * (W X_{l-1}) + b as eq. 6 writes it (paper);
    # "inside" = X_0 * (W X_{l-1} + b), the DCN-V2 form (upstream)
    bias: Literal["outside", "inside"] = "outside"

    def __post_init__(self):
        if self.bias not in ("outside", "inside"):
            raise ConfigError(f"CrossConfig: bias must be 'outside' or 'inside', got {self.bias!r}")


class Cross(Expert):
    r"""Cross expert (eq. 6, a DCN cross layer without its residual).

    .. math::

        X_l = X_0 \circ (W_l \cdot X_{l-1}) + b_l                          \quad (6)

    Decision (row 8, flattened or field-wise): flattened. x = X_{l-1} and x0 = X_0 are
    flattened to FD, W is FD x FD (every bit of every field crosses every other).

    Decision (row 8, bias in or out), option ``bias``:

    * ``"outside"`` (``paper`` preset): y = x0 * (x W) + b, as eq. 6 writes it;
    * ``"inside"`` (``upstream`` preset; authors' code, moe.py, and DCN-V2):
      y = x0 * (x W + b).

    The two differ by exactly b * (1 - x0) for the same W and b.

    Shapes: x, x0 (B, F, D) -> (B, F, D). Parameters: ``W`` (FD, FD) stored (in, out),
    Glorot uniform; ``b`` (FD,), zeros.

    FLOPs per example: 2 (FD)^2 (matmul) + FD (Hadamard) + FD (bias), either form.

    The matmul is BLAS; bias, Hadamard product and their gradients are one fused kernel
    pass (:func:`adaref.experts.fused.hadamard_linear`).

    >>> import numpy as np, adaref
    >>> expert = Cross(CrossConfig(bias="inside"), 3, 2, rng=np.random.default_rng(0))
    >>> x = adaref.Tensor(np.ones((4, 3, 2)))
    >>> expert(x, x).shape, expert.flops()
    ((4, 3, 2), 84)
    """

    EQUATION = "eq. 6"
    PARAM_LAYOUTS = {"W": "(in F*D, out F*D): W x_{l-1} computed as x @ W, field-major",
                     "b": "(F*D,) field-major"}

    name = "cross"
    uses_x0 = True

    def __init__(self, config: CrossConfig, num_fields: int, dim: int, *,
                 rng: np.random.Generator, dtype=np.float64):
        super().__init__(config, num_fields, dim, dtype)
        n = self.num_fields * self.dim                                         # FD
        self.W = Parameter(glorot_uniform(rng, n, n, (n, n), self.dtype))      # (FD, FD)
        self.b = Parameter(np.zeros(n, dtype=self.dtype))                      # (FD,)

    def interact(self, x: Tensor, x0: Tensor | None) -> Tensor:
        nb, n = x.shape[0], self.num_fields * self.dim
        y = hadamard_linear(ops.reshape(x, (nb, n)), self.W, ops.reshape(x0, (nb, n)),
                            self.b, self.config.bias)                          # (B, FD)
        return ops.reshape(y, x.shape)                                         # (B, F, D)

    def flops(self) -> int:
        n = self.num_fields * self.dim
        return 2 * n * n + 2 * n
