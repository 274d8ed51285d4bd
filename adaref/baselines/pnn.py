"""PNN: product-based neural networks, inner (IPNN), outer (OPNN) or both (§4.1.3, refs. [22, 23])."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from adaref import ops
from adaref.baselines.base import (Baseline, BaselineConfig, check_choice, check_units,
                                   slot_matmul)
from adaref.baselines.mlp import MLP
from adaref.experts.base import check_activation
from adaref.nn import Linear, Module, Parameter
from adaref.nn.init import glorot_uniform
from adaref.tensor import Tensor


@dataclass(frozen=True)
class PNNConfig(BaselineConfig):
    """PNN: which product layer, the outer product's form, and the hidden widths."""

    product: Literal["inner", "outer", "both"] = "both"
    # ^ IPNN, OPNN, or PNN* (both products concatenated); §4.1.3 names "PNN with both
    #   inner product layer and outer product layer"
    outer_form: Literal["kernel", "sum"] = "kernel"
    # ^ the outer product: p_ij = e_i^T K_ij e_j per pair (the authors' current code and
    #   DeepCTR), or the ICDM paper's superposition p = f_S f_S^T with f_S = sum_i e_i
    hidden: tuple[int, ...] = (128, 128)  # hidden layers after the product layer (DeepCTR's default)
    activation: str = "relu"              # activation of the hidden layers (the paper: ReLU)

    def __post_init__(self):
        super().__post_init__()
        check_choice("PNNConfig", "product", self.product, ("inner", "outer", "both"))
        check_choice("PNNConfig", "outer_form", self.outer_form, ("kernel", "sum"))
        check_units("PNNConfig", "hidden", self.hidden)
        check_activation("PNNConfig", "activation", self.activation)


def pairs(num_fields: int) -> tuple[np.ndarray, np.ndarray]:
    """(I, J), the F(F-1)/2 field pairs i < j in row-major order (0,1), (0,2), ..., (F-2, F-1).

    >>> [p.tolist() for p in pairs(3)]
    [[0, 0, 1], [1, 2, 2]]
    """
    return np.triu_indices(num_fields, k=1)


class ProductLayer(Module):
    r"""The product signals p of PNN for X_0 (B, F, D): inner, outer, or both concatenated.

    * inner (IPNN): p_ij = <e_i, e_j> for the P = F(F-1)/2 pairs i < j -> (B, P);
    * outer, ``outer_form="kernel"``: p_ij = e_i^T K_ij e_j with one K_ij (D, D) per pair
      (``K`` (P, D, D), Glorot uniform with fan-in and fan-out D) -> (B, P);
    * outer, ``outer_form="sum"`` (the ICDM paper's OPNN): p = f_S f_S^T, f_S = sum_i e_i,
      flattened -> (B, D^2), row-major (p[a D + b] = f_S[a] f_S[b]).

    FLOPs per example: inner 2DP; outer kernel P (2D^2 + 2D); outer sum FD + D^2.
    """

    PARAM_LAYOUTS = {"K": "(P, D, D): K[p] is K_ij of pair p = (I[p], J[p]), p_ij = e_i^T K_ij e_j"}

    def __init__(self, num_fields: int, dim: int, product: str, outer_form: str, *,
                 rng: np.random.Generator, dtype=np.float64):
        super().__init__()
        self.num_fields, self.dim, self.product, self.outer_form = num_fields, dim, product, outer_form
        self.I, self.J = pairs(num_fields)
        if product != "inner" and outer_form == "kernel":
            p = len(self.I)
            self.K = Parameter(glorot_uniform(rng, dim, dim, (p, dim, dim), dtype))  # (P, D, D)

    @property
    def out_features(self) -> int:
        p, d = len(self.I), self.dim
        inner = p if self.product != "outer" else 0
        outer = 0 if self.product == "inner" else (p if self.outer_form == "kernel" else d * d)
        return inner + outer

    def forward(self, x0: Tensor) -> Tensor:
        nb = x0.shape[0]
        out = []
        if self.product != "outer" or self.outer_form == "kernel":
            rows = ops.take(x0, self.I, axis=1)                               # (B, P, D) e_i
            cols = ops.take(x0, self.J, axis=1)                               # (B, P, D) e_j
        if self.product != "outer":
            out.append(ops.sum(rows * cols, axis=2))                          # (B, P)
        if self.product != "inner" and self.outer_form == "kernel":
            left = slot_matmul(rows, self.K)                                  # (B, P, D) e_i^T K_ij
            out.append(ops.sum(left * cols, axis=2))                          # (B, P)
        if self.product != "inner" and self.outer_form == "sum":
            s = ops.sum(x0, axis=1)                                           # (B, D) f_S
            outer = ops.reshape(s, (nb, self.dim, 1)) * ops.reshape(s, (nb, 1, self.dim))  # (B, D, D)
            out.append(ops.reshape(outer, (nb, self.dim * self.dim)))        # (B, D^2)
        return out[0] if len(out) == 1 else ops.concatenate(out, axis=1)     # (B, out_features)

    def flops(self) -> int:
        f, d, p = self.num_fields, self.dim, len(self.I)
        total = 2 * d * p if self.product != "outer" else 0
        if self.product != "inner":
            total += p * (2 * d * d + 2 * d) if self.outer_form == "kernel" else f * d + d * d
        return total


