"""Deep Crossing (§4.1.3, ref. [26])."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from adaref import ops
from adaref.baselines.base import Baseline, BaselineConfig, check_units
from adaref.experts.base import act_flops, check_activation, dense, dense_flops
from adaref.nn import Linear, Module, ModuleList
from adaref.nn.activations import activation as activation_fn
from adaref.tensor import Tensor


@dataclass(frozen=True)
class DeepCrossingConfig(BaselineConfig):
    """Deep Crossing: one hidden width per residual unit."""

    residual_units: tuple[int, ...] = (64, 64, 64)  # hidden width of each unit (FuxiCTR's default)
    activation: str = "relu"                        # the units' activation (the paper: ReLU)

    def __post_init__(self):
        super().__post_init__()
        check_units("DeepCrossingConfig", "residual_units", self.residual_units, allow_empty=False)
        check_activation("DeepCrossingConfig", "activation", self.activation)


class ResidualUnit(Module):
    r"""X^O = act(F(X^I) + X^I),  F(X) = W_1 act(W_0 X + b_0) + b_1  (Deep Crossing's residual unit).

    Widths n -> h -> n. FLOPs per example: (2nh + h + a(h)) + (2hn + n) + n (add) + a(n).
    """

    def __init__(self, width: int, hidden: int, activation: str, *, rng, dtype):
        super().__init__()
        self.activation = activation
        self.inner = Linear(width, hidden, rng=rng, dtype=dtype)             # W_0 (n, h), b_0
        self.outer = Linear(hidden, width, rng=rng, dtype=dtype)             # W_1 (h, n), b_1

    def forward(self, x: Tensor) -> Tensor:
        h = dense(x, self.inner.weight, self.inner.bias, self.activation)    # (B, h)
        r = dense(h, self.outer.weight, self.outer.bias, "linear")           # (B, n)
        return activation_fn(self.activation)(r + x)                         # (B, n)

    def flops(self) -> int:
        n, h = self.inner.in_features, self.inner.out_features
        return (dense_flops(n, h, self.activation) + dense_flops(h, n, "linear") + n
                + act_flops(self.activation, n))


class DeepCrossing(Baseline):
    r"""Deep Crossing (Shan et al., "Deep Crossing: Web-Scale Modeling without Manually
    Crafted Combinatorial Features", KDD 2016).

    .. math::

        X^O_j = \max(0, W_j X^I_j + b_j)\ \text{(embedding)},\qquad
        X^O = [X^O_0, \ldots, X^O_K]\ \text{(stacking)}

        X^O = \mathrm{relu}\big(\mathcal F(X^I, \{W_0, W_1\}, \{b_0, b_1\}) + X^I\big),\quad
        \mathcal F(X) = W_1 \mathrm{relu}(W_0 X + b_0) + b_1\ \text{(residual unit)}

        \hat y = \sigma(w^T X^O_{last} + b)\ \text{(scoring layer)}

    Decision (embedding layer): the paper's per-feature embedding is a ReLU of a linear
    map of the one-hot vector; adaref uses the shared embedding table of every other
    model here (a linear lookup, no ReLU), so that all baselines start from the same
    X_0 (DeepCTR and FuxiCTR do the same). Decision (sizes): the paper does not fix the
    number of units or their hidden width for public data; FuxiCTR's default, three
    units of width 64, is taken. The residual units act on the stacked vector vec(X_0)
    of width FD and map back to FD (:class:`ResidualUnit`).

    Shapes: ids (B, F) -> logit (B,). Parameters: ``embedding.weight``,
    ``units.k.inner.*`` (FD, h_k), ``units.k.outer.*`` (h_k, FD), ``out.weight`` (FD, 1),
    ``out.bias`` (1,).

    FLOPs per example: sum_k [4 FD h_k + 2 h_k + 3 FD] (ReLU) + 2FD + 1 (scoring) + 1
    (sigmoid).

    >>> cfg = DeepCrossingConfig(dim=2, residual_units=(4,))
    >>> model = DeepCrossing(cfg, [3, 5, 2], rng=np.random.default_rng(0))
    >>> model(np.array([[1, 4, 0], [2, 0, 1]])).shape, model.flops_per_example()
    ((2,), 136)
    """

    name = "deep_crossing"

    def __init__(self, config: DeepCrossingConfig, vocab_sizes: Sequence[int], *,
                 rng: np.random.Generator, dtype=np.float64):
        super().__init__(config, vocab_sizes, rng=rng, dtype=dtype)
        fd = self.num_fields * self.dim
        self.embedding = self.make_embedding(rng)
        self.units = ModuleList([ResidualUnit(fd, h, config.activation, rng=rng, dtype=dtype)
                                 for h in config.residual_units])
        self.out = Linear(fd, 1, rng=rng, dtype=dtype)

    def logit(self, ids: np.ndarray) -> Tensor:
        x = ops.reshape(self.embed(ids), (len(ids), -1))                      # (B, FD)
        for unit in self.units:
            x = unit(x)                                                       # (B, FD)
        return ops.reshape(self.out(x), (len(ids),))                          # (B,)

    def flops_per_example(self) -> int:
        fd = self.num_fields * self.dim
        return sum(u.flops() for u in self.units) + 2 * fd + 1 + 1
