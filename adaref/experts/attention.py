"""Multi-head self-attention expert, eq. 4 of §3.2.3, docs/decisions.md row 6."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from adaref import ops
from adaref.config import Config, ConfigError
from adaref.experts.base import (Expert, check_activation, dense, dense_flops, instance_norm,
                                 instance_norm_flops)
from adaref.experts.fused import FUSED_ACTIVATIONS, attention, projected_attention
from adaref.nn.init import glorot_uniform
from adaref.nn.module import Parameter
from adaref.tensor import Tensor


@dataclass(frozen=True)
class MHSAConfig(Config):
    """Configuration of the multi-head self-attention expert (docs/decisions.md row 6)."""

    # row 6: number of heads h (paper: open, 2 chosen; upstream 4)
    heads: int = 2
    # row 6: size dh of each head; None = max(1, D // heads), so h dh = D whenever
    # heads divides D (paper); upstream 2
    head_size: int | None = None
    # row 6: activation of the Q, K, V projections (paper linear; upstream gelu)
    qkv_activation: str = "linear"
    # row 6: width P of the per-token output Dense; None = D (paper: back to D);
    # upstream 8
    out_size: int | None = None
    # row 6: activation of the per-token output Dense (paper linear; upstream gelu)
    out_activation: str = "linear"
    # row 6: "none" (paper) or "instance" = normalise each of the P channels over the
    # F fields, learnable gain/bias per channel (upstream's InstanceNorm)
    norm: Literal["none", "instance"] = "none"
    # row 6: epsilon of the instance norm (TF Addons' InstanceNormalization default 1e-3)
    norm_eps: float = 1e-3
    # row 6: "token" = the per-token Dense output is X_l (needs P = D; paper);
    # "flatten" = flatten (F P) and a linear Dense to FD (upstream)
    readout: Literal["token", "flatten"] = "token"

    def __post_init__(self):
        for key in ("heads",) + tuple(k for k in ("head_size", "out_size")
                                      if getattr(self, k) is not None):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"MHSAConfig: {key} must be a positive integer, got {value!r}")
        check_activation("MHSAConfig", "qkv_activation", self.qkv_activation)
        check_activation("MHSAConfig", "out_activation", self.out_activation)
        if self.norm not in ("none", "instance"):
            raise ConfigError(f"MHSAConfig: norm must be 'none' or 'instance', got {self.norm!r}")
        if self.readout not in ("token", "flatten"):
            raise ConfigError(f"MHSAConfig: readout must be 'token' or 'flatten', got {self.readout!r}")
        if not self.norm_eps > 0:
            raise ConfigError(f"MHSAConfig: norm_eps must be > 0, got {self.norm_eps!r}")


class MHSA(Expert):
    r"""Multi-head self-attention expert (eq. 4), fields as tokens.

    .. math::

        X_l = \mathrm{Dense}(\mathrm{MultiHeadSelfAttention}(\mathrm{Reshape}(X_{l-1})))
        \quad (4)

    Decision (row 6, tokens): the F fields are the tokens, each of size D (Reshape is
    the identity). For each head k < h (``heads``) of size dh (``head_size``):

    .. math::

        Q = \mathrm{act}_{qkv}(X W_q + b_q),\ K = \ldots,\ V = \ldots \quad (F, h\,d_h)

        O_k = \mathrm{softmax}(Q_k K_k^T / \sqrt{d_h})\, V_k,\qquad
        O = [O_1, \ldots, O_h] \quad (F, h\,d_h)

    Decision (row 6, projection), options ``out_size`` P, ``out_activation``,
    ``norm`` and ``readout``: Z = out_act(O W_o + b_o) per token (F, P); then
    ``norm="instance"`` normalises each channel over the F fields (gain, bias);
    ``readout="token"`` returns Z (P = D), ``readout="flatten"`` returns
    flatten(Z) W_f + b_f reshaped to (F, D).

    ``paper`` preset: h = 2, dh = D / 2 (max(1, D // 2) for odd D; the per-token
    Dense maps h dh back to D either way), linear Q/K/V, Dense per token back to D,
    no norm. ``upstream`` (authors' code, moe.py): h = 4, dh = 2, gelu Q/K/V, Dense(8,
    gelu) per token, instance norm over fields, flatten, Dense -> FD.

    Shapes: x (B, F, D) -> (B, F, D) (x0 is not used). Parameters (weights Glorot
    uniform, biases zero; A = h dh):

    * ``Wq``, ``Wk``, ``Wv`` (D, A); ``bq``, ``bk``, ``bv`` (A,);
    * ``Wo`` (A, P), ``bo`` (P,);
    * ``norm="instance"``: ``gamma`` (P,) ones, ``beta`` (P,) zeros;
    * ``readout="flatten"``: ``Wf`` (F P, FD), ``bf`` (FD,).

    FLOPs per example (a(n) = 0 for linear, else n):
    3 F (2 D A + A) + 3 a_qkv(F A)                       projections
    + h (2 F^2 dh + F^2 + F (5F - 1) + 2 F^2 dh)       scores, scale, softmax, weighted sum
    + F (2 A P + P) + a_out(F P)                       output Dense
    + [instance: P (7F + 4)] + [flatten: 2 F P F D + F D].

    The projections are BLAS matmuls; scores, masked softmax, weighted sum and their
    backward are one kernel each (:mod:`adaref.kernels.attention`). With a linear or
    relu Q/K/V activation the projections and the attention are one op
    (:func:`~adaref.experts.fused.projected_attention`), which keeps x rather than
    Q, K and V for the backward pass.

    >>> import numpy as np, adaref
    >>> expert = MHSA(MHSAConfig(heads=2), num_fields=3, dim=4, rng=np.random.default_rng(0))
    >>> expert(adaref.Tensor(np.ones((5, 3, 4)))).shape, expert.Wq.shape
    ((5, 3, 4), (4, 4))
    """

    EQUATION = "eq. 4"
    PARAM_LAYOUTS = {**{f"W{q}": "(in D, out A = h*dh): heads contiguous (head k at k*dh:(k+1)*dh)"
                        for q in "qkv"},
                     **{f"b{q}": "(A,)" for q in "qkv"},
                     "Wo": "(in A, out P) per token", "bo": "(P,)",
                     "gamma": "(P,) instance-norm gain", "beta": "(P,) instance-norm bias",
                     "Wf": "(in F*P, out F*D): input token-major (f*P + p)", "bf": "(F*D,) field-major"}

    name = "mhsa"

    def __init__(self, config: MHSAConfig, num_fields: int, dim: int, *,
                 rng: np.random.Generator, dtype=np.float64):
        super().__init__(config, num_fields, dim, dtype)
        c, d, f = config, self.dim, self.num_fields
        self.head_size = c.head_size if c.head_size is not None else max(1, d // c.heads)  # dh
        self.out_size = c.out_size if c.out_size is not None else d                 # P
        if c.readout == "token" and self.out_size != d:
            raise ConfigError(f"MHSA expert: readout='token' needs out_size == D = {d}, got "
                              f"{self.out_size}; use readout='flatten'")
        a = c.heads * self.head_size                                                 # A
        glorot = lambda n_in, n_out: Parameter(glorot_uniform(rng, n_in, n_out, (n_in, n_out),  # noqa: E731
                                                              self.dtype))
        zeros = lambda n: Parameter(np.zeros(n, dtype=self.dtype))  # noqa: E731
        self.Wq, self.bq = glorot(d, a), zeros(a)                                    # (D, A), (A,)
        self.Wk, self.bk = glorot(d, a), zeros(a)
        self.Wv, self.bv = glorot(d, a), zeros(a)
        self.Wo, self.bo = glorot(a, self.out_size), zeros(self.out_size)            # (A, P), (P,)
        if c.norm == "instance":
            self.gamma = Parameter(np.ones(self.out_size, dtype=self.dtype))         # (P,)
            self.beta = Parameter(np.zeros(self.out_size, dtype=self.dtype))         # (P,)
        if c.readout == "flatten":
            self.Wf, self.bf = glorot(f * self.out_size, f * d), zeros(f * d)        # (FP, FD), (FD,)

    def interact(self, x: Tensor, x0: Tensor | None) -> Tensor:
        c, nb, f = self.config, x.shape[0], self.num_fields
        heads = (nb, f, c.heads, self.head_size)
        if c.qkv_activation in FUSED_ACTIVATIONS:    # q, k, v not kept for the backward pass
            o = projected_attention(x, self.Wq, self.bq, self.Wk, self.bk, self.Wv, self.bv,
                                    c.heads, c.qkv_activation)                  # (B, F, h, dh)
        else:
            q = ops.reshape(dense(x, self.Wq, self.bq, c.qkv_activation), heads)    # (B, F, h, dh)
            k = ops.reshape(dense(x, self.Wk, self.bk, c.qkv_activation), heads)    # (B, F, h, dh)
            v = ops.reshape(dense(x, self.Wv, self.bv, c.qkv_activation), heads)    # (B, F, h, dh)
            o = attention(q, k, v)                                                  # (B, F, h, dh)
        o = ops.reshape(o, (nb, f, c.heads * self.head_size))                        # (B, F, A)
        z = dense(o, self.Wo, self.bo, c.out_activation)                         # (B, F, P)
        if c.norm == "instance":
            z = instance_norm(z, self.gamma, self.beta, c.norm_eps)              # (B, F, P)
        if c.readout == "token":
            return z                                                             # (B, F, D)
        y = dense(ops.reshape(z, (nb, f * self.out_size)), self.Wf, self.bf, "linear")  # (B, FD)
        return ops.reshape(y, x.shape)                                           # (B, F, D)

    def flops(self) -> int:
        c, f, d = self.config, self.num_fields, self.dim
        dh, p = self.head_size, self.out_size
        a = c.heads * dh
        total = 3 * dense_flops(d, a, c.qkv_activation, rows=f)                  # Q, K, V
        total += c.heads * (2 * f * f * dh + f * f + f * (5 * f - 1) + 2 * f * f * dh)
        total += dense_flops(a, p, c.out_activation, rows=f)                     # output Dense
        if c.norm == "instance":
            total += instance_norm_flops(f, p)
        if c.readout == "flatten":
            total += dense_flops(f * p, f * d, "linear")
        return total
