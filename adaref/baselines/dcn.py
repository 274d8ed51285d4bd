"""DCN: the Deep & Cross Network (§4.1.3, ref. [31])."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from adaref import ops
from adaref.baselines.base import Baseline, BaselineConfig, check_positive, check_units
from adaref.baselines.mlp import MLP
from adaref.config import ConfigError
from adaref.experts.base import check_activation
from adaref.nn import Linear, Module, ModuleList, Parameter
from adaref.nn.init import glorot_uniform
from adaref.tensor import Tensor


@dataclass(frozen=True)
class DCNConfig(BaselineConfig):
    """DCN: the depth of the cross network and the widths of the deep network."""

    cross_layers: int = 2                 # L_c, cross layers (DeepCTR's default); 0: the deep network only
    hidden: tuple[int, ...] = (128, 128)  # deep network (DeepCTR's default); (): the cross network only
    activation: str = "relu"              # activation of the deep network (the paper: ReLU)

    def __post_init__(self):
        super().__post_init__()
        check_positive("DCNConfig", "cross_layers", self.cross_layers, minimum=0)
        check_units("DCNConfig", "hidden", self.hidden)
        check_activation("DCNConfig", "activation", self.activation)
        if self.cross_layers == 0 and not self.hidden:
            raise ConfigError("DCNConfig: cross_layers = 0 and hidden = () leave no network")


class CrossLayer(Module):
    r"""One cross layer of DCN: x_{l+1} = x_0 x_l^T w_l + b_l + x_l.

    x_0, x_l (B, n) -> (B, n); ``w`` (n,) Glorot uniform (fan-in n, fan-out 1), ``b`` (n,)
    zeros. x_l^T w_l is a scalar per example, so the layer costs O(n): FLOPs per example
    2n (the dot product) + n (times x_0) + n (+ b_l) + n (+ x_l) = 5n.
    """

    PARAM_LAYOUTS = {"w": "(n,) the weight vector w_l", "b": "(n,) the bias b_l"}

    def __init__(self, width: int, *, rng: np.random.Generator, dtype=np.float64):
        super().__init__()
        self.width = width
        self.w = Parameter(glorot_uniform(rng, width, 1, (width,), dtype))    # (n,)
        self.b = Parameter(np.zeros(width, dtype=dtype))                      # (n,)

    def forward(self, x: Tensor, x0: Tensor) -> Tensor:
        s = ops.reshape(ops.matmul(x, self.w), (x.shape[0], 1))               # (B, 1) = x_l^T w_l
        return x0 * s + self.b + x                                            # (B, n)

    def flops(self) -> int:
        return 5 * self.width


class DCN(Baseline):
    r"""Deep & Cross Network (Wang, Fu, Fu and Wang, "Deep & Cross Network for Ad Click
    Predictions", ADKDD 2017, arXiv:1708.05123).

    .. math::

        x_0 = \mathrm{vec}(X_0) \in \mathbb{R}^{FD}\ \text{(embedding and stacking layer)}

        x_{l+1} = x_0 x_l^T w_l + b_l + x_l\ \text{(cross network)}

        h_{l+1} = \mathrm{relu}(W_l h_l + b_l),\ h_0 = x_0\ \text{(deep network)}

        \hat y = \sigma(w_{logit}^T [x_{L_1}, h_{L_2}] + b_{logit})\ \text{(combination output layer)}

    The cross and deep networks run in parallel on x_0 and their outputs are
    concatenated (the paper's only structure). Decision (sizes): the paper tunes them
    per data set; DeepCTR's defaults, 2 cross layers and a deep network of (128, 128),
    are taken. Not the Cross expert (eq. 6 of AdaEnsemble, a full FD x FD matrix): DCN's
    w_l is a vector (:class:`CrossLayer`); DCN-V2 (:mod:`adaref.baselines.dcn_v2`) is
    the full-matrix form. Unlike DeepCTR's current DCN, no first-order (linear) term is
    added: the paper has none.

    Shapes: ids (B, F) -> logit (B,). Parameters: ``embedding.weight``,
    ``cross.l.w``/``b`` (FD,), ``mlp.layers.k.*``, ``out.weight`` (FD + u_K, 1),
    ``out.bias`` (1,).

    FLOPs per example: 5 FD L_c + MLP(FD; u) + 2 (FD + u_K) + 1 (output) + 1 (sigmoid).

    >>> cfg = DCNConfig(dim=2, cross_layers=2, hidden=(4,))
    >>> model = DCN(cfg, [3, 5, 2], rng=np.random.default_rng(0))
    >>> model(np.array([[1, 4, 0], [2, 0, 1]])).shape, model.flops_per_example()
    ((2,), 138)
    """

    name = "dcn"

    def __init__(self, config: DCNConfig, vocab_sizes: Sequence[int], *,
                 rng: np.random.Generator, dtype=np.float64):
        super().__init__(config, vocab_sizes, rng=rng, dtype=dtype)
        fd = self.num_fields * self.dim
        self.embedding = self.make_embedding(rng)
        self.cross = ModuleList([CrossLayer(fd, rng=rng, dtype=dtype)
                                 for _ in range(config.cross_layers)])
        self.mlp = MLP(fd, config.hidden, config.activation, rng=rng, dtype=dtype)
        width = (fd if config.cross_layers else 0) + (self.mlp.out_features if config.hidden else 0)
        self.out = Linear(width, 1, rng=rng, dtype=dtype)

    def logit(self, ids: np.ndarray) -> Tensor:
        x0 = ops.reshape(self.embed(ids), (len(ids), -1))                     # (B, FD)
        parts = []
        if len(self.cross):
            x = x0
            for layer in self.cross:
                x = layer(x, x0)                                              # (B, FD)
            parts.append(x)
        if self.config.hidden:
            parts.append(self.mlp(x0))                                        # (B, u_K)
        z = parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=1)   # (B, FD + u_K)
        return ops.reshape(self.out(z), (len(ids),))                          # (B,)

    def flops_per_example(self) -> int:
        return (sum(layer.flops() for layer in self.cross) + self.mlp.flops()
                + 2 * self.out.in_features + 1 + 1)
