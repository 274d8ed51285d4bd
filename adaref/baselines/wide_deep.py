"""Wide & Deep (§4.1.3, ref. [4])."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from adaref import ops
from adaref.baselines.base import Baseline, BaselineConfig, check_units
from adaref.baselines.linear import FirstOrder
from adaref.baselines.mlp import MLP
from adaref.experts.base import check_activation
from adaref.nn import Linear
from adaref.tensor import Tensor


@dataclass(frozen=True)
class WideDeepConfig(BaselineConfig):
    """Wide & Deep: the deep part's widths (the wide part has no options)."""

    hidden: tuple[int, ...] = (128, 128)  # deep part (DeepCTR's WDL default)
    activation: str = "relu"              # activation of the deep part (the paper: ReLU)

    def __post_init__(self):
        super().__post_init__()
        check_units("WideDeepConfig", "hidden", self.hidden, allow_empty=False)
        check_activation("WideDeepConfig", "activation", self.activation)


class WideDeep(Baseline):
    r"""Wide & Deep (Cheng et al., "Wide & Deep Learning for Recommender Systems", DLRS
    2016, arXiv:1606.07792).

    .. math::

        \hat y = \sigma\big(w_{wide}^T [x, \phi(x)] + w_{deep}^T a^{(l_f)} + b\big)

    with x the one-hot fields, phi(x) hand-chosen cross-product transformations and
    a^{(l_f)} the last layer of a ReLU MLP on the concatenated embeddings.

    Decision (phi, which crosses the wide part gets): none. The paper picks crosses by
    hand for its app-store data; DeepCTR and FuxiCTR, the most used implementations,
    feed the wide part the raw one-hot fields only, and so does adaref: the wide part
    is :class:`~adaref.baselines.linear.FirstOrder` (which holds the one bias b), the
    deep part :class:`~adaref.baselines.mlp.MLP` with a bias-free output unit.
    The paper trains the wide part with FTRL + L1 and the deep part with AdaGrad; the
    AdaEnsemble paper (§4.1.4) trains every neural model with Adam: that is the
    trainer's choice, not the model's.

    Shapes: ids (B, F) -> logit (B,). Parameters: ``embedding.weight``,
    ``linear.weight``/``bias``, ``mlp.layers.k.*``, ``out.weight`` (u_K, 1).

    FLOPs per example: (F + 1) + MLP(FD; u) + 2 u_K + 1 (add) + 1 (sigmoid).

    >>> model = WideDeep(WideDeepConfig(dim=2, hidden=(4,)), [3, 5, 2], rng=np.random.default_rng(0))
    >>> model(np.array([[1, 4, 0], [2, 0, 1]])).shape, model.flops_per_example()
    ((2,), 70)
    """

    name = "wide_deep"

    def __init__(self, config: WideDeepConfig, vocab_sizes: Sequence[int], *,
                 rng: np.random.Generator, dtype=np.float64):
        super().__init__(config, vocab_sizes, rng=rng, dtype=dtype)
        fd = self.num_fields * self.dim
        self.embedding = self.make_embedding(rng)
        self.linear = FirstOrder(self.vocab_sizes, rng=rng, oov=config.embedding_oov, dtype=dtype)
        self.mlp = MLP(fd, config.hidden, config.activation, rng=rng, dtype=dtype)
        self.out = Linear(self.mlp.out_features, 1, rng=rng, bias=False, dtype=dtype)

    def logit(self, ids: np.ndarray) -> Tensor:
        x0 = self.embed(ids)                                                  # (B, F, D)
        deep = self.out(self.mlp(ops.reshape(x0, (len(ids), -1))))           # (B, 1)
        return self.linear(ids) + ops.reshape(deep, (len(ids),))             # (B,)

    def flops_per_example(self) -> int:
        return self.linear.flops() + self.mlp.flops() + 2 * self.mlp.out_features + 1 + 1
