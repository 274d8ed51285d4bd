"""AutoInt: self-attentive feature interactions (§4.1.3, ref. [28])."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from adaref import ops
from adaref.baselines.base import (Baseline, BaselineConfig, check_positive, check_units,
                                   linear_rows)
from adaref.baselines.mlp import MLP
from adaref.experts.base import check_activation
from adaref.experts.fused import attention
from adaref.nn import Linear, Module, ModuleList, Parameter
from adaref.nn.init import glorot_uniform
from adaref.tensor import Tensor


@dataclass(frozen=True)
class AutoIntConfig(BaselineConfig):
    """AutoInt: interacting layers, heads, head size; an optional DNN (AutoInt+)."""

    layers: int = 3                       # interacting layers (the authors' code: 3 blocks)
    heads: int = 2                        # H, attention heads per layer (the authors' code: 2)
    head_size: int = 32                   # d', size of each head (the authors': 64 units over 2 heads)
    hidden: tuple[int, ...] = ()          # () is AutoInt; widths add a DNN in parallel (AutoInt+)
    activation: str = "relu"              # activation of that DNN

    def __post_init__(self):
        super().__post_init__()
        for key in ("layers", "heads", "head_size"):
            check_positive("AutoIntConfig", key, getattr(self, key))
        check_units("AutoIntConfig", "hidden", self.hidden)
        check_activation("AutoIntConfig", "activation", self.activation)


class InteractingLayer(Module):
    r"""One interacting layer: multi-head self-attention over the fields with a residual.

    .. math::

        \alpha^{(h)}_{m,k} = \frac{\exp(\langle W^{(h)}_Q e_m, W^{(h)}_K e_k\rangle)}
                                  {\sum_{l} \exp(\langle W^{(h)}_Q e_m, W^{(h)}_K e_l\rangle)},
        \qquad \tilde e^{(h)}_m = \sum_k \alpha^{(h)}_{m,k} W^{(h)}_V e_k

        \tilde e_m = \tilde e^{(1)}_m \oplus \cdots \oplus \tilde e^{(H)}_m,\qquad
        e^{Res}_m = \mathrm{relu}(\tilde e_m + W_{Res} e_m)

    The score is the plain inner product (the paper's; no 1/sqrt(d') scaling), computed
    by the fused attention op with ``scale=1``. Parameters ``Wq``, ``Wk``, ``Wv``,
    ``Wres`` (d_in, H d'), Glorot uniform, no biases (the paper's W matrices).
    Shapes: (B, F, d_in) -> (B, F, H d').

    FLOPs per example (A = H d'): 4 (2 F d_in A) (the four projections)
    + H (2 F^2 d' + F (5F - 1) + 2 F^2 d') (scores, softmax, weighted sum) + 2 F A
    (residual add, ReLU).
    """

    PARAM_LAYOUTS = {**{f"W{q}": "(in d_in, out H*d'): heads contiguous (head h at h*d':(h+1)*d')"
                        for q in "qkv"}, "Wres": "(in d_in, out H*d')"}

    def __init__(self, in_features: int, heads: int, head_size: int, *,
                 rng: np.random.Generator, dtype=np.float64):
        super().__init__()
        self.in_features, self.heads, self.head_size = in_features, heads, head_size
        a = heads * head_size                                                 # A
        glorot = lambda: Parameter(glorot_uniform(rng, in_features, a, (in_features, a), dtype))  # noqa: E731
        self.Wq, self.Wk, self.Wv, self.Wres = glorot(), glorot(), glorot(), glorot()  # (d_in, A)

    @property
    def out_features(self) -> int:
        return self.heads * self.head_size

    def forward(self, x: Tensor) -> Tensor:
        nb, f, _ = x.shape
        split = (nb, f, self.heads, self.head_size)
        q = ops.reshape(linear_rows(x, self.Wq), split)                       # (B, F, H, d')
        k = ops.reshape(linear_rows(x, self.Wk), split)                       # (B, F, H, d')
        v = ops.reshape(linear_rows(x, self.Wv), split)                       # (B, F, H, d')
        o = ops.reshape(attention(q, k, v, scale=1.0), (nb, f, self.out_features))  # (B, F, A)
        return ops.relu(o + linear_rows(x, self.Wres))                        # (B, F, A)

    def flops(self, num_fields: int) -> int:
        f, a, dh = num_fields, self.out_features, self.head_size
        return (4 * 2 * f * self.in_features * a
                + self.heads * (2 * f * f * dh + f * (5 * f - 1) + 2 * f * f * dh) + 2 * f * a)


class AutoInt(Baseline):
    r"""AutoInt (Song et al., "AutoInt: Automatic Feature Interaction Learning via
    Self-Attentive Neural Networks", CIKM 2019, arXiv:1810.11921).

    X_0 = E(ids) goes through the interacting layers (:class:`InteractingLayer`), and

    .. math::

        \hat y = \sigma\big(w^T (e^{Res}_1 \oplus \cdots \oplus e^{Res}_F) + b\big)

    on the last layer's output; with ``hidden`` (AutoInt+), a ReLU DNN on vec(X_0) adds
    its logit (bias-free output unit).

    Decisions: 3 layers of 2 heads of size 32, the authors' code (``blocks`` 3,
    ``heads`` 2, ``block_shape`` 64); the attention follows the paper's equations
    (linear Q/K/V without bias, unscaled inner product, ReLU residual, no layer norm),
    not the authors' code, which adds ReLU to Q/K/V/residual projections, scales by
    1/sqrt(d') and layer-normalises each block; no DNN (the paper's AutoInt; DeepCTR's
    AutoInt defaults to AutoInt+).

    Shapes: ids (B, F) -> logit (B,). Parameters: ``embedding.weight``,
    ``layers.l.Wq``/``Wk``/``Wv``/``Wres``, ``out.weight`` (F A, 1), ``out.bias`` (1,);
    AutoInt+ adds ``mlp.layers.k.*`` and ``deep_out.weight`` (u_K, 1).

    FLOPs per example: sum_l InteractingLayer + 2 F A + 1 (output) [+ MLP(FD; u) + 2 u_K
    + 1 (add)] + 1 (sigmoid).

    >>> cfg = AutoIntConfig(dim=2, layers=1, heads=1, head_size=2)
    >>> model = AutoInt(cfg, [3, 5, 2], rng=np.random.default_rng(0))
    >>> model(np.array([[1, 4, 0], [2, 0, 1]])).shape, model.flops_per_example()
    ((2,), 236)
    """

    name = "autoint"

    def __init__(self, config: AutoIntConfig, vocab_sizes: Sequence[int], *,
                 rng: np.random.Generator, dtype=np.float64):
        super().__init__(config, vocab_sizes, rng=rng, dtype=dtype)
        f, d = self.num_fields, self.dim
        self.embedding = self.make_embedding(rng)
        widths = [d] + [config.heads * config.head_size] * config.layers
        self.layers = ModuleList([InteractingLayer(widths[l], config.heads, config.head_size,
                                                   rng=rng, dtype=dtype)
                                  for l in range(config.layers)])
        self.out = Linear(f * widths[-1], 1, rng=rng, dtype=dtype)
        if config.hidden:
            self.mlp = MLP(f * d, config.hidden, config.activation, rng=rng, dtype=dtype)
            self.deep_out = Linear(self.mlp.out_features, 1, rng=rng, bias=False, dtype=dtype)

    def logit(self, ids: np.ndarray) -> Tensor:
        nb = len(ids)
        x0 = self.embed(ids)                                                  # (B, F, D)
        x = x0
        for layer in self.layers:
            x = layer(x)                                                      # (B, F, A)
        z = ops.reshape(self.out(ops.reshape(x, (nb, -1))), (nb,))            # (B,)
        if self.config.hidden:
            z = z + ops.reshape(self.deep_out(self.mlp(ops.reshape(x0, (nb, -1)))), (nb,))
        return z

    def flops_per_example(self) -> int:
        f = self.num_fields
        total = sum(layer.flops(f) for layer in self.layers) + 2 * self.out.in_features + 1 + 1
        if self.config.hidden:
            total += self.mlp.flops() + 2 * self.mlp.out_features + 1
        return total
