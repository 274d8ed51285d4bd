"""Test-only helpers of the cross-check folder.

* :func:`to_torch` / :func:`grads_to_adaref`: one adaref module's parameters (an
  expert, a gate, an estimator or the whole model) into the torch layouts of
  :mod:`adaref.crosscheck.torch_port` and gradients back, through the same layout
  mapping the port uses (:func:`adaref.crosscheck.torch_port.layout_mapping`). The
  mapping is defined for a whole model, so a module is placed in a small host
  :class:`~adaref.model.AdaEnsemble` (an expert as the only expert of layer 0, a gate as
  the depth gate, an estimator as estimator 0) and converted there.
* :class:`McMahanFTRL`: a per-coordinate transcription of FTRL-Proximal (the optimiser
  tests' reference).
"""
from __future__ import annotations

import math

import numpy as np

from adaref.crosscheck import torch_port as tp
from adaref.experts.base import Expert
from adaref.model import AdaEnsemble, ModelConfig
from adaref.model.config import ControllerConfig, KScheduleConfig, MoEConfig
from adaref.model.estimator import Estimator
from adaref.model.gate import NoisyCosineGate


def host(module):
    """(config, vocab_sizes, prefix): a model holding a module like ``module`` at ``prefix``."""
    if isinstance(module, AdaEnsemble):
        return module.config, list(module.vocab_sizes), ""
    if isinstance(module, Expert):
        name = module.name
        cfg = ModelConfig(dim=module.dim, num_layers=1,
                          moe=MoEConfig(experts=(name,), schedule=KScheduleConfig(kind="constant", k=1)),
                          expert_options={name: module.config.to_dict()})
        return cfg, [2] * module.num_fields, f"layers.0.experts.{name}."
    if isinstance(module, NoisyCosineGate):
        cfg = ModelConfig(dim=1, num_layers=module.num_choices,
                          controller=ControllerConfig(gate=module.config))
        return cfg, [2] * module.in_features, "controller.gate."
    if isinstance(module, Estimator):
        return ModelConfig(dim=1, num_layers=1), [2] * module.in_features, "estimators.0."
    raise TypeError(f"no host model for {type(module).__name__}")


def _host_arrays(module, state):
    config, vocab, prefix = host(module)
    if prefix:
        model = AdaEnsemble(config, vocab, rng=np.random.default_rng(0))
        full = {n: p.data.copy() for n, p in model.named_parameters()}
    else:
        full = {}
    state = module.state_dict() if state is None else state
    full.update({prefix + n: np.asarray(v, dtype=np.float64) for n, v in state.items()})
    return config, vocab, prefix, full


def to_torch(module, state=None, requires_grad: bool = True) -> dict:
    """``module``'s parameters (or ``state``, adaref layout) as float64 torch leaves in
    the port's layouts, keyed by the module's own parameter names."""
    config, vocab, prefix, full = _host_arrays(module, state)
    params = tp.torch_params(config, vocab, full, np.float64)
    n = len(prefix)
    return {k[n:]: v.requires_grad_(requires_grad) for k, v in params.items() if k.startswith(prefix)}


def grads_to_adaref(module, params: dict) -> dict:
    """The ``.grad`` of each torch leaf of :func:`to_torch` (zeros if None), in adaref's
    layout, keyed by the module's parameter names."""
    config, vocab, prefix, full = _host_arrays(module, None)
    mapping = tp.layout_mapping(config, vocab)
    theirs = {k: np.zeros_like(a) for k, a in mapping.from_adaref(full).items()}
    for k, t in params.items():
        if t.grad is not None:
            theirs[prefix + k] = t.grad.detach().numpy().copy()
    back = mapping.to_adaref(theirs)
    n = len(prefix)
    return {k[n:]: v for k, v in back.items() if k.startswith(prefix)}


class McMahanFTRL:
    """FTRL-Proximal, McMahan et al. (KDD 2013) Algorithm 1, transcribed per coordinate.

    State z, n; the weight used at a step is computed from (z, n) *before* the update
    ("for i in I(x): w_i = 0 if |z_i| <= l1 else -(z_i - sgn(z_i) l1) / ((beta +
    sqrt(n_i)) / alpha + l2)"), then "sigma_i = (sqrt(n_i + g_i^2) - sqrt(n_i)) / alpha;
    z_i += g_i - sigma_i w_i; n_i += g_i^2".
    """

    def __init__(self, shape, alpha, beta, l1, l2, z0=None):
        self.alpha, self.beta, self.l1, self.l2 = alpha, beta, l1, l2
        self.z = np.zeros(shape) if z0 is None else np.array(z0, dtype=float)
        self.n = np.zeros(shape)

    def weights(self):
        out = np.zeros_like(self.z)
        for i in np.ndindex(self.z.shape):
            z, n = self.z[i], self.n[i]
            if abs(z) > self.l1:
                out[i] = -(z - math.copysign(self.l1, z)) / ((self.beta + math.sqrt(n)) / self.alpha
                                                             + self.l2)
        return out

    def step(self, g):
        w = self.weights()
        for i in np.ndindex(self.z.shape):
            sigma = (math.sqrt(self.n[i] + g[i] ** 2) - math.sqrt(self.n[i])) / self.alpha
            self.z[i] += g[i] - sigma * w[i]
            self.n[i] += g[i] ** 2
        return self.weights()


__all__ = ["host", "to_torch", "grads_to_adaref", "McMahanFTRL"]
