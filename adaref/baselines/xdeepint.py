"""xDeepInt: polynomial interactions with subspace crossing (§4.1.3, ref. [35])."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from adaref import ops
from adaref.baselines.base import Baseline, BaselineConfig, check_positive
from adaref.config import ConfigError
from adaref.experts.pin import PIN, PINConfig
from adaref.nn import ModuleList, Parameter
from adaref.nn.init import glorot_uniform
from adaref.tensor import Tensor


@dataclass(frozen=True)
class XDeepIntConfig(BaselineConfig):
    """xDeepInt: the number of PIN layers and of subspaces."""

    layers: int = 4                       # L, PIN layers (the authors' Criteo script: 4)
    subspaces: int | None = None          # h, pieces per field; None = D, bit-wise (the authors' 16 = D)

    def __post_init__(self):
        super().__post_init__()
        check_positive("XDeepIntConfig", "layers", self.layers)
        if self.subspaces is not None:
            check_positive("XDeepIntConfig", "subspaces", self.subspaces)
            if self.dim % self.subspaces:
                raise ConfigError(f"XDeepIntConfig: subspaces h={self.subspaces} does not divide "
                                  f"dim D={self.dim}")


class XDeepInt(Baseline):
    r"""xDeepInt (Yan and Li, "xDeepInt: a Hybrid Architecture for Modeling the
    Vector-wise and Bit-wise Feature Interactions", DLP-KDD 2020).

    .. math::

        X_l = f(W_{l-1}, X_0) \circ X_{l-1} + X_{l-1},\qquad f(W, X_0) = W X_0
        \quad\text{(polynomial interaction layer, PIN)}

    with subspace crossing: each field's D-vector is cut into h pieces of D/h and W_l
    (F h x F h) mixes the F h pieces (h = 1 vector-wise, h = D bit-wise). The layer is
    adaref's PIN expert (eq. 5 of AdaEnsemble, ``PINConfig(subspaces=h)``), which is
    exactly X_{l-1} ∘ (W X_0) in that piece layout, plus the residual X_{l-1}.

    Output (the authors' code): a weight per field shared across the D positions,

    .. math::

        \hat y = \sigma\Big(\sum_{f=1}^{F} w_f \sum_{d=1}^{D} X_L[f, d] + b\Big)

    Decisions: 4 layers, h = D (bit-wise), linear f, residual and no DNN, the authors'
    Criteo script (``num_interaction_layer`` 4, ``num_sub_spaces`` 16 with D = 16,
    ``activation_fn`` linear, ``residual`` True); the authors' output adds its bias
    once per position (D b), adaref adds one b, the same model up to that constant
    factor. No first-order term (the authors' model has none).

    Shapes: ids (B, F) -> logit (B,). Parameters: ``embedding.weight``, ``pin.l.W``
    (F h, F h), ``w`` (F,) Glorot uniform (fan-in F, fan-out 1), ``b`` (1,) zero.

    FLOPs per example: L (2 F^2 h D + F D + F D) (PIN expert, residual) + 2 F D (the
    weighted sum) + 1 (bias) + 1 (sigmoid).

    >>> cfg = XDeepIntConfig(dim=2, layers=1, subspaces=1)
    >>> model = XDeepInt(cfg, [3, 5, 2], rng=np.random.default_rng(0))
    >>> model(np.array([[1, 4, 0], [2, 0, 1]])).shape, model.flops_per_example()
    ((2,), 62)
    """

    name = "xdeepint"
    PARAM_LAYOUTS = {"w": "(F,) one output weight per field", "b": "(1,) output bias"}

    def __init__(self, config: XDeepIntConfig, vocab_sizes: Sequence[int], *,
                 rng: np.random.Generator, dtype=np.float64):
        super().__init__(config, vocab_sizes, rng=rng, dtype=dtype)
        f, d = self.num_fields, self.dim
        self.embedding = self.make_embedding(rng)
        self.pin = ModuleList([PIN(PINConfig(subspaces=config.subspaces), f, d, rng=rng, dtype=dtype)
                               for _ in range(config.layers)])
        self.w = Parameter(glorot_uniform(rng, f, 1, (f,), dtype))            # (F,)
        self.b = Parameter(np.zeros(1, dtype=dtype))                          # (1,)

    def logit(self, ids: np.ndarray) -> Tensor:
        x0 = self.embed(ids)                                                  # (B, F, D)
        x = x0
        for layer in self.pin:
            x = layer(x, x0) + x                                              # (B, F, D)
        weighted = x * ops.reshape(self.w, (1, self.num_fields, 1))           # (B, F, D)
        return ops.sum(weighted, axis=(1, 2)) + self.b                        # (B,)

    def flops_per_example(self) -> int:
        fd = self.num_fields * self.dim
        return sum(layer.flops() + fd for layer in self.pin) + 2 * fd + 1 + 1
