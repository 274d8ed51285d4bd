"""Convolution expert, eq. 3 of §3.2.2, docs/decisions.md row 5."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from adaref import ops
from adaref.config import Config, ConfigError
from adaref.experts.base import Expert, act_flops, check_activation, dense, dense_flops
from adaref.experts.fused import FUSED_ACTIVATIONS, conv1d_act, maxpool1d
from adaref.nn.activations import activation
from adaref.nn.init import glorot_uniform
from adaref.nn.module import Parameter
from adaref.tensor import Tensor


@dataclass(frozen=True)
class ConvConfig(Config):
    """Configuration of the convolution expert (docs/decisions.md row 5)."""

    # row 5, the Reshape of eq. 3: "fields" = the F fields are the sequence positions
    # and the D embedding entries the input channels (paper); "dense" = a linear Dense
    # FD -> `length` first, read as a 1-channel sequence (upstream)
    reshape: Literal["fields", "dense"] = "fields"
    # row 5: sequence length of the "dense" reshape; None = F // 2 (19 at F = 38, 39),
    # raised for small F to the least length the convolution and pooling need
    length: int | None = None
    # row 5: number of Conv1D filters (output channels)
    filters: int = 16
    # row 5: Conv1D kernel width K (paper: open, 3 chosen; upstream 4)
    width: int = 3
    # row 5: "same" = zero padding keeping the length, (K-1)//2 on the left and the
    # rest on the right, as TensorFlow (paper); "valid" = no padding (upstream)
    padding: Literal["same", "valid"] = "same"
    # row 5: the Conv1D activation (paper relu; upstream linear)
    activation: str = "relu"
    # row 5: max-pooling window = stride along the sequence, remainder dropped (both 2)
    pool: int = 2
    # row 5: activation of the final Dense of eq. 3 (both presets: linear)
    out_activation: str = "linear"

    def __post_init__(self):
        if self.reshape not in ("fields", "dense"):
            raise ConfigError(f"ConvConfig: reshape must be 'fields' or 'dense', got {self.reshape!r}")
        if self.padding not in ("same", "valid"):
            raise ConfigError(f"ConvConfig: padding must be 'same' or 'valid', got {self.padding!r}")
        for key in ("filters", "width", "pool") + (("length",) if self.length is not None else ()):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"ConvConfig: {key} must be a positive integer, got {value!r}")
        check_activation("ConvConfig", "activation", self.activation)
        check_activation("ConvConfig", "out_activation", self.out_activation)


class Conv(Expert):
    r"""Convolution expert (eq. 3).

    .. math::

        X_l = \mathrm{Dense}(\mathrm{Pooling}(\mathrm{Conv1D}(\mathrm{Reshape}(X_{l-1}))))
        \quad (3)

    Decisions (row 5), each a ``ConvConfig`` option:

    * Reshape, ``reshape="fields"`` (``paper``): X_{l-1} (B, F, D) is read as a
      sequence of L = F positions with C = D channels. ``reshape="dense"``
      (``upstream``; authors' code, moe.py): r = flatten(X) W_r + b_r, a linear Dense
      FD -> L = ``length`` (default F // 2, or for small F the least length that
      convolution and pooling need, K + p - 1 if "valid"), read as L positions with
      C = 1 channel.
    * Conv1D: ``filters`` O, kernel width K = ``width``, ``padding`` "same" (T = L,
      (K-1)//2 zeros on the left) or "valid" (T = L - K + 1), bias, ``activation``:

      .. math:: y[t, o] = \mathrm{act}(\sum_{j<K,\,c<C} x[t + j - \mathrm{pad}, c]\, W_c[j, c, o] + b_c[o])

    * Pooling: max over non-overlapping windows of ``pool`` = p positions, T_p = T // p
      (remainder dropped; ties: the first position gets the gradient).
    * Dense: flatten (T_p O) and X_l = out_act(. W_o + b_o) reshaped to (F, D).

    ``paper`` preset: fields, 16 filters, width 3, same, relu, pool 2, linear out.
    ``upstream`` preset: dense to F // 2, 16 filters, width 4, valid, linear, pool 2:
    at F = 38, D = 16 the shapes are 608 -> 19 x 1 -> 16 x 16 -> 8 x 16 -> 128 -> 608.

    Shapes: x (B, F, D) -> (B, F, D) (x0 is not used). Parameters (weights Glorot
    uniform with Keras' fans, biases zero):

    * ``reshape="dense"`` only: ``Wr`` (FD, L), ``br`` (L,);
    * ``Wc`` (K, C, O), ``bc`` (O,);
    * ``Wo`` (T_p O, FD), ``bo`` (FD,).

    FLOPs per example: [dense reshape: 2 FD L + L] + T O (2 K C + 1) + a(T O)
    + T_p O (p - 1) + 2 T_p O FD + FD + a_out(FD), with a(n) = 0 for linear, else n
    (full windows counted, padding zeros included).

    The products by Wr, Wc (after im2col) and Wo are BLAS; im2col/col2im, bias,
    activation and pooling are kernels (:mod:`adaref.kernels.conv`).

    >>> import numpy as np, adaref
    >>> expert = Conv(ConvConfig(filters=2), num_fields=4, dim=3, rng=np.random.default_rng(0))
    >>> expert(adaref.Tensor(np.ones((5, 4, 3)))).shape, expert.Wc.shape, expert.Wo.shape
    ((5, 4, 3), (3, 3, 2), (4, 12))
    """

    EQUATION = "eq. 3"
    PARAM_LAYOUTS = {"Wr": "(in F*D, out L): the dense reshape to L positions", "br": "(L,)",
                     "Wc": "(K, C, O): width, in channels, filters (Keras Conv1D; PyTorch (O, C, K))",
                     "bc": "(O,)",
                     "Wo": "(in T_p*O, out F*D): input time-major (t*O + o, Keras Flatten of (T_p, O))",
                     "bo": "(F*D,) field-major"}

    name = "conv"

    def __init__(self, config: ConvConfig, num_fields: int, dim: int, *,
                 rng: np.random.Generator, dtype=np.float64):
        super().__init__(config, num_fields, dim, dtype)
        c = config
        n = self.num_fields * self.dim                                         # FD
        if c.reshape == "fields":
            self.length, self.channels = self.num_fields, self.dim             # L, C
        else:
            # F // 2 as the authors; raised for small F to the shortest sequence that
            # a width-K convolution and one pooling window fit: K + p - 1 ("valid")
            least = c.width + c.pool - 1 if c.padding == "valid" else c.pool
            self.length = c.length if c.length is not None else max(self.num_fields // 2, least)
            self.channels = 1
        k = c.width
        self.pad = ((k - 1) // 2, k - 1 - (k - 1) // 2) if c.padding == "same" else (0, 0)
        self.steps = self.length + sum(self.pad) - k + 1                       # T
        self.pooled = self.steps // c.pool if self.steps >= 1 else 0           # T_p
        if self.pooled < 1:
            raise ConfigError(f"Conv expert: a sequence of {self.length} positions gives "
                              f"{self.steps} after a width-{k} {c.padding!r} convolution, "
                              f"too short for pool={c.pool}")
        if c.reshape == "dense":
            self.Wr = Parameter(glorot_uniform(rng, n, self.length, (n, self.length),
                                               self.dtype))                    # (FD, L)
            self.br = Parameter(np.zeros(self.length, dtype=self.dtype))       # (L,)
        self.Wc = Parameter(glorot_uniform(rng, k * self.channels, k * c.filters,
                                           (k, self.channels, c.filters), self.dtype))  # (K, C, O)
        self.bc = Parameter(np.zeros(c.filters, dtype=self.dtype))             # (O,)
        m = self.pooled * c.filters                                            # T_p O
        self.Wo = Parameter(glorot_uniform(rng, m, n, (m, n), self.dtype))     # (T_p O, FD)
        self.bo = Parameter(np.zeros(n, dtype=self.dtype))                     # (FD,)

    def interact(self, x: Tensor, x0: Tensor | None) -> Tensor:
        c, nb = self.config, x.shape[0]
        if c.reshape == "fields":
            seq = x                                                            # (B, L=F, C=D)
        else:
            r = dense(ops.reshape(x, (nb, self.num_fields * self.dim)), self.Wr, self.br,
                      "linear")                                                # (B, L)
            seq = ops.reshape(r, (nb, self.length, 1))                         # (B, L, 1)
        fused = c.activation in FUSED_ACTIVATIONS
        h = conv1d_act(seq, self.Wc, self.bc, self.pad,
                       c.activation if fused else "linear")                    # (B, T, O)
        if not fused:
            h = activation(c.activation)(h)
        p = maxpool1d(h, c.pool)                                               # (B, T_p, O)
        flat = ops.reshape(p, (nb, self.pooled * c.filters))                   # (B, T_p O)
        y = dense(flat, self.Wo, self.bo, c.out_activation)                    # (B, FD)
        return ops.reshape(y, x.shape)                                         # (B, F, D)

    def flops(self) -> int:
        c, n = self.config, self.num_fields * self.dim
        total = dense_flops(n, self.length, "linear") if c.reshape == "dense" else 0
        conv_out = self.steps * c.filters                                      # T O
        total += conv_out * (2 * c.width * self.channels + 1) + act_flops(c.activation, conv_out)
        total += self.pooled * c.filters * (c.pool - 1)                        # comparisons
        total += dense_flops(self.pooled * c.filters, n, c.out_activation)
        return total
