"""FiBiNET: SENET field importance and bilinear interactions (§4.1.3, ref. [11])."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from adaref import ops
from adaref.baselines.base import (Baseline, BaselineConfig, check_choice, check_positive,
                                   check_units, linear_rows, slot_matmul)
from adaref.baselines.linear import FirstOrder
from adaref.baselines.mlp import MLP
from adaref.baselines.pnn import pairs
from adaref.experts.base import check_activation
from adaref.nn import Linear, Module, Parameter
from adaref.nn.init import glorot_uniform
from adaref.tensor import Tensor


@dataclass(frozen=True)
class FiBiNETConfig(BaselineConfig):
    """FiBiNET: SENET reduction ratio, bilinear type and the DNN's widths."""

    reduction_ratio: int = 3              # r: the SENET's hidden width is max(1, F // r) (DeepCTR: 3)
    bilinear: Literal["all", "each", "interaction"] = "interaction"
    # ^ W shared by all fields ("Field-All"), one per field ("Field-Each"), one per pair
    #   ("Field-Interaction", DeepCTR's default)
    hidden: tuple[int, ...] = (128, 128)  # the DNN on the combination layer (DeepCTR's default)
    activation: str = "relu"              # activation of the DNN

    def __post_init__(self):
        super().__post_init__()
        check_positive("FiBiNETConfig", "reduction_ratio", self.reduction_ratio)
        check_choice("FiBiNETConfig", "bilinear", self.bilinear, ("all", "each", "interaction"))
        check_units("FiBiNETConfig", "hidden", self.hidden, allow_empty=False)
        check_activation("FiBiNETConfig", "activation", self.activation)


