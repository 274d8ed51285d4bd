"""DNN: a multilayer perceptron on the concatenated embeddings (§4.1.3)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from adaref import ops
from adaref.baselines.base import Baseline, BaselineConfig, check_units
from adaref.baselines.mlp import MLP
from adaref.experts.base import check_activation
from adaref.nn import Linear
from adaref.tensor import Tensor


@dataclass(frozen=True)
class DNNConfig(BaselineConfig):
    """The plain multilayer perceptron."""

    hidden: tuple[int, ...] = (128, 128)  # hidden widths (the deep part of DeepCTR's WDL and DeepFM)
    activation: str = "relu"              # activation of every hidden layer

    def __post_init__(self):
        super().__post_init__()
        check_units("DNNConfig", "hidden", self.hidden, allow_empty=False)
        check_activation("DNNConfig", "activation", self.activation)


class DNN(Baseline):
    r"""Multilayer perceptron on the flattened embeddings (the "DNN" row of Table 1; the
    deep component shared by Wide & Deep, DeepFM, DCN and the others).

    .. math::

        a^{(0)} = \mathrm{vec}(X_0) \in \mathbb{R}^{FD},\qquad
        a^{(k)} = \mathrm{relu}(W^{(k)} a^{(k-1)} + b^{(k)}),\qquad
        \hat y = \sigma(w^T a^{(K)} + b)

    The paper cites no reference for it; the layout (flatten, ReLU tower, one linear
    output unit) is that of the deep part of every deep CTR model here. Default widths
    (128, 128): the deep part of DeepCTR's Wide & Deep and DeepFM.

    Shapes: ids (B, F) -> logit (B,). Parameters: ``embedding.weight``,
    ``mlp.layers.k.weight``/``bias`` (:class:`~adaref.baselines.mlp.MLP`),
    ``out.weight`` (u_K, 1), ``out.bias`` (1,).

    FLOPs per example: MLP(FD; u) + 2 u_K + 1 (output unit) + 1 (sigmoid).

    >>> model = DNN(DNNConfig(dim=2, hidden=(4,)), [3, 5, 2], rng=np.random.default_rng(0))
    >>> model(np.array([[1, 4, 0], [2, 0, 1]])).shape, model.flops_per_example()
    ((2,), 66)
    """

    name = "dnn"

    def __init__(self, config: DNNConfig, vocab_sizes: Sequence[int], *, rng: np.random.Generator,
                 dtype=np.float64):
        super().__init__(config, vocab_sizes, rng=rng, dtype=dtype)
        fd = self.num_fields * self.dim
        self.embedding = self.make_embedding(rng)
        self.mlp = MLP(fd, config.hidden, config.activation, rng=rng, dtype=dtype)
        self.out = Linear(self.mlp.out_features, 1, rng=rng, dtype=dtype)

    def logit(self, ids: np.ndarray) -> Tensor:
        x0 = self.embed(ids)                                                  # (B, F, D)
        h = self.mlp(ops.reshape(x0, (len(ids), -1)))                         # (B, u_K)
        return ops.reshape(self.out(h), (len(ids),))                          # (B,)

    def flops_per_example(self) -> int:
        return self.mlp.flops() + 2 * self.mlp.out_features + 1 + 1
