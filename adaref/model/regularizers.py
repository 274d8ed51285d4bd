"""Load regularisers of the routers (§3.3.4, eqs. 13-16; §3.5.1; docs/decisions.md row 16).

    L_balance      = N * sum_j f_j P_j                                 (13, without lambda)
    f_j            = (1/B) sum_x 1{argmax p(x) = j}                    (14)
    P_j            = (1/B) sum_x p_j(x)                                (15)
    L_distribution = sum_j f_j P_j / w_j                               (16, without lambda)

lambda is applied once, in the objective (eq. 18: lambda_1, lambda_2). f_j is a count:
it carries no gradient; the gradient reaches the router through P_j only. With
w_j = 1/N, eq. 16 equals eq. 13. The same functions serve the depth gate, with L
depths in place of N experts.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

from adaref import ops
from adaref.tensor import Tensor


def load_fractions(probs: Tensor, mask: np.ndarray,
                   mode: Literal["argmax", "topk"] = "argmax") -> np.ndarray:
    """f (N,): eq. 14's fraction of examples whose argmax p(x) is j (lowest index on
    ties), or (``topk``, the authors' code) the fraction with j in the example's top-k set.

    >>> import numpy as np
    >>> from adaref import Tensor
    >>> p = Tensor(np.array([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4]]))
    >>> load_fractions(p, np.array([[1, 1, 0], [0, 1, 1]], bool)).tolist()
    [0.5, 0.5, 0.0]
    >>> load_fractions(p, np.array([[1, 1, 0], [0, 1, 1]], bool), "topk").tolist()
    [0.5, 1.0, 0.5]
    """
    b, n = probs.shape
    if b == 0:
        return np.zeros(n)
    if mode == "argmax":
        return np.bincount(np.argmax(probs.data, axis=1), minlength=n) / b
    if mode == "topk":
        return mask.mean(axis=0)
    raise ValueError(f"load_fractions: mode must be 'argmax' or 'topk', got {mode!r}")


def distribution_loss(probs: Tensor, fractions: np.ndarray, prior: np.ndarray | None = None) -> Tensor:
    """Eq. 16: sum_j f_j P_j / w_j, with P_j the batch mean of p_j(x); ``prior`` w
    defaults to uniform 1/N, which makes this eq. 13's N sum_j f_j P_j."""
    n = probs.shape[1]
    prior = np.full(n, 1.0 / n) if prior is None or len(prior) == 0 else np.asarray(prior, float)
    P = ops.mean(probs, axis=0)                                       # (N,), eq. 15
    return ops.sum(P * (fractions / prior).astype(probs.dtype))


def balance_loss(probs: Tensor, fractions: np.ndarray) -> Tensor:
    """Eq. 13: N sum_j f_j P_j (Switch Transformer's load-balancing loss)."""
    n = probs.shape[1]
    return ops.sum(ops.mean(probs, axis=0) * fractions.astype(probs.dtype)) * float(n)


def z_loss(logits: Tensor) -> Tensor:
    """Router z-loss (ST-MoE; the authors' code adds it on every gate): mean_x logsumexp(g(x))^2."""
    m = Tensor(np.max(logits.data, axis=-1, keepdims=True))           # shift only: no gradient needed
    lse = ops.log(ops.sum(ops.exp(logits - m), axis=-1)) + m.reshape(-1)   # (B,)
    return ops.mean(lse * lse)
