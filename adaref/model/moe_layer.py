"""One Sparse Mixture-of-Experts layer (§3.3, Figure 2; docs/decisions.md rows 9, 15)."""
from __future__ import annotations

import numpy as np

from adaref.experts import build_expert, expert_configs
from adaref.model.config import ModelConfig
from adaref.model.dispatcher import sparse_moe
from adaref.model.gate import GateOutput, NoisyCosineGate
from adaref.model.trace import Trace, topk_indices
from adaref.nn import LayerNorm, Module, ModuleDict
from adaref.tensor import Tensor


class SparseMoELayer(Module):
    """X_l = Norm(X_{l-1} + sum_{j in top-k} w_j(x) E_j(X_{l-1}, X_0))  (eq. 12 + residual).

    Sub-modules: ``experts`` (one per name in ``config.moe.experts``, in that order, so
    expert j of the gate is ``experts[names[j]]``), ``gate`` (eqs. 7-11, its own weights
    in every layer) and ``norm``.

    Decisions: the gate reads X_0 (``gate.input = "x0"``, eq. 7) or X_{l-1} ("prev")
    (row 9); ``moe.norm`` (row 15): ``layernorm`` = LayerNorm over D of each field with
    learnable gain and bias after the residual sum, ``none`` = the plain residual sum
    (authors' code). DenseMoE is this layer with k = N.

    Shapes: x, x0 (B, F, D) -> (B, F, D).
    """

    EQUATION = "eq. 12 + residual and norm"

    def __init__(self, config: ModelConfig, num_fields: int, *, rng: np.random.Generator,
                 dtype=np.float64):
        super().__init__()
        self.config = config
        d = config.dim
        base = expert_configs(config.expert_preset)
        self.names = config.moe.experts
        self.experts = ModuleDict({
            name: build_expert(name, base[name].replace(**config.expert_options.get(name, {})),
                               num_fields, d, rng=rng, dtype=dtype)
            for name in self.names})
        self.gate = NoisyCosineGate(config.gate, num_fields * d, len(self.names), rng=rng, dtype=dtype)
        self.norm = LayerNorm(d, dtype=dtype) if config.moe.norm == "layernorm" else None

    def forward(self, x: Tensor, x0: Tensor, k: int, rng: np.random.Generator | None = None,
                trace: Trace | None = None) -> tuple[Tensor, GateOutput]:
        """``trace`` (optional) records ``gate.*``, ``experts.*``, ``combined`` and
        ``output`` (:mod:`adaref.model.trace`)."""
        gate_input = x0 if self.config.gate.input == "x0" else x
        routing = self.gate(gate_input, k, rng)                              # (B, N) each
        if trace is not None:
            trace("gate.logits", routing.logits)
            trace("gate.probs", routing.probs)
            trace("gate.topk", topk_indices(routing.mask))
            trace("gate.values", routing.gates)
            trace("gate.weights", routing.weights)
        experts = [self.experts[name] for name in self.names]
        out, _ = sparse_moe(x, x0, routing.mask, routing.weights, experts,
                            base=x, norm=self.norm, trace=trace)             # (B, F, D): Norm(x + eq. 12)
        if trace is not None:
            trace("output", out)
        return out, routing

    def expert_flops(self) -> np.ndarray:
        """(N,) forward FLOPs per example of each expert, in gate order."""
        return np.array([self.experts[name].flops() for name in self.names], dtype=np.int64)

    def fixed_flops(self, k: int) -> int:
        """Per-example FLOPs of the layer outside the experts and the weighted combine: the
        gate at top-k, the residual sum (F*D; computed inside the combine, which starts
        from X_{l-1}) and the LayerNorm of each field's D values (7D + 4:
        5D + 4 to normalise, 2D for gain and bias, as :mod:`adaref.experts.base` counts
        the instance norm)."""
        f, d = self.gate.in_features // self.config.dim, self.config.dim
        norm = f * (7 * d + 4) if self.norm is not None else 0
        return self.gate.flops(k) + f * d + norm
