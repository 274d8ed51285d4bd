"""Exact evaluation metrics of §4.1.2: AUC and LogLoss.

Both take 1-D arrays of equal length ``(B,)``: ``labels`` in {0, 1} and ``scores``
(any real numbers, for AUC) or ``probs`` (probabilities, for log-loss).

Decision: adaref computes the **exact** rank-based AUC (the Mann-Whitney U statistic
with tied scores given half credit), not the authors' approximation from 10,000
thresholds (``docs/decisions.md``, "Other facts").

>>> auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
0.75
>>> round(log_loss([0, 1], [0.25, 0.75]), 6)
0.287682
"""
from __future__ import annotations

import numpy as np

__all__ = ["auc", "log_loss"]

#: How far outside [0, 1] a probability may lie and still be read as one (then clipped):
#: float32 rounding of a mixture such as sum_l p_l sigmoid(z_l) can give 1 + 1.2e-7.
PROB_SLACK = 1e-6


def _as_floats(name: str, values) -> np.ndarray:
    """``values`` flattened to (B,) float64; a clear error naming ``name`` when they are not numbers."""
    try:
        return np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numbers ({e})") from None


def _as_labels(labels, n_expected: int | None = None) -> np.ndarray:
    y = _as_floats("labels", labels)
    if n_expected is not None and y.shape[0] != n_expected:
        raise ValueError(f"labels has {y.shape[0]} entries but the scores have {n_expected}")
    if not np.all((y == 0) | (y == 1)):
        bad = y[(y != 0) & (y != 1)][0]
        raise ValueError(f"labels must be 0 or 1, got {float(bad)}")
    return y


def auc(labels, scores) -> float:
    """Area under the ROC curve, exact: P(score of a positive > score of a negative).

    A positive-negative pair with equal scores counts 1/2 (ties averaged through
    mid-ranks). ``labels`` and ``scores`` have shape ``(B,)``. Raises ``ValueError``
    when only one class is present (the AUC is undefined there).

    >>> auc([1, 0, 1, 0], [0.5, 0.5, 0.5, 0.5])
    0.5
    >>> auc([0, 1], [2.0, 1.0])
    0.0
    """
    s = _as_floats("scores", scores)
    y = _as_labels(labels, s.shape[0])
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite numbers (found NaN or inf)")
    n_pos = float(y.sum())
    n_neg = float(y.shape[0] - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUC needs both classes; got {int(n_pos)} positives and {int(n_neg)} negatives")
    from scipy.stats import rankdata      # here: scipy.stats is slow to import and not always needed

    ranks = rankdata(s, method="average")  # 1-based mid-ranks: ties averaged
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def log_loss(labels, probs, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy, probabilities clipped to ``[eps, 1 - eps]``.

    ``probs`` must lie in [0, 1] (up to :data:`PROB_SLACK` of rounding): a value outside
    (a logit passed by mistake) raises ``ValueError`` instead of being clipped into a
    plausible loss.

    ``-mean(y log p + (1 - y) log(1 - p))`` over ``(B,)`` entries; the clipping keeps
    a confident wrong prediction finite (``-log(eps)`` at most per example).

    >>> round(log_loss([1], [0.0]), 4)  # clipped at 1e-7
    16.1181
    """
    p = _as_floats("probs", probs)
    y = _as_labels(labels, p.shape[0])
    if p.shape[0] == 0:
        raise ValueError("log_loss of an empty set is undefined")
    if not (0.0 < eps < 0.5):
        raise ValueError(f"eps must be in (0, 0.5), got {eps}")
    if np.any(np.isnan(p)):
        raise ValueError("probs contain NaN")
    outside = (p < -PROB_SLACK) | (p > 1 + PROB_SLACK)      # rounding may leave [0, 1] by an ulp
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(f"probs must be probabilities in [0, 1], got {float(p[i])} at index {i}")
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))
