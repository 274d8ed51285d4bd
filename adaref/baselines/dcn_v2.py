"""DCN-V2: the improved Deep & Cross Network (§4.1.3, ref. [32])."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from adaref import ops
from adaref.baselines.base import (Baseline, BaselineConfig, check_choice, check_positive,
                                   check_units)
from adaref.baselines.mlp import MLP
from adaref.config import ConfigError
from adaref.experts.base import check_activation
from adaref.experts.cross import Cross, CrossConfig
from adaref.nn import Linear, ModuleList
from adaref.tensor import Tensor


@dataclass(frozen=True)
class DCNV2Config(BaselineConfig):
    """DCN-V2: cross depth, deep widths and how the two are combined."""

    cross_layers: int = 2                 # L_c, full-rank cross layers (DeepCTR's default); 0: deep only
    hidden: tuple[int, ...] = (128, 128)  # deep network (DeepCTR's default); (): cross only
    activation: str = "relu"              # activation of the deep network
    structure: Literal["parallel", "stacked"] = "parallel"
    # ^ the paper's two structures (Fig. 1): cross and deep side by side, concatenated
    #   (DeepCTR's and the DCN paper's), or the deep network on the cross network's output

    def __post_init__(self):
        super().__post_init__()
        check_positive("DCNV2Config", "cross_layers", self.cross_layers, minimum=0)
        check_units("DCNV2Config", "hidden", self.hidden)
        check_activation("DCNV2Config", "activation", self.activation)
        check_choice("DCNV2Config", "structure", self.structure, ("parallel", "stacked"))
        if self.cross_layers == 0 and not self.hidden:
            raise ConfigError("DCNV2Config: cross_layers = 0 and hidden = () leave no network")


class DCNV2(Baseline):
    r"""DCN-V2 (Wang et al., "DCN V2: Improved Deep & Cross Network and Practical Lessons
    for Web-scale Learning to Rank Systems", WWW 2021, arXiv:2008.13535, eq. 1).

    .. math::

        x_{l+1} = x_0 \odot (W_l x_l + b_l) + x_l,\qquad W_l \in \mathbb{R}^{FD \times FD}

    on x_0 = vec(X_0), then a ReLU deep network, and
    y_hat = sigma(w_logit^T x_final + b) with

    * ``structure="parallel"`` (default): x_final = [x_{L_c}, h_{L_d}(x_0)];
    * ``structure="stacked"``: x_final = h_{L_d}(x_{L_c}).

    Each cross layer is adaref's Cross expert (eq. 6 of AdaEnsemble) with the bias
    inside, ``CrossConfig(bias="inside")``, which computes exactly x_0 * (x_l W + b)
    with W stored (in, out), plus the residual x_l. Decisions: the full-rank W of the
    paper's DCN-V2 (its low-rank mixture DCN-Mix is not built); 2 cross layers and a
    (128, 128) deep network in parallel, DeepCTR's defaults (its DCN with
    ``parameterization="matrix"``); no first-order term (the paper has none).

    Shapes: ids (B, F) -> logit (B,). Parameters: ``embedding.weight``,
    ``cross.l.W`` (FD, FD), ``cross.l.b`` (FD,), ``mlp.layers.k.*``, ``out.weight``,
    ``out.bias`` (1,).

    FLOPs per example: L_c (2 (FD)^2 + 2 FD + FD) (Cross expert and residual)
    + MLP(n; u) + 2 n_out + 1 (output) + 1 (sigmoid), where the MLP's input n is FD and
    n_out = FD + u_K in parallel, n_out = u_K (FD without a deep network) when stacked.

    >>> cfg = DCNV2Config(dim=2, cross_layers=1, hidden=(4,))
    >>> model = DCNV2(cfg, [3, 5, 2], rng=np.random.default_rng(0))
    >>> model(np.array([[1, 4, 0], [2, 0, 1]])).shape, model.flops_per_example()
    ((2,), 168)
    """

    name = "dcn_v2"

    def __init__(self, config: DCNV2Config, vocab_sizes: Sequence[int], *,
                 rng: np.random.Generator, dtype=np.float64):
        super().__init__(config, vocab_sizes, rng=rng, dtype=dtype)
        f, d = self.num_fields, self.dim
        self.embedding = self.make_embedding(rng)
        self.cross = ModuleList([Cross(CrossConfig(bias="inside"), f, d, rng=rng, dtype=dtype)
                                 for _ in range(config.cross_layers)])
        self.mlp = MLP(f * d, config.hidden, config.activation, rng=rng, dtype=dtype)
        if config.structure == "stacked":
            width = self.mlp.out_features
        else:
            width = (f * d if config.cross_layers else 0) + (self.mlp.out_features if config.hidden else 0)
        self.out = Linear(width, 1, rng=rng, dtype=dtype)

    def cross_network(self, x0: Tensor) -> Tensor:
        """x_{L_c} (B, F, D) from X_0 (B, F, D)."""
        x = x0
        for layer in self.cross:
            x = layer(x, x0) + x                                              # (B, F, D)
        return x

    def logit(self, ids: np.ndarray) -> Tensor:
        nb = len(ids)
        x0 = self.embed(ids)                                                  # (B, F, D)
        xc = ops.reshape(self.cross_network(x0), (nb, -1))                    # (B, FD)
        if self.config.structure == "stacked":
            z = self.mlp(xc)                                                  # (B, u_K)
        else:
            parts = ([xc] if len(self.cross) else []) + \
                ([self.mlp(ops.reshape(x0, (nb, -1)))] if self.config.hidden else [])
            z = ops.concatenate(parts, axis=1)                                # (B, FD + u_K)
        return ops.reshape(self.out(z), (nb,))                                # (B,)

    def flops_per_example(self) -> int:
        fd = self.num_fields * self.dim
        cross = sum(layer.flops() + fd for layer in self.cross)
        return cross + self.mlp.flops() + 2 * self.out.in_features + 1 + 1
