"""Bi-level optimisation (§3.6.2, Algorithm 2; docs/decisions.md rows 21-22).

alpha = every gating parameter (each layer's expert gate and the depth controller:
FFNs, expert/depth embeddings, temperatures); W = everything else (embedding, experts,
norms, estimators). Each outer step updates alpha on a validation mini-batch by
descending

    grad_alpha L_val(W - xi grad_W L_train(W, alpha), alpha)

then W for t steps on training mini-batches. xi = 0 is the first-order form
(grad_alpha L_val(W, alpha)). For xi > 0 (DARTS, Liu et al. 2018, eq. 7-8), the chain
rule through the unrolled step gives

    grad_alpha L_val(W', alpha) - xi H v,   W' = W - xi grad_W L_train(W, alpha),
    v = grad_W' L_val(W', alpha),   H v = grad^2_{alpha,W} L_train(W, alpha) v

and H v is approximated by central differences of the training gradient:

    H v ~ (grad_alpha L_train(W + eps v, alpha) - grad_alpha L_train(W - eps v, alpha)) / (2 eps),
    eps = 0.01 / ||v||   (DARTS' choice).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from adaref.nn import Module, Parameter
from adaref.tensor import Tensor, dense

Loss = Callable[[], Tensor]


def is_gate_parameter(name: str) -> bool:
    """alpha: the parameters of every gating network (row 21)."""
    return ".gate." in name or name.startswith("gate.") or name.startswith("controller.")


def split_parameters(model: Module) -> dict[str, list[tuple[str, Parameter]]]:
    """{"embedding": the embedding table, "weights": the rest of W, "gates": alpha}."""
    groups: dict[str, list[tuple[str, Parameter]]] = {"embedding": [], "weights": [], "gates": []}
    for name, p in model.named_parameters():
        key = "gates" if is_gate_parameter(name) else "embedding" if name.startswith("embedding.") else "weights"
        groups[key].append((name, p))
    return groups


def _grads(loss_fn: Loss, params: list[Parameter]) -> list[np.ndarray | None]:
    """Each parameter's gradient of the loss, None where the loss does not reach it.
    The backward pass is pruned to ``params`` (no other parameter's gradient is formed)."""
    for p in params:
        p.grad = None
    loss_fn().backward(inputs=params)
    return [None if p.grad is None else dense(p.grad) for p in params]


def _combine(d_alpha, g_plus, g_minus, xi: float, eps: float):
    """d_alpha - xi (g_plus - g_minus) / (2 eps) for one parameter; None if all are None
    (a gate no example reached: no gradient, as with xi = 0), absent parts read as 0."""
    if d_alpha is None and g_plus is None and g_minus is None:
        return None
    zero = next(g for g in (d_alpha, g_plus, g_minus) if g is not None) * 0
    d_alpha, g_plus, g_minus = (zero if g is None else g for g in (d_alpha, g_plus, g_minus))
    return d_alpha - xi * (g_plus - g_minus) / (2 * eps)


def darts_gate_gradient(model: Module, train_loss: Loss, val_loss: Loss, xi: float,
                        eps_scale: float = 0.01) -> list[np.ndarray]:
    """The alpha gradient of Algorithm 2's line 3, in the order of ``split_parameters``'
    "gates" list (None for a gate parameter the losses do not reach, for any xi).
    ``train_loss`` and ``val_loss`` build the loss on a fixed training and validation
    batch (same noise on every call). Parameters are restored exactly.
    """
    groups = split_parameters(model)
    w = [p for _, p in groups["embedding"] + groups["weights"]]
    alpha = [p for _, p in groups["gates"]]
    every = w + alpha
    original = [p.data.copy() for p in w]
    try:
        if xi == 0:
            return _grads(val_loss, alpha)
        g_train = _grads(train_loss, w)
        for p, g in zip(w, g_train):                        # W' = W - xi grad_W L_train
            if g is not None:
                p.data -= xi * g.astype(p.dtype)
        g_val = _grads(val_loss, every)
        v, d_alpha = g_val[:len(w)], g_val[len(w):]
        norm = np.sqrt(sum(float(np.sum(x.astype(np.float64) ** 2)) for x in v if x is not None))
        if norm == 0:
            return d_alpha
        eps = eps_scale / norm
        hv = []
        for sign in (1.0, -1.0):
            for p, o, vi in zip(w, original, v):            # W +/- eps v
                p.data[...] = o if vi is None else o + sign * eps * vi.astype(p.dtype)
            hv.append(_grads(train_loss, alpha))
        return [_combine(da, gp, gm, xi, eps) for da, gp, gm in zip(d_alpha, hv[0], hv[1])]
    finally:
        for p, o in zip(w, original):
            p.data[...] = o
        for p in every:
            p.grad = None
