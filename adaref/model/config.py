"""Configuration of the AdaEnsemble model: one frozen dataclass per component.

Every choice that the paper leaves open (``docs/decisions.md`` rows 9-19) is a named
field here, documented next to the equation it belongs to; the ``paper`` and
``upstream`` presets (:func:`model_config`) are two settings of these fields.
``Config.from_dict`` rejects unknown keys and wrong types, naming them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from adaref.config import Config, ConfigError
from adaref.experts.base import check_activation

EXPERT_NAMES = ("dense", "conv", "mhsa", "pin", "cross")
#: Accepted initial temperatures of the gates (eq. 9): logits cos / tau stay below 1e4,
#: and their gradient cos / tau^2 below 1e8, far inside float32's range.
TAU_RANGE = (1e-4, 1e4)


@dataclass(frozen=True)
class GateConfig(Config):
    """The noisy cosine gating network (§3.3.1, eqs. 7-11); also the depth gate (§3.5.1)."""

    hidden: int = 16                      # d: size of h and of the expert embeddings e_j (eq. 7-8)
    reduction: int = 16                   # r: first FFN layer maps F*D -> F*D // r (eq. 7, SE-style)
    activation: str = "relu"              # the FFN's nonlinearity between its two layers (eq. 7)
    jitter: float = 0.01                  # eps of eq. 7's RandomUniform(1-eps, 1+eps); training only (row 10)
    input: Literal["x0", "prev"] = "x0"   # gate input: X_0 as eq. 7 writes it, or X_{l-1} (row 9)
    stop_gradient: bool = False           # block the gate's gradient into its input (upstream: True, row 9)
    temperature: Literal["log", "raw"] = "log"  # learn log tau (tau > 0 always) or raw tau (row 11)
    tau_init: float = 1.0                 # initial tau of eq. 9
    combine: Literal["gates", "switch", "unweighted"] = "gates"
    # ^ combine weights of eq. 12 (row 13): eq. 10's renormalised top-k softmax ("gates"),
    #   the full-softmax probability of each selected expert ("switch", Switch Transformer),
    #   or 1 for each selected expert ("unweighted": the authors' code; no task gradient)

    def __post_init__(self):
        if self.hidden < 1 or self.reduction < 1:
            raise ConfigError(f"GateConfig: hidden and reduction must be >= 1, got {self.hidden}, {self.reduction}")
        if not 0 <= self.jitter < 1:
            raise ConfigError(f"GateConfig: jitter must be in [0, 1), got {self.jitter}")
        low, high = TAU_RANGE
        if not low <= self.tau_init <= high:
            raise ConfigError(f"GateConfig: tau_init must be in [{low:g}, {high:g}], got {self.tau_init:g} "
                              f"(the gate's logits are cosines / tau: a smaller tau overflows the softmax "
                              f"and its gradient, a larger one makes every expert equally likely)")
        for key, allowed in (("input", ("x0", "prev")), ("temperature", ("log", "raw")),
                             ("combine", ("gates", "switch", "unweighted"))):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"GateConfig: {key} must be one of {allowed}, got {getattr(self, key)!r}")
        check_activation("GateConfig", "activation", self.activation)


@dataclass(frozen=True)
class KScheduleConfig(Config):
    """Annealed top-k (§3.3.2, row 14).

    ``linear``: k goes from N (dense) down to ``k`` over S training steps: S = ``steps``,
    or, when ``epochs`` > 0 and the epoch length is known (a training run),
    S = min(``steps``, ceil(``epochs`` x steps per epoch)), so that a run on a small data set
    anneals too (row 14).
    ``constant``: k from the start (the authors' exp1.py: k = 3, no annealing).
    ``piecewise``: ``boundaries`` [(step, k), ...]: from each step on, that k.
    """

    kind: Literal["linear", "constant", "piecewise"] = "linear"   # how k moves from N to its final value
    k: int = 3                            # the final k (k_final)
    steps: int = 1000                     # linear: steps to go from N to k (fewer if epochs ends sooner)
    epochs: float = 0.0                   # linear: if > 0, anneal within at most this many epochs of the
    # ^ training run (paper preset: 1), so that a run on a small data set anneals too
    boundaries: tuple[tuple[int, int], ...] = ()   # piecewise: ((step, k), ...), steps ascending, k >= 1

    def __post_init__(self):
        if self.kind not in ("linear", "constant", "piecewise"):
            raise ConfigError(f"KScheduleConfig: kind must be linear, constant or piecewise, got {self.kind!r}")
        if isinstance(self.epochs, bool) or not (isinstance(self.epochs, (int, float))
                                                 and 0 <= self.epochs < math.inf):
            raise ConfigError(f"KScheduleConfig: epochs must be a finite number >= 0, got {self.epochs!r}")
        if self.k < 1 or self.steps < 0:
            raise ConfigError(f"KScheduleConfig: k must be >= 1 and steps >= 0, got k={self.k}, steps={self.steps}")
        if self.kind == "piecewise":
            pairs = all(isinstance(b, (tuple, list)) and len(b) == 2 for b in self.boundaries)
            steps = [s for s, _ in self.boundaries] if pairs else []
            if not steps or steps[0] != 0 or any(a >= b for a, b in zip(steps, steps[1:])):
                raise ConfigError("KScheduleConfig: piecewise boundaries must be ((0, k0), (s1, k1), ...) "
                                  f"with strictly ascending steps, got {self.boundaries}")
            if any(k < 1 for _, k in self.boundaries):
                raise ConfigError(f"KScheduleConfig: piecewise boundaries k values must be >= 1, "
                                  f"got {self.boundaries}")


@dataclass(frozen=True)
class MoEConfig(Config):
    """One SparseMoE layer (§3.3): experts, top-k, residual/normalisation, load regularisers."""

    experts: tuple[str, ...] = EXPERT_NAMES          # the N experts, in this (index) order
    schedule: KScheduleConfig = field(default_factory=KScheduleConfig)
    norm: Literal["layernorm", "none"] = "layernorm"
    # ^ row 15: X_l = LayerNorm(X_{l-1} + y) over D per field ("layernorm"), or X_{l-1} + y ("none")
    load_fraction: Literal["argmax", "topk"] = "argmax"
    # ^ f_j of eq. 14 (row 16): fraction whose argmax p(x) is j, or fraction with j in the top-k set
    expert_prior: tuple[float, ...] = ()
    # ^ w_j of eq. 16 (row 16), one per expert, summing to 1; () means uniform 1/N (eq. 16 = eq. 13)
    z_loss: bool = False                  # add the router z-loss mean(logsumexp(g)^2) (authors' code)

    def __post_init__(self):
        unknown = [e for e in self.experts if e not in EXPERT_NAMES]
        if not self.experts or unknown or len(set(self.experts)) != len(self.experts):
            raise ConfigError(f"MoEConfig: experts must be distinct names from {EXPERT_NAMES}, got {self.experts}")
        if self.schedule.k > len(self.experts):
            raise ConfigError(f"MoEConfig: k = {self.schedule.k} exceeds the {len(self.experts)} experts")
        if self.schedule.kind == "piecewise" and any(k > len(self.experts) for _, k in self.schedule.boundaries):
            raise ConfigError(f"MoEConfig: schedule.boundaries k values must be in [1, {len(self.experts)}] "
                              f"(the number of experts), got {self.schedule.boundaries}")
        if self.norm not in ("layernorm", "none") or self.load_fraction not in ("argmax", "topk"):
            raise ConfigError(f"MoEConfig: norm {self.norm!r} / load_fraction {self.load_fraction!r} not known")
        _check_prior("MoEConfig: expert_prior", self.expert_prior, len(self.experts))


@dataclass(frozen=True)
class ControllerConfig(Config):
    """The depth-selecting controller (§3.5)."""

    enabled: bool = True                  # False: full depth, predict from the last layer (Table 3 "w/o")
    gate: GateConfig = field(default_factory=GateConfig)  # the depth gate has the gate's form (§3.5.1)
    train_form: Literal["soft", "expected", "straight_through", "hard"] = "soft"
    # ^ row 18: the expected loss over the exit depth sum_l p_l LogLoss(y, y_l) ("expected",
    #   the paper preset), the loss of the mixture sum_l p_l y_l ("soft"), hard exit forward
    #   with the soft gradient ("straight_through"), or the hard unweighted exit ("hard",
    #   authors' code). Evaluation always uses the hard exit of Algorithm 1.
    depth_prior: tuple[float, ...] = ()   # expected exit fractions per depth (eq. 16 form); () uniform

    def __post_init__(self):
        if self.train_form not in ("soft", "expected", "straight_through", "hard"):
            raise ConfigError(f"ControllerConfig: train_form must be soft, expected, straight_through or hard, "
                              f"got {self.train_form!r}")


@dataclass(frozen=True)
class ModelConfig(Config):
    """The AdaEnsemble model: embedding -> L SparseMoE layers -> estimators (+ controller)."""

    dim: int = 16                         # D, embedding size (§4.1.4)
    num_layers: int = 4                   # L, the number of SparseMoE layers (maximum depth)
    embedding_oov: Literal["learned", "zero"] = "learned"   # row 3: OOV row learned or zero
    gate: GateConfig = field(default_factory=GateConfig)    # every layer's expert gate (own weights)
    moe: MoEConfig = field(default_factory=MoEConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    expert_preset: Literal["paper", "upstream"] = "paper"   # experts' base configs (rows 4-8)
    expert_options: dict = field(default_factory=dict)      # expert name -> overrides of its config

    def __post_init__(self):
        if self.dim < 1 or self.num_layers < 1:
            raise ConfigError(f"ModelConfig: dim and num_layers must be >= 1, got {self.dim}, {self.num_layers}")
        if self.controller.depth_prior:
            _check_prior("ControllerConfig: depth_prior", self.controller.depth_prior, self.num_layers)
        if self.expert_preset not in ("paper", "upstream"):
            raise ConfigError(f"ModelConfig: expert_preset must be paper or upstream, got {self.expert_preset!r}")
        unknown = [e for e in self.expert_options if e not in self.moe.experts]
        if unknown:
            raise ConfigError(f"ModelConfig: expert_options for experts not in the model: {unknown}")


def _check_prior(name: str, prior: tuple[float, ...], n: int) -> None:
    if not prior:
        return
    if len(prior) != n or min(prior) <= 0 or abs(sum(prior) - 1) > 1e-6:
        raise ConfigError(f"{name} must have {n} positive entries summing to 1, got {prior} "
                          f"(set it to match the number of {'layers' if 'depth' in name else 'experts'})")


def model_config(preset: str = "paper", **changes) -> ModelConfig:
    """The ``paper`` or ``upstream`` preset, with optional top-level field changes.

    ``paper``: the paper's text with the suggested defaults (docs/decisions.md).
    ``upstream``: what the authors' TensorFlow code computes (column 4 there).

    >>> model_config("upstream").gate.combine
    'unweighted'
    """
    if preset == "paper":
        # row 18: the depth gate and the estimators trained on the expected loss over the
        # exit depth; row 14: k annealed over min(1,000 steps, 1 epoch)
        cfg = ModelConfig(moe=MoEConfig(schedule=KScheduleConfig(epochs=1.0)),
                          controller=ControllerConfig(train_form="expected"))
    elif preset == "upstream":
        gate = GateConfig(jitter=0.5, stop_gradient=True, temperature="raw", combine="unweighted")
        cfg = ModelConfig(
            embedding_oov="zero",
            expert_preset="upstream",
            gate=gate,
            moe=MoEConfig(schedule=KScheduleConfig(kind="constant", k=3), norm="none",
                          load_fraction="topk",
                          # the authors' prior {Dense .2, Cross .2, PIN .4, CNN .1, MHSA .1},
                          # written in adaref's expert order (dense, conv, mhsa, pin, cross)
                          expert_prior=(0.2, 0.1, 0.1, 0.4, 0.2), z_loss=True),
            controller=ControllerConfig(gate=gate, train_form="hard", depth_prior=(0.1, 0.2, 0.6, 0.1)),
        )
    else:
        raise ConfigError(f"unknown preset {preset!r}; choose 'paper' or 'upstream'")
    return cfg.replace(**changes) if changes else cfg


def estimate_parameters(config: ModelConfig, num_fields: int, total_vocabulary: int) -> int:
    """A lower bound on the number of parameters of an AdaEnsemble with ``config``,
    ``num_fields`` fields and ``total_vocabulary`` embedding rows, computed without
    allocating anything: the embedding table, and per layer the gate's reduction FFN
    (F*D x F*D/r) and the (F*D x F*D) matrices of the dense and cross experts and the
    (F*H x F*H) matrix of PIN, which dominate every other term.

    >>> estimate_parameters(model_config("paper"), 39, 1000)
    4831408
    """
    n = num_fields * config.dim
    per_layer = n * (n // config.gate.reduction) + n * config.gate.hidden
    for name in config.moe.experts:
        if name in ("dense", "cross"):
            per_layer += n * n + n
        elif name == "pin":
            h = (config.expert_options.get("pin") or {}).get("subspaces") or config.dim
            per_layer += (num_fields * min(int(h), config.dim)) ** 2
    return total_vocabulary * config.dim + config.num_layers * per_layer + n


def check_model_memory(config: ModelConfig, num_fields: int, total_vocabulary: int, itemsize: int,
                       copies: int = 1, what: str = "the model's weights") -> None:
    """Refuse (:class:`ConfigError`, with the figure) a model whose parameters, times
    ``copies`` (weights, gradients and optimiser states in training), cannot fit in
    the memory available, before anything is allocated."""
    from adaref.io import available_memory

    params = estimate_parameters(config, num_fields, total_vocabulary)
    need, available = params * itemsize * copies, available_memory()
    if available is not None and need > available:
        raise ConfigError(f"model.dim = {config.dim}, model.num_layers = {config.num_layers} with "
                          f"{num_fields} fields: at least {params:.3g} parameters, {need / 1e9:.3g} GB for "
                          f"{what}, more than the {available / 1e9:.3g} GB of memory available; choose a "
                          f"smaller model.dim or model.num_layers")
