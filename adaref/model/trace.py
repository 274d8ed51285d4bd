"""Named intermediates of one forward pass: the cross-check contract.

A :class:`Trace` passed to :meth:`AdaEnsemble.forward <adaref.model.AdaEnsemble.forward>`
records, in forward order, a copy of every quantity another implementation must
reproduce. The names are public (:mod:`adaref.crosscheck` writes them to golden files and
compares a port's dump against them); :data:`NAMES` lists them with their shapes and
equations, and ``tests/test_crosscheck_spec.py`` checks that a forward pass records
exactly these names. ``{l}`` is a layer 0..L-1, ``{e}`` an expert name, B the batch,
n_l the examples that reach layer l (B, except in the hard form), n_le those of them
routed to expert e, N the experts, L the layers, k the experts per example.

Without a trace (the default) the model records nothing and computes exactly what it
computes with one: recording copies values, it never changes them.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from adaref.tensor import Tensor

#: name pattern -> (shape, meaning). Forward order.
NAMES: dict[str, tuple[str, str]] = {
    "embedding": ("(B, F, D)", "X_0, eq. 1"),
    "controller.logits": ("(B, L)", "depth gate scores g, eqs. 7-9 of §3.5.1"),
    "controller.probs": ("(B, L)", "softmax of the depth scores, p_l(x)"),
    "controller.exit_depth": ("(B,) int64", "exit depth in 1..L: argmax of the scores, lowest depth on ties"),
    "layers.{l}.rows": ("(n_l,) int64", "batch rows that reach layer l (all B but in the hard form)"),
    "layers.{l}.gate.logits": ("(n_l, N)", "gate scores g, eq. 9"),
    "layers.{l}.gate.probs": ("(n_l, N)", "softmax of g over all N experts (eqs. 13-16)"),
    "layers.{l}.gate.topk": ("(n_l, k) int64", "the selected experts of eq. 11, ascending index"),
    "layers.{l}.gate.values": ("(n_l, N)", "G(x), eq. 10: softmax over the top-k scores, 0 elsewhere"),
    "layers.{l}.gate.weights": ("(n_l, N)", "the combine weights of eq. 12 (gate.combine option)"),
    "layers.{l}.experts.{e}.rows": ("(n_le,) int64", "positions (within layers.{l}.rows) routed to e"),
    "layers.{l}.experts.{e}.output": ("(n_le, F, D)", "E_e on its rows, eqs. 2-6"),
    "layers.{l}.combined": ("(n_l, F, D)", "y = sum_j w_j E_j, eq. 12"),
    "layers.{l}.output": ("(n_l, F, D)", "X_l = Norm(X_{l-1} + y)"),
    "estimators.{l}.logit": ("(n_l,) or (n_exit,)", "eq. 17 before the sigmoid; in the hard form only "
                             "the examples exiting at l (empty if none does)"),
    "logit": ("(B,)", "the predicting estimator's logit (hard and full forms only)"),
    "prob": ("(B,)", "y_hat: sigmoid(logit), or the depth mixture sum_l p_l y_hat_l (soft/straight-through)"),
    "loss.expert": ("()", "eq. 16 summed over layers (lambda_1 term, unweighted)"),
    "loss.depth": ("()", "eq. 16 over depths (lambda_2 term, unweighted)"),
    "loss.z": ("()", "router z-loss mean(logsumexp(g)^2) summed over gates (upstream; weight z)"),
    "loss.log_loss": ("()", "eq. 18 log-loss: mean softplus(z) - y z from the logit (hard, full); "
                      "from prob clipped to [1e-7, 1 - 1e-7] (soft, straight-through)"),
    "loss.total": ("()", "eq. 18: log_loss + lambda_1 expert + lambda_2 depth (+ z z-loss)"),
}


class Trace:
    """An ordered record ``name -> np.ndarray``; :meth:`scope` gives a view that
    prefixes names (``trace.scope("layers.0")("gate.logits", g)`` records
    ``layers.0.gate.logits``). Recording a name twice is an error (a contract bug).

    >>> t = Trace()
    >>> t("embedding", np.zeros((2, 3, 4))); t.scope("layers.0")("rows", np.arange(2))
    >>> list(t.values)
    ['embedding', 'layers.0.rows']
    """

    def __init__(self, values: dict[str, np.ndarray] | None = None, prefix: str = ""):
        self.values: dict[str, np.ndarray] = {} if values is None else values
        self.prefix = prefix

    def scope(self, prefix: str) -> "Trace":
        return Trace(self.values, f"{self.prefix}{prefix}.")

    def __call__(self, name: str, value: Any) -> None:
        key = self.prefix + name
        if key in self.values:
            raise KeyError(f"Trace: {key!r} recorded twice")
        data = value.data if isinstance(value, Tensor) else value
        self.values[key] = np.array(data, copy=True)


def scope(trace: Trace | None, prefix: str) -> Trace | None:
    """``trace.scope(prefix)``, or None without a trace."""
    return None if trace is None else trace.scope(prefix)


def topk_indices(mask: np.ndarray) -> np.ndarray:
    """(B, N) top-k mask -> (B, k) int64 selected indices in ascending order."""
    b, n = mask.shape
    k = int(mask[0].sum()) if b else 0
    return np.nonzero(mask)[1].reshape(b, k).astype(np.int64)