class SENET(Module):
    r"""Squeeze-excitation over fields: field weights A from the embeddings.

    .. math::

        z_f = \frac1D \sum_{d} e_{f,d},\qquad
        A = \mathrm{relu}\big(W_2\, \mathrm{relu}(W_1 z)\big),\qquad v_f = a_f\, e_f

    ``W1`` (F, R), ``W2`` (R, F), R = max(1, F // r), Glorot uniform, no biases; ReLU
    for both activations (the paper's sigma_1, sigma_2; DeepCTR's choice).
    Shapes: (B, F, D) -> (B, F, D).

    FLOPs per example: F (D + 1) (means) + 2 F R + R (first layer, ReLU) + 2 R F + F
    (second) + F D (reweighting).
    """

    PARAM_LAYOUTS = {"W1": "(in F, out R)", "W2": "(in R, out F)"}

    def __init__(self, num_fields: int, reduction_ratio: int, *, rng: np.random.Generator,
                 dtype=np.float64):
        super().__init__()
        f, r = num_fields, max(1, num_fields // reduction_ratio)
        self.num_fields, self.hidden = f, r
        self.W1 = Parameter(glorot_uniform(rng, f, r, (f, r), dtype))         # (F, R)
        self.W2 = Parameter(glorot_uniform(rng, r, f, (r, f), dtype))         # (R, F)

    def forward(self, x: Tensor) -> Tensor:
        z = ops.mean(x, axis=2)                                               # (B, F)
        a = ops.relu(ops.matmul(ops.relu(ops.matmul(z, self.W1)), self.W2))   # (B, F)
        return x * ops.reshape(a, (x.shape[0], self.num_fields, 1))           # (B, F, D)

    def flops(self, dim: int) -> int:
        f, r = self.num_fields, self.hidden
        return f * (dim + 1) + (2 * f * r + r) + (2 * r * f + f) + f * dim


class Bilinear(Module):
    r"""Bilinear interactions p_ij = (v_i W) ⊙ v_j for the P = F(F-1)/2 pairs i < j.

    ``kind`` sets which W: "all" one ``W`` (D, D); "each" ``W`` (F, D, D), W_i for the
    pair's first field; "interaction" ``W`` (P, D, D), one per pair. Glorot uniform, no
    bias. Shapes: (B, F, D) -> (B, P, D).

    FLOPs per example: the products v_i W (2 D^2 each): F of them for "all" and "each",
    P for "interaction"; then P D for the Hadamard products.
    """

    PARAM_LAYOUTS = {"W": "(D, D) | (F, D, D) | (P, D, D), (in, out): v_i W"}

    def __init__(self, num_fields: int, dim: int, kind: str, *, rng: np.random.Generator,
                 dtype=np.float64):
        super().__init__()
        self.num_fields, self.dim, self.kind = num_fields, dim, kind
        self.I, self.J = pairs(num_fields)
        lead = {"all": (), "each": (num_fields,), "interaction": (len(self.I),)}[kind]
        self.W = Parameter(glorot_uniform(rng, dim, dim, lead + (dim, dim), dtype))

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "all":
            left = ops.take(linear_rows(x, self.W), self.I, axis=1)           # (B, P, D) v_i W
        elif self.kind == "each":
            left = ops.take(slot_matmul(x, self.W), self.I, axis=1)           # (B, P, D) v_i W_i
        else:
            left = slot_matmul(ops.take(x, self.I, axis=1), self.W)           # (B, P, D) v_i W_ij
        return left * ops.take(x, self.J, axis=1)                             # (B, P, D)

    def flops(self) -> int:
        f, d, p = self.num_fields, self.dim, len(self.I)
        products = p if self.kind == "interaction" else f
        return products * 2 * d * d + p * d


class FiBiNET(Baseline):
    r"""FiBiNET (Huang, Zhang and Zhang, "FiBiNET: Combining Feature Importance and
    Bilinear feature Interaction for Click-Through Rate Prediction", RecSys 2019,
    arXiv:1905.09433).

    .. math::

        V = \mathrm{SENET}(E),\qquad p = \mathrm{Bilinear}(E),\quad q = \mathrm{Bilinear}'(V)

        c = [p, q] \in \mathbb{R}^{2 P D},\qquad
        \hat y = \sigma\big(w_0 + \textstyle\sum_i w_i x_i + y_d\big),\quad
        y_d = w^T \mathrm{DNN}(c)

    (:class:`SENET`, :class:`Bilinear`). The two bilinear layers have their own W
    (DeepCTR's two BilinearInteraction layers), the linear part is
    :class:`~adaref.baselines.linear.FirstOrder` (with w_0), the DNN a ReLU
    :class:`~adaref.baselines.mlp.MLP` with a bias-free output unit.

    Decisions: reduction ratio 3, "Field-Interaction" bilinear type and a (128, 128)
    DNN, DeepCTR's defaults; the combination layer is [p, q] only (the paper's; the
    embeddings themselves are not fed to the DNN).

    Shapes: ids (B, F) -> logit (B,). Parameters: ``embedding.weight``, ``linear.*``,
    ``senet.W1``/``W2``, ``bilinear.W``, ``bilinear_senet.W``, ``mlp.layers.k.*``,
    ``out.weight`` (u_K, 1).

    FLOPs per example: (F + 1) + SENET + 2 Bilinear + MLP(2PD; u) + 2 u_K + 1 (add)
    + 1 (sigmoid).

    >>> cfg = FiBiNETConfig(dim=2, hidden=(4,))
    >>> model = FiBiNET(cfg, [3, 5, 2], rng=np.random.default_rng(0))
    >>> model(np.array([[1, 4, 0], [2, 0, 1]])).shape, model.flops_per_example()
    ((2,), 209)
    """

    name = "fibinet"

    def __init__(self, config: FiBiNETConfig, vocab_sizes: Sequence[int], *,
                 rng: np.random.Generator, dtype=np.float64):
        super().__init__(config, vocab_sizes, rng=rng, dtype=dtype)
        f, d = self.num_fields, self.dim
        self.embedding = self.make_embedding(rng)
        self.linear = FirstOrder(self.vocab_sizes, rng=rng, oov=config.embedding_oov, dtype=dtype)
        self.senet = SENET(f, config.reduction_ratio, rng=rng, dtype=dtype)
        self.bilinear = Bilinear(f, d, config.bilinear, rng=rng, dtype=dtype)
        self.bilinear_senet = Bilinear(f, d, config.bilinear, rng=rng, dtype=dtype)
        p = len(self.bilinear.I)
        self.mlp = MLP(2 * p * d, config.hidden, config.activation, rng=rng, dtype=dtype)
        self.out = Linear(self.mlp.out_features, 1, rng=rng, bias=False, dtype=dtype)

    def logit(self, ids: np.ndarray) -> Tensor:
        nb = len(ids)
        e = self.embed(ids)                                                   # (B, F, D)
        p = self.bilinear(e)                                                  # (B, P, D)
        q = self.bilinear_senet(self.senet(e))                                # (B, P, D)
        c = ops.concatenate([ops.reshape(p, (nb, -1)), ops.reshape(q, (nb, -1))], axis=1)  # (B, 2PD)
        return self.linear(ids) + ops.reshape(self.out(self.mlp(c)), (nb,))  # (B,)

    def flops_per_example(self) -> int:
        return (self.linear.flops() + self.senet.flops(self.dim) + 2 * self.bilinear.flops()
                + self.mlp.flops() + 2 * self.mlp.out_features + 1 + 1)
