"""The annealed top-k schedule (§3.3.2, docs/decisions.md row 14).

Training starts dense (k = N: every example reaches every expert) and k decreases to
its final value, so all experts and the gate learn before routing becomes sparse.
"""
from __future__ import annotations

import math
from numbers import Integral

import numpy as np

from adaref.model.config import KScheduleConfig


def is_int(value) -> bool:
    """True for a Python or NumPy integer, False for a bool, a float (even 3.0) or anything else."""
    return isinstance(value, Integral) and not isinstance(value, (bool, np.bool_))


def check_step(step, owner: str) -> int:
    """``step`` as an int; refuses (naming ``owner``) a bool or non-integer step (TypeError:
    2.5, NaN, None) and a negative one (ValueError).

    >>> check_step(-5, "KSchedule")
    Traceback (most recent call last):
    ...
    ValueError: KSchedule: step must be a non-negative integer (the training step), got -5
    """
    what = f"{owner}: step must be a non-negative integer (the training step)"
    if not is_int(step):
        raise TypeError(f"{what}, got {step!r} ({type(step).__name__})")
    if step < 0:
        raise ValueError(f"{what}, got {step!r}")
    return int(step)


class KSchedule:
    """k as a function of the training step.

    ``linear``: k(t) = k_final + ceil((N - k_final) * (1 - t / S)) for t < S, then k_final:
    N at t = 0, k_final from t = S on, evenly spaced in between. S is ``config.steps``, or
    min(``config.steps``, ceil(``config.epochs`` x ``steps_per_epoch``)) when the schedule
    is given in epochs and the epoch length is known (the trainer passes it; a model built
    outside a training run anneals over ``config.steps``).
    ``constant``: k_final always. ``piecewise``: the k of the last boundary <= t.
    Evaluation uses k at the current step (the trainer logs it).

    >>> s = KSchedule(KScheduleConfig(kind="linear", k=3, steps=4), num_experts=5)
    >>> [s(t) for t in range(6)]
    [5, 5, 4, 4, 3, 3]
    >>> KSchedule(KScheduleConfig(k=3, steps=1000, epochs=1.0), 5, steps_per_epoch=35).horizon
    35
    """

    def __init__(self, config: KScheduleConfig, num_experts: int, steps_per_epoch: int | None = None):
        if config.k > num_experts:
            raise ValueError(f"KSchedule: k = {config.k} exceeds {num_experts} experts")
        if config.kind == "piecewise" and any(not 1 <= k <= num_experts for _, k in config.boundaries):
            raise ValueError(f"KSchedule: piecewise k values must be in [1, {num_experts}], "
                             f"got {config.boundaries}")
        if steps_per_epoch is not None and (not is_int(steps_per_epoch) or steps_per_epoch < 1):
            raise ValueError(f"KSchedule: steps_per_epoch must be a positive integer, got {steps_per_epoch!r}")
        self.config, self.num_experts = config, num_experts
        self.horizon = config.steps                       # S: the step from which k = k_final
        if config.epochs > 0 and steps_per_epoch is not None:
            self.horizon = min(config.steps, math.ceil(config.epochs * steps_per_epoch))

    def __call__(self, step: int) -> int:
        step, cfg = check_step(step, "KSchedule"), self.config
        if cfg.kind == "constant":
            return cfg.k
        if cfg.kind == "piecewise":
            return [k for s, k in cfg.boundaries if s <= step][-1]
        if step >= self.horizon:
            return cfg.k
        return cfg.k + math.ceil((self.num_experts - cfg.k) * (1 - step / self.horizon))
