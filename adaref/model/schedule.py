"""The annealed top-k schedule (§3.3.2, paper-decisions row 14).

Training starts dense (k = N: every example reaches every expert) and k decreases to
its final value, so all experts and the gate learn before routing becomes sparse.
"""
from __future__ import annotations

import math

from adaref.model.config import KScheduleConfig


class KSchedule:
    """k as a function of the training step.

    ``linear``: k(t) = k_final + ceil((N - k_final) * (1 - t / S)) for t < S, then k_final:
    N at t = 0, k_final from t = S on, evenly spaced in between.
    ``constant``: k_final always. ``piecewise``: the k of the last boundary <= t.
    Evaluation uses k at the current step (the trainer logs it).

    >>> s = KSchedule(KScheduleConfig(kind="linear", k=3, steps=4), num_experts=5)
    >>> [s(t) for t in range(6)]
    [5, 5, 4, 4, 3, 3]
    """

    def __init__(self, config: KScheduleConfig, num_experts: int):
        if config.k > num_experts:
            raise ValueError(f"KSchedule: k = {config.k} exceeds {num_experts} experts")
        if config.kind == "piecewise" and any(not 1 <= k <= num_experts for _, k in config.boundaries):
            raise ValueError(f"KSchedule: piecewise k values must be in [1, {num_experts}], "
                             f"got {config.boundaries}")
        self.config, self.num_experts = config, num_experts

    def __call__(self, step: int) -> int:
        cfg = self.config
        if cfg.kind == "constant":
            return cfg.k
        if cfg.kind == "piecewise":
            return [k for s, k in cfg.boundaries if s <= step][-1]
        if step >= cfg.steps:
            return cfg.k
        return cfg.k + math.ceil((self.num_experts - cfg.k) * (1 - step / cfg.steps))
