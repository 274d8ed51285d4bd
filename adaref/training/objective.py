"""The training objective, eq. 18:

    Loss = LogLoss + lambda_1 L_distribution^expert + lambda_2 L_distribution^depth  (+ z z-loss)

LogLoss is of the prediction, or, in the ``expected`` training form, the expected loss of
the hard exit over the depth gate's distribution (docs/decisions.md row 18).
The expert term is eq. 16 summed over the layers (docs/decisions.md row 20); the z-loss
(the authors' code) is summed over every gate and weighted by ``z`` (0 in the paper).
"""
from __future__ import annotations

import numpy as np

from adaref import ops
from adaref.model.adaensemble import ModelOutput
from adaref.tensor import Tensor

PROB_CLIP = 1e-7


def _softplus_loss(z: Tensor, y: np.ndarray) -> Tensor:
    """Elementwise binary cross-entropy from a logit: softplus(z) - y z (exact and stable)."""
    return ops.relu(z) + ops.log(1.0 + ops.exp(-ops.abs(z))) - z * y


def log_loss(out: ModelOutput, labels: np.ndarray) -> Tensor:
    """Mean binary cross-entropy of the prediction. From the logit when the prediction
    is one estimator's; from the probability clipped to [1e-7, 1 - 1e-7] for the soft
    and straight-through depth mixtures."""
    y = np.asarray(labels).astype(out.prob.dtype)
    if out.logit is not None:
        return _softplus_loss(out.logit, y).mean()
    p = ops.clip(out.prob, PROB_CLIP, 1 - PROB_CLIP)
    return -(ops.log(p) * y + ops.log(1.0 - p) * (1 - y)).mean()


def layer_log_losses(out: ModelOutput, labels: np.ndarray) -> Tensor:
    """(B, L): each estimator's own log-loss LogLoss(y, y_hat_l(x)), from its logit z_l.
    Needs a form that runs every layer on every example (soft, expected, straight-through)."""
    if out.layer_logits is None:
        raise ValueError(f"the {out.form!r} form does not run every estimator on every example, "
                         f"so there is no per-estimator loss (use soft, expected or straight_through)")
    z = out.layer_logits                                                        # (B, L)
    return _softplus_loss(z, np.asarray(labels).astype(z.dtype)[:, None])


def task_loss(out: ModelOutput, labels: np.ndarray) -> Tensor:
    """Eq. 18's LogLoss term. ``expected`` form (docs/decisions.md row 18): the expected
    log-loss over the exit depth, mean_b sum_l p_l(x_b) LogLoss(y_b, y_hat_l(x_b)), the
    loss of the hard exit averaged over the depth gate's distribution; every other form:
    :func:`log_loss` of the prediction."""
    if out.form == "expected":
        return ops.sum(out.depth_probs * layer_log_losses(out, labels), axis=1).mean()
    return log_loss(out, labels)


def objective(out: ModelOutput, labels: np.ndarray, lambda1: float, lambda2: float,
              z: float = 0.0, exit_loss: float = 0.0) -> tuple[Tensor, dict[str, float]]:
    """Eq. 18 and its parts (as floats, for the history).

    ``exit_loss`` > 0 adds that weight times the mean over the L estimators of each one's
    own log-loss (deep supervision, BranchyNet's joint exit loss; not part of eq. 18)."""
    task = task_loss(out, labels)
    loss = task + out.expert_loss * lambda1
    parts = {"log_loss": task.item(), "expert_loss": out.expert_loss.item()}
    if exit_loss > 0:
        aux = layer_log_losses(out, labels).mean()
        loss = loss + aux * exit_loss
        parts["exit_loss"] = aux.item()
    if out.depth_loss is not None:
        loss = loss + out.depth_loss * lambda2
        parts["depth_loss"] = out.depth_loss.item()
    if z > 0 and out.z_loss is not None:
        loss = loss + out.z_loss * z
        parts["z_loss"] = out.z_loss.item()
    parts["loss"] = loss.item()
    return loss, parts
