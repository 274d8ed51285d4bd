"""DeepFM (§4.1.3, ref. [8])."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from adaref import ops
from adaref.baselines.base import Baseline, BaselineConfig, check_units
from adaref.baselines.fm import fm_pairwise, fm_pairwise_flops
from adaref.baselines.linear import FirstOrder
from adaref.baselines.mlp import MLP
from adaref.experts.base import check_activation
from adaref.nn import Linear
from adaref.tensor import Tensor


@dataclass(frozen=True)
class DeepFMConfig(BaselineConfig):
    """DeepFM: the deep component's widths (the FM component has no options)."""

    hidden: tuple[int, ...] = (128, 128)  # deep component (DeepCTR's DeepFM default)
    activation: str = "relu"              # activation of the deep component

    def __post_init__(self):
        super().__post_init__()
        check_units("DeepFMConfig", "hidden", self.hidden, allow_empty=False)
        check_activation("DeepFMConfig", "activation", self.activation)


class DeepFM(Baseline):
    r"""DeepFM (Guo et al., "DeepFM: A Factorization-Machine based Neural Network for CTR
    Prediction", IJCAI 2017, arXiv:1703.04247).

    .. math::

        \hat y = \sigma(y_{FM} + y_{DNN}),\qquad
        y_{FM} = \langle w, x \rangle + \sum_{i<j} \langle V_i, V_j \rangle x_i x_j

        a^{(0)} = [e_1, \ldots, e_F],\quad a^{(l+1)} = \sigma(W^{(l)} a^{(l)} + b^{(l)}),\quad
        y_{DNN} = W^{|H|+1} a^{|H|} + b^{|H|+1}

    The FM and the deep component share one embedding table (the paper's point).
    Decision (biases): one global bias, in the first-order term; the deep output unit
    has none (the paper writes a bias in both, which are the same parameter up to
    their sum; DeepCTR keeps one). FM part: :class:`~adaref.baselines.linear.FirstOrder`
    and :func:`~adaref.baselines.fm.fm_pairwise`; deep part:
    :class:`~adaref.baselines.mlp.MLP`.

    Shapes: ids (B, F) -> logit (B,). Parameters: ``embedding.weight``,
    ``linear.weight``/``bias``, ``mlp.layers.k.*``, ``out.weight`` (u_K, 1).

    FLOPs per example: (F + 1) + (3FD + 3D + 1) + MLP(FD; u) + 2 u_K + 2 (adds)
    + 1 (sigmoid).

    >>> model = DeepFM(DeepFMConfig(dim=2, hidden=(4,)), [3, 5, 2], rng=np.random.default_rng(0))
    >>> model(np.array([[1, 4, 0], [2, 0, 1]])).shape, model.flops_per_example()
    ((2,), 96)
    """

    name = "deepfm"

    def __init__(self, config: DeepFMConfig, vocab_sizes: Sequence[int], *,
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
        y_fm = self.linear(ids) + fm_pairwise(x0)                            # (B,)
        return y_fm + ops.reshape(deep, (len(ids),))                         # (B,)

    def flops_per_example(self) -> int:
        return (self.linear.flops() + fm_pairwise_flops(self.num_fields, self.dim)
                + self.mlp.flops() + 2 * self.mlp.out_features + 2 + 1)
