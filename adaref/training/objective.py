"""The training objective, eq. 18:

    Loss = LogLoss + lambda_1 L_distribution^expert + lambda_2 L_distribution^depth  (+ z z-loss)

The expert term is eq. 16 summed over the layers (docs/decisions.md row 20); the z-loss
(the authors' code) is summed over every gate and weighted by ``z`` (0 in the paper).
"""
from __future__ import annotations

import numpy as np

from adaref import ops
from adaref.model.adaensemble import ModelOutput
from adaref.tensor import Tensor

PROB_CLIP = 1e-7


def log_loss(out: ModelOutput, labels: np.ndarray) -> Tensor:
    """Mean binary cross-entropy. From the logit when the prediction is one estimator's
    (softplus(z) - y z, exact and stable); from the probability clipped to
    [1e-7, 1 - 1e-7] for the soft and straight-through depth mixtures."""
    y = np.asarray(labels).astype(out.prob.dtype)
    if out.logit is not None:
        z = out.logit
        softplus = ops.relu(z) + ops.log(1.0 + ops.exp(-ops.abs(z)))
        return (softplus - z * y).mean()
    p = ops.clip(out.prob, PROB_CLIP, 1 - PROB_CLIP)
    return -(ops.log(p) * y + ops.log(1.0 - p) * (1 - y)).mean()


def objective(out: ModelOutput, labels: np.ndarray, lambda1: float, lambda2: float,
              z: float = 0.0) -> tuple[Tensor, dict[str, float]]:
    """Eq. 18 and its parts (as floats, for the history)."""
    task = log_loss(out, labels)
    loss = task + out.expert_loss * lambda1
    parts = {"log_loss": task.item(), "expert_loss": out.expert_loss.item()}
    if out.depth_loss is not None:
        loss = loss + out.depth_loss * lambda2
        parts["depth_loss"] = out.depth_loss.item()
    if z > 0 and out.z_loss is not None:
        loss = loss + out.z_loss * z
        parts["z_loss"] = out.z_loss.item()
    parts["loss"] = loss.item()
    return loss, parts
