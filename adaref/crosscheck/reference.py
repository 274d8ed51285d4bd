"""adaref's own answers for the cross-check: named intermediates and eq. 18's gradients.

:func:`forward` runs the model in evaluation mode (no jitter: eq. 7's noise is random,
so it is left out of every cross-check) in a given depth ``form`` with a
:class:`~adaref.model.trace.Trace`, adds eq. 18's log-loss and total, and returns the
names of :data:`adaref.model.trace.NAMES`. :func:`gradients` differentiates the total
of eq. 18 in that form and returns ``grad.<parameter>`` for every parameter (adaref's
layout) and ``grad.embedding`` (with respect to X_0).

:class:`AdarefPort` wraps both in the adapter protocol of :mod:`adaref.crosscheck.adapter`,
so adaref itself is a port that the property suite can run (a self-check of the suite).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from adaref.model import AdaEnsemble, ModelConfig
from adaref.model.trace import Trace
from adaref.tensor import Tensor, dense, no_grad
from adaref.training.objective import task_loss


@dataclass(frozen=True)
class Lambdas:
    """The weights of eq. 18: lambda_1 (expert term), lambda_2 (depth term), z (z-loss)."""

    lambda1: float = 0.01
    lambda2: float = 0.01
    z: float = 0.0

    def to_dict(self) -> dict:
        return {"lambda1": self.lambda1, "lambda2": self.lambda2, "z": self.z}


def _objective(out, labels, lambdas: Lambdas, trace: Trace) -> Tensor:
    task = task_loss(out, labels)
    trace("loss.log_loss", task)
    total = task + out.expert_loss * lambdas.lambda1
    if out.depth_loss is not None:
        total = total + out.depth_loss * lambdas.lambda2
    if lambdas.z > 0 and out.z_loss is not None:
        total = total + out.z_loss * lambdas.z
    trace("loss.total", total)
    return total


def forward(model: AdaEnsemble, ids: np.ndarray, labels: np.ndarray, *, k: int, form: str,
            lambdas: Lambdas = Lambdas()) -> dict[str, np.ndarray]:
    """Every named intermediate of one forward pass in ``form`` (no graph)."""
    model.eval()
    trace = Trace()
    with no_grad():
        out = model(ids, k=k, form=form, trace=trace)
        _objective(out, labels, lambdas, trace)
    return trace.values


def gradients(model: AdaEnsemble, ids: np.ndarray, labels: np.ndarray, *, k: int, form: str,
              lambdas: Lambdas = Lambdas()) -> dict[str, np.ndarray]:
    """d(eq. 18 total)/d(every parameter) and d/d X_0, as ``grad.<name>`` (a parameter
    no loss reaches gets zeros) and ``grad.embedding``."""
    model.eval()
    model.zero_grad()
    trace = Trace()
    captured: dict[str, Tensor] = {}
    original = model.embedding.forward

    def keep_x0(ids_):
        # X_0 + 0: the same values (x + 0.0 == x), and the zero leaf's gradient is d/dX_0
        x0 = original(ids_)
        captured["probe"] = probe = Tensor(np.zeros(x0.shape, x0.dtype), requires_grad=True)
        return x0 + probe

    model.embedding.forward = keep_x0
    try:
        out = model(ids, k=k, form=form, trace=trace)
        _objective(out, labels, lambdas, trace).backward()
    finally:
        del model.embedding.forward
    grads = {}
    for name, p in model.named_parameters():
        g = p.grad
        grads[f"grad.{name}"] = np.zeros(p.shape, p.dtype) if g is None else np.array(dense(g))
    probe = captured["probe"]
    grads["grad.embedding"] = (np.zeros(probe.shape, probe.dtype) if probe.grad is None
                               else np.array(dense(probe.grad)))
    model.zero_grad()
    return {n: grads[n] for n in backward_order(list(grads))}


def backward_order(names: list[str]) -> list[str]:
    """Gradient names in the order backpropagation computes them: the estimators (last
    layer first), the layers from the last to the first (norm, experts, gate), the
    controller, d/dX_0 (``grad.embedding``), the embedding table. A wrong VJP corrupts
    its own gradients and everything before it in the network, never after, so the first
    failing name in this order is where the defect sits.

    >>> backward_order(["grad.embedding.weight", "grad.layers.0.gate.tau", "grad.layers.1.norm.gain",
    ...                 "grad.estimators.0.linear.bias", "grad.embedding"])
    ['grad.estimators.0.linear.bias', 'grad.layers.1.norm.gain', 'grad.layers.0.gate.tau', 'grad.embedding', 'grad.embedding.weight']
    """
    def key(name: str):
        parts = name.split(".")[1:]
        if parts[0] == "estimators":
            return (0, -int(parts[1]), 0)
        if parts[0] == "layers":
            return (1, -int(parts[1]), {"norm": 0, "experts": 1, "gate": 2}.get(parts[2], 1))
        if parts[0] == "controller":
            return (2, 0, 0)
        return (3, 0, 0) if name == "grad.embedding" else (4, 0, 0)

    return sorted(names, key=key)


class AdarefPort:
    """adaref in the adapter protocol (:class:`adaref.crosscheck.adapter.Port`)."""

    def __init__(self, config: ModelConfig, vocab_sizes: Sequence[int],
                 weights: dict[str, np.ndarray], dtype):
        self.model = AdaEnsemble(config, vocab_sizes, rng=np.random.default_rng(0), dtype=dtype)
        self.model.load_state_dict({n: np.asarray(w, dtype=dtype) for n, w in weights.items()})

    def forward(self, ids, labels, *, k, form, lambdas):
        return forward(self.model, ids, labels, k=k, form=form, lambdas=Lambdas(*lambdas))

    def gradients(self, ids, labels, *, k, form, lambdas):
        return gradients(self.model, ids, labels, k=k, form=form, lambdas=Lambdas(*lambdas))


def build(config, vocab_sizes, weights, dtype) -> AdarefPort:
    """Factory for ``python -m adaref.crosscheck test adaref.crosscheck.reference:build``."""
    return AdarefPort(config, vocab_sizes, weights, dtype)
