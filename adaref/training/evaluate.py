"""Evaluation on a split (§4.1.2): exact AUC, clipped log-loss, for both prediction forms,
with the exit-depth distribution (Table 4), expert usage per layer and mean FLOPs."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from adaref import no_grad, ops
from adaref.metrics import auc, log_loss
from adaref.model import AdaEnsemble


@dataclass
class Evaluation:
    """Metrics of one split. ``auc``/``log_loss``: the hard exit of Algorithm 1 (or full
    depth without the controller): what serving computes. ``auc_soft``/``log_loss_soft``:
    the soft depth mixture sum_l p_l(x) y_hat_l(x), whatever the training form (the
    ``paper`` preset trains on it; the sample defaults train straight-through and
    ``upstream`` on the hard exit); None without the controller."""

    examples: int
    auc: float
    log_loss: float
    auc_soft: float | None
    log_loss_soft: float | None
    depth_fractions: list[float]
    expert_usage: list[list[float]]        # per layer, per expert: fraction of all examples
    mean_flops: float
    k: int
    experts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def evaluate(model: AdaEnsemble, ids: np.ndarray, labels: np.ndarray, *, step: int,
             batch_size: int = 4096) -> Evaluation:
    """Evaluate in evaluation mode (no jitter) at the k of ``step``; restores the mode.
    Non-finite predictions (diverged weights) raise FloatingPointError."""
    if not isinstance(model, AdaEnsemble):
        return _evaluate_baseline(model, ids, labels, batch_size)
    was_training = model.training
    model.eval()
    n_layers, n_experts = model.num_layers, len(model.config.moe.experts)
    hard, soft, depth_counts = [], [], np.zeros(n_layers)
    usage = np.zeros((n_layers, n_experts))
    flops = 0.0
    k = model.k_schedule(step)
    try:
        with no_grad():
            for start in range(0, len(ids), batch_size):
                chunk = np.asarray(ids[start:start + batch_size])
                out = model(chunk, k=k)
                hard.append(out.prob.data.astype(np.float64))
                flops += float(out.flops.sum())
                depth_counts += np.bincount(out.routing.exit_depth - 1, minlength=n_layers)
                for l, layer in enumerate(out.routing.layers):
                    usage[l] += layer.selected
                if model.config.controller.enabled:
                    soft.append(model(chunk, k=k, form="soft").prob.data.astype(np.float64))
    finally:
        model.train(was_training)
    y = np.asarray(labels, dtype=np.float64)
    p = np.concatenate(hard)
    _check_finite(p, "hard-exit")
    if soft:
        _check_finite(np.concatenate(soft), "soft-mixture")
    ps = np.concatenate(soft) if soft else None
    n = len(y)
    return Evaluation(
        examples=n, auc=auc(y, p), log_loss=log_loss(y, p),
        auc_soft=auc(y, ps) if ps is not None else None,
        log_loss_soft=log_loss(y, ps) if ps is not None else None,
        depth_fractions=(depth_counts / max(n, 1)).tolist(),
        expert_usage=(usage / max(n, 1)).tolist(), mean_flops=flops / max(n, 1), k=k,
        experts=list(model.config.moe.experts))


def _check_finite(values: np.ndarray, name: str) -> None:
    if not np.isfinite(values).all():
        raise FloatingPointError(f"{int((~np.isfinite(values)).sum())} of {len(values)} {name} "
                                 f"predictions are NaN or infinite")


def _evaluate_baseline(model, ids: np.ndarray, labels: np.ndarray, batch_size: int) -> Evaluation:
    """A competing model (§4.1.3): one prediction, fixed FLOPs, no routing."""
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            p = np.concatenate([ops.sigmoid(model(np.asarray(ids[s:s + batch_size]))).data.astype(np.float64)
                                for s in range(0, len(ids), batch_size)])
    finally:
        model.train(was_training)
    _check_finite(p, "the model's")
    y = np.asarray(labels, dtype=np.float64)
    return Evaluation(examples=len(y), auc=auc(y, p), log_loss=log_loss(y, p), auc_soft=None,
                      log_loss_soft=None, depth_fractions=[], expert_usage=[],
                      mean_flops=float(model.flops_per_example()), k=0, experts=[])
