"""The depth-selecting controller (§3.5; docs/decisions.md rows 18-19).

The depth-selecting network has the noisy gating network's form (§3.5.1) with L
choices, one per depth; each example exits at the depth with the largest score (top-1,
lowest depth on ties). Training forms (``ControllerConfig.train_form``, row 18):

* ``expected`` (paper preset): every example runs all L layers and the task loss is the
  hard exit's loss averaged over the depth gate's distribution,
  sum_l p_l(x) LogLoss(y, y_hat_l(x)) with p the depth gate's full softmax: the depth gate
  learns from the loss at each depth, and each estimator from its own predictions,
  weighted by how often it is used (the estimator serving reads has p_l >= 1/L there).
  The reported prediction is the soft mixture below.
* ``soft``: the prediction is the mixture y_hat = sum_l p_l(x) y_hat_l(x) and the loss is
  the mixture's; the estimators then learn as an ensemble, and one the depth gate
  weights little is not trained to predict alone (its hard exit can be far worse than
  the mixture).
* ``straight_through``: the forward value is the hard exit's prediction y_hat_{l*}, with
  mixture weights onehot + p - stop_gradient(p): the depth gate gets the soft mixture's
  gradient (taken at the hard prediction), every other parameter exactly the hard
  form's.
* ``hard`` (the authors' code): the hard exit of Algorithm 1, unweighted: the depth gate
  learns only from its regularisers.

Evaluation and serving always use the hard exit with dynamic propagation (Algorithm 1,
:func:`adaref.model.adaensemble.AdaEnsemble.forward`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adaref import ops
from adaref.model.config import ControllerConfig
from adaref.model.gate import NoisyCosineGate
from adaref.nn import Module
from adaref.tensor import Tensor


@dataclass
class DepthChoice:
    """logits (B, L), probs = softmax(logits) (B, L), mask (B, L) top-1, exit_depth (B,) in 1..L."""

    logits: Tensor
    probs: Tensor
    mask: np.ndarray

    @property
    def exit_depth(self) -> np.ndarray:
        return np.argmax(self.mask, axis=1) + 1


class DepthController(Module):
    """DepthG(x) of §3.5.1 over X_0 (B, F, D): parameters are those of ``gate``
    (a :class:`NoisyCosineGate` with L depth embeddings)."""

    EQUATION = "§3.5.1 (eqs. 7-9 over depths)"

    def __init__(self, config: ControllerConfig, in_features: int, num_layers: int, *,
                 rng: np.random.Generator, dtype=np.float64):
        super().__init__()
        self.config = config
        self.gate = NoisyCosineGate(config.gate, in_features, num_layers, rng=rng, dtype=dtype)

    def forward(self, x0: Tensor, rng: np.random.Generator | None = None) -> DepthChoice:
        g = self.gate.logits(x0, rng)                        # (B, L)
        return DepthChoice(g, ops.softmax(g, axis=-1), ops.topk_mask(g, 1))

    def flops(self) -> int:
        """Per example: the depth gate's scores, its softmax (5L - 1) and the top-1 choice
        (L - 1 comparisons)."""
        n = self.gate.num_choices
        return self.gate.logit_flops() + (5 * n - 1) + self.gate.topk_flops(n, 1)
