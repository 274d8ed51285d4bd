"""Polynomial interaction (PIN) expert, eq. 5 of §3.2.4 (xDeepInt), docs/decisions.md row 7."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adaref import ops
from adaref.config import Config, ConfigError
from adaref.experts.base import Expert
from adaref.experts.fused import hadamard_linear
from adaref.nn.init import glorot_uniform
from adaref.nn.module import Parameter
from adaref.tensor import Tensor


@dataclass(frozen=True)
class PINConfig(Config):
    """Configuration of the PIN expert (docs/decisions.md row 7)."""

    # H, xDeepInt's number of subspaces per field: each field's D vector is cut into H
    # pieces of D/H, and W mixes the F*H pieces. None = D ("bit-wise", W is FD x FD;
    # both presets); 1 = "vector-wise" (W is F x F). Must divide D.
    subspaces: int | None = None

    def __post_init__(self):
        if self.subspaces is not None and (not isinstance(self.subspaces, int)
                                           or self.subspaces < 1):
            raise ConfigError(f"PINConfig: subspaces must be a positive integer or None, "
                              f"got {self.subspaces!r}")


class PIN(Expert):
    r"""Polynomial interaction expert (eq. 5, the xDeepInt PIN layer without its residual).

    .. math::

        X_l = X_{l-1} \circ (W_l \cdot X_0)                                \quad (5)

    Decision (row 7, the shape of W), option ``subspaces`` = H (xDeepInt's subspace
    crossing): split every field's D-vector into H pieces of size s = D/H, giving
    FH pieces; W in R^{FH x FH} mixes whole pieces:

    .. math::

        Z[b, i, :] = \sum_j W[j, i]\, X_0'[b, j, :], \qquad
        X_l' = X_{l-1}' \circ Z                  (X' = X reshaped to (B, FH, s))

    (W stored (in, out): row j is the input piece, column i the output piece.)

    * ``subspaces=None`` (= D, "bit-wise"; ``paper`` and ``upstream`` presets): s = 1,
      W is FD x FD, and eq. 5 is x * (x0 W) on the flattened maps, exactly the
      authors' code (moe.py);
    * ``subspaces=1`` ("vector-wise"): W is F x F and acts on whole field vectors.

    No bias (row 7, both presets). Shapes: x, x0 (B, F, D) -> (B, F, D). Parameter
    ``W`` (FH, FH), Glorot uniform.

    FLOPs per example: 2 (FH)^2 s (the matmul, s columns) + FD (Hadamard)
    = 2 F^2 H D + F D.

    The matmul is BLAS; the Hadamard product and its gradients are one fused kernel
    pass (:func:`adaref.experts.fused.hadamard_linear`).

    >>> import numpy as np, adaref
    >>> expert = PIN(PINConfig(subspaces=1), num_fields=3, dim=2, rng=np.random.default_rng(0))
    >>> x = adaref.Tensor(np.ones((4, 3, 2)))
    >>> expert(x, x).shape, expert.W.shape, expert.flops()
    ((4, 3, 2), (3, 3), 42)
    """

    EQUATION = "eq. 5"
    PARAM_LAYOUTS = {"W": "(in F*H, out F*H): Z = X_0 pieces @ W, pieces field-major (f*H + h)"}

    name = "pin"
    uses_x0 = True

    def __init__(self, config: PINConfig, num_fields: int, dim: int, *,
                 rng: np.random.Generator, dtype=np.float64):
        super().__init__(config, num_fields, dim, dtype)
        h = self.dim if config.subspaces is None else config.subspaces
        if self.dim % h:
            raise ConfigError(f"PIN expert: subspaces H={h} does not divide the embedding "
                              f"dim D={self.dim}")
        self.subspaces, self.piece = h, self.dim // h                          # H, s
        n = self.num_fields * h                                                # FH
        self.W = Parameter(glorot_uniform(rng, n, n, (n, n), self.dtype))      # (FH, FH)

    def interact(self, x: Tensor, x0: Tensor | None) -> Tensor:
        nb, n, s = x.shape[0], self.num_fields * self.subspaces, self.piece
        if s == 1:                                                             # bit-wise
            y = hadamard_linear(ops.reshape(x0, (nb, n)), self.W,
                                ops.reshape(x, (nb, n)))                       # (B, FD)
            return ops.reshape(y, x.shape)                                     # (B, F, D)
        a = ops.transpose(ops.reshape(x0, (nb, n, s)), (0, 2, 1))              # (B, s, FH)
        u = ops.transpose(ops.reshape(x, (nb, n, s)), (0, 2, 1))               # (B, s, FH)
        y = hadamard_linear(a, self.W, u)                                      # (B, s, FH)
        return ops.reshape(ops.transpose(y, (0, 2, 1)), x.shape)               # (B, F, D)

    def flops(self) -> int:
        n = self.num_fields * self.subspaces
        return 2 * n * n * self.piece + self.num_fields * self.dim
