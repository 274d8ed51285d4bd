"""FM: the factorization machine (§4.1.3, ref. [24])."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from adaref import ops
from adaref.baselines.base import Baseline, BaselineConfig
from adaref.baselines.linear import FirstOrder
from adaref.tensor import Tensor


@dataclass(frozen=True)
class FMConfig(BaselineConfig):
    """The factorization machine: the embedding size D (the factors k of the paper).

    Its factors start from N(0, 0.01^2), not the 1e-4 of the neural models: FM trains
    with FTRL (§4.1.4), and a factor's gradient is proportional to the other factors,
    so from 1e-4 FTRL's per-coordinate steps leave them near where they start and FM
    stays a logistic regression (test AUC 0.6965 against LR's 0.6965 on the Criteo
    sample, seed 0; 0.7007 from 0.01). libFM's own default is 0.1."""

    embedding_std: float = 0.01


def fm_pairwise(x0: Tensor) -> Tensor:
    r"""The FM second-order term of every example, in O(FD) (Rendle 2010, Lemma 3.1):

    .. math::

        \sum_{i<j} \langle v_i, v_j \rangle
        = \tfrac12 \sum_{d=1}^{D} \Big[\Big(\sum_{f} v_{f,d}\Big)^2 - \sum_{f} v_{f,d}^2\Big]

    x0 (B, F, D) -> (B,). FLOPs per example: :func:`fm_pairwise_flops`.
    """
    s = ops.sum(x0, axis=1)                                                   # (B, D)
    q = ops.sum(x0 * x0, axis=1)                                              # (B, D)
    return ops.sum(s * s - q, axis=1) * 0.5                                   # (B,)


def fm_pairwise_flops(num_fields: int, dim: int) -> int:
    """FD (sum over fields) + D (square) + FD (squares) + FD (their sum) + D (subtract)
    + D (sum over D) + 1 (one half) = 3FD + 3D + 1."""
    return 3 * num_fields * dim + 3 * dim + 1


class FM(Baseline):
    r"""Factorization machine (Rendle, "Factorization Machines", ICDM 2010, eq. 1).

    .. math::

        \hat y = \sigma\Big(w_0 + \sum_{i=1}^{n} w_i x_i
                 + \sum_{i=1}^{n}\sum_{j=i+1}^{n} \langle v_i, v_j \rangle x_i x_j\Big)

    On one-hot fields x has one 1 per field, so the pairs are the F(F-1)/2 pairs of
    fields and v_i is the D-vector of the field's id: the second-order term is
    :func:`fm_pairwise` of X_0 = E(ids). The factors v are the embedding table (k = D);
    w, w_0 are :class:`~adaref.baselines.linear.FirstOrder` (zeros at start), v is
    initialised as AdaEnsemble's embedding (truncated normal, std 1/sqrt(D)).

    Shapes: ids (B, F) -> logit (B,). Parameters: ``embedding.weight`` (sum_f V_f, D),
    ``linear.weight`` (sum_f V_f, 1), ``linear.bias`` (1,).

    FLOPs per example: (F + 1) + (3FD + 3D + 1) + 1 (add) + 1 (sigmoid).

    >>> model = FM(FMConfig(dim=4), [3, 5, 2], rng=np.random.default_rng(0))
    >>> model(np.array([[1, 4, 0], [2, 0, 1]])).shape, model.flops_per_example()
    ((2,), 55)
    """

    name = "fm"

    def __init__(self, config: FMConfig, vocab_sizes: Sequence[int], *, rng: np.random.Generator,
                 dtype=np.float64):
        super().__init__(config, vocab_sizes, rng=rng, dtype=dtype)
        self.embedding = self.make_embedding(rng)
        self.linear = FirstOrder(self.vocab_sizes, rng=rng, oov=config.embedding_oov, dtype=dtype)

    def logit(self, ids: np.ndarray) -> Tensor:
        return self.linear(ids) + fm_pairwise(self.embed(ids))                # (B,)

    def flops_per_example(self) -> int:
        return self.linear.flops() + fm_pairwise_flops(self.num_fields, self.dim) + 2
