"""LR: logistic regression on the one-hot fields (§4.1.3, refs. [19, 20])."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from adaref.baselines.base import Baseline, check_choice
from adaref.baselines.linear import FirstOrder
from adaref.config import Config
from adaref.tensor import Tensor


@dataclass(frozen=True)
class LRConfig(Config):
    """Logistic regression has no embedding size and no layers: only the OOV choice."""

    embedding_oov: Literal["learned", "zero"] = "learned"  # row 3: OOV weight learned or zero

    def __post_init__(self):
        check_choice("LRConfig", "embedding_oov", self.embedding_oov, ("learned", "zero"))


class LR(Baseline):
    r"""Logistic regression (McMahan et al., "Ad click prediction: a view from the trenches",
    KDD 2013; the paper's refs. [19, 20], trained there with FTRL-Proximal).

    .. math::

        \hat y = \sigma(w^T x + b) = \sigma\Big(b + \sum_{f=1}^{F} w_{f,\,\mathrm{id}_f}\Big)

    x is the one-hot encoding of the F fields, so w^T x sums one weight per field
    (:class:`~adaref.baselines.linear.FirstOrder`; weights and bias start at 0). No
    feature crosses: every field is used as the data pipeline encodes it.

    Shapes: ids (B, F) -> logit (B,). Parameters: ``linear.weight`` (sum_f V_f, 1),
    ``linear.bias`` (1,).

    FLOPs per example: F + 1 (sum and bias) + 1 (sigmoid) = F + 2.

    >>> model = LR(LRConfig(), [3, 5, 2], rng=np.random.default_rng(0))
    >>> model(np.array([[1, 4, 0], [2, 0, 1]])).shape, model.flops_per_example()
    ((2,), 5)
    """

    name = "lr"

    def __init__(self, config: LRConfig, vocab_sizes: Sequence[int], *, rng: np.random.Generator,
                 dtype=np.float64):
        super().__init__(config, vocab_sizes, rng=rng, dtype=dtype)
        self.linear = FirstOrder(self.vocab_sizes, rng=rng, oov=config.embedding_oov, dtype=dtype)

    def logit(self, ids: np.ndarray) -> Tensor:
        return self.linear(ids)                                               # (B,)

    def flops_per_example(self) -> int:
        return self.linear.flops() + 1