class PNN(Baseline):
    r"""Product-based neural network (Qu et al., "Product-based Neural Networks for User
    Response Prediction", ICDM 2016, arXiv:1611.00144; Qu et al., TOIS 2018,
    arXiv:1807.00311).

    .. math::

        l_1 = \mathrm{relu}(l_z + l_p + b_1),\quad
        l_z^n = W_z^n \odot z,\ z = [f_1, \ldots, f_N],\quad
        l_p^n = W_p^n \odot p\ \text{(product layer)}

        \text{IPNN: } p_{ij} = \langle f_i, f_j \rangle,\qquad
        \text{OPNN: } p = f_\Sigma f_\Sigma^T,\ f_\Sigma = \textstyle\sum_i f_i

        l_2 = \mathrm{relu}(W_2 l_1 + b_2),\ \ldots,\qquad \hat y = \sigma(W_3 l_2 + b_3)

    W_z ⊙ z + W_p ⊙ p summed over n outputs is one linear layer on the concatenation
    [vec(X_0), p]: the first hidden layer of the :class:`~adaref.baselines.mlp.MLP`
    sees that concatenation (:class:`ProductLayer` gives p).

    Decisions:

    * which product (``product``): "both" (PNN* of the TOIS paper, inner and outer
      concatenated), reading §4.1.3's "PNN (with both inner product layer and outer
      product layer)"; "inner" and "outer" give IPNN and OPNN;
    * IPNN without the paper's rank-1 factorisation W_p^n = theta^n theta^n^T (an
      efficiency device): every pair i < j has its own weight, as in the authors' code
      (product-nets, PNN1) and DeepCTR; pairs i = j are left out, as there;
    * OPNN's outer product (``outer_form``): "kernel", p_ij = f_i^T K_ij f_j, one scalar
      per pair, as the current authors' code (product-nets, PNN2) and DeepCTR
      (``kernel_type="mat"``); "sum" is the ICDM paper's superposition, which the
      authors' first PNN2 computed;
    * hidden widths (128, 128), DeepCTR's default; no dropout.

    Shapes: ids (B, F) -> logit (B,). Parameters: ``embedding.weight``, ``products.K``
    (P, D, D) (outer kernel only), ``mlp.layers.k.*`` (the first (FD + |p|, u_1)),
    ``out.weight`` (u_K, 1), ``out.bias`` (1,).

    FLOPs per example: products (:class:`ProductLayer`) + MLP(FD + |p|; u) + 2 u_K + 1
    (output) + 1 (sigmoid), with |p| the product layer's width and u_0 = FD + |p|.

    >>> cfg = PNNConfig(dim=2, product="inner", hidden=(4,))
    >>> model = PNN(cfg, [3, 5, 2], rng=np.random.default_rng(0))
    >>> model(np.array([[1, 4, 0], [2, 0, 1]])).shape, model.flops_per_example()
    ((2,), 102)
    """

    name = "pnn"

    def __init__(self, config: PNNConfig, vocab_sizes: Sequence[int], *,
                 rng: np.random.Generator, dtype=np.float64):
        super().__init__(config, vocab_sizes, rng=rng, dtype=dtype)
        f, d = self.num_fields, self.dim
        self.embedding = self.make_embedding(rng)
        self.products = ProductLayer(f, d, config.product, config.outer_form, rng=rng, dtype=dtype)
        self.mlp = MLP(f * d + self.products.out_features, config.hidden, config.activation,
                       rng=rng, dtype=dtype)
        self.out = Linear(self.mlp.out_features, 1, rng=rng, dtype=dtype)

    def logit(self, ids: np.ndarray) -> Tensor:
        nb = len(ids)
        x0 = self.embed(ids)                                                  # (B, F, D)
        z = ops.concatenate([ops.reshape(x0, (nb, -1)), self.products(x0)], axis=1)  # (B, FD + |p|)
        return ops.reshape(self.out(self.mlp(z)), (nb,))                      # (B,)

    def flops_per_example(self) -> int:
        return self.products.flops() + self.mlp.flops() + 2 * self.mlp.out_features + 1 + 1
