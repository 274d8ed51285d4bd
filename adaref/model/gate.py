"""The noisy cosine top-k gating network (§3.3.1, eqs. 7-11).

    h = FFN(X_0 o RandomUniform(1 - eps, 1 + eps))                         (7)
    s_j = h . e_j / (||h|| ||e_j||)                                         (8)
    g_j = s_j / tau                                                         (9)
    G(x)_i = exp(TopK(g, k)_i) / sum_j exp(TopK(g, k)_j)                   (10)
    TopK(g, k)_j = g_j if g_j is among the k largest, else -inf            (11)

The same module, with L "experts" standing for depths, is the depth-selecting network
of the controller (§3.5.1).

Shapes: input X (B, F, D) flattened to (B, F*D); h (B, d); expert embeddings
``embeddings`` (N, d); scores g (B, N).

Decisions (each a :class:`~adaref.model.config.GateConfig` field):

* ``input`` / ``stop_gradient`` (row 9): which feature map feeds the gate and whether
  its gradient reaches the embeddings; the layer passes the chosen map in.
* ``jitter`` (row 10): multiplicative uniform noise only in training mode, drawn from
  the ``rng`` passed to ``forward``; off in evaluation and in every gradient check.
* ``reduction``, ``hidden``, ``activation``: FFN = Linear(F*D -> F*D // r), activation,
  Linear(-> d), both with bias (the SE-style reduction the paper cites [10]).
* L2 normalisation: v / sqrt(max(||v||^2, 1e-12)), TensorFlow's ``l2_normalize`` (what
  the authors' code calls): exactly eq. 8's cosine whenever ||v|| > 1e-6, and 0 for
  v = 0 instead of a division by zero (h = 0 happens when every FFN unit is dead).
* ``temperature`` (row 11): ``log`` learns log tau, so tau = exp(log tau) > 0;
  ``raw`` learns tau itself (the authors' code), unconstrained.
* TopK ties (row 12): the lowest expert index wins (:func:`adaref.ops.topk_mask`).
* ``combine`` (row 13): the weights used by the dispatcher (see :class:`GateOutput`).
  With ``gates`` and k = 1 every weight is exactly 1 and the gate gets no task
  gradient; a warning says so.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from adaref import ops
from adaref.experts.base import act_flops
from adaref.model.config import GateConfig
from adaref.nn import Linear, Module, Parameter, activation
from adaref.nn.init import glorot_uniform
from adaref.noise import uniform
from adaref.tensor import ShapeError, Tensor

L2_EPS = 1e-12


def draw_jitter(rng: np.random.Generator, eps: float, shape: tuple[int, ...],
                dtype) -> np.ndarray:
    """Eq. 7's noise RandomUniform(1 - eps, 1 + eps) of ``shape``, cast to ``dtype``: the
    same numbers, bit for bit, and the same generator state afterwards as
    ``rng.uniform(1 - eps, 1 + eps, size=shape).astype(dtype)``, drawn faster
    (:func:`adaref.noise.uniform`).

    >>> a = draw_jitter(np.random.default_rng(0), 0.01, (3, 70000), np.float32)
    >>> b = np.random.default_rng(0).uniform(0.99, 1.01, size=(3, 70000)).astype(np.float32)
    >>> a.dtype, bool((a == b).all())
    (dtype('float32'), True)
    """
    return uniform(rng, 1.0 - eps, 1.0 + eps, shape, dtype)


@dataclass
class GateOutput:
    """What a gate returns for a batch of B examples over N choices.

    Attributes:
        logits: g (B, N), eq. 9.
        probs: p(x) = softmax(g) over all N (B, N), kept for the load regularisers.
        mask: (B, N) bool, the top-k set of eq. 11.
        gates: eq. 10, softmax over the kept scores (B, N), zero off the mask.
        weights: the dispatcher's combine weights (B, N), zero off the mask: ``gates``,
            ``probs * mask`` (switch) or ``mask`` as a constant (unweighted).
    """

    logits: Tensor
    probs: Tensor
    mask: np.ndarray
    gates: Tensor
    weights: Tensor


def l2_normalize(x: Tensor, axis: int = -1) -> Tensor:
    """x / sqrt(max(sum x^2, 1e-12)) along ``axis`` (TensorFlow's ``l2_normalize``).

    Below norm 1e-6 (and at x = 0, when every unit of the gate's FFN is dead) the map is
    x / 1e-6: the value is small but the gradient is 1e6 times the incoming one, as in
    TensorFlow. Tiny gates meet this often (F*D // reduction may be a single ReLU
    unit); the paper's size (624 // 16 = 39 units) rarely does.

    >>> v = Tensor(np.array([[3e-6, 4e-6], [3e-7, 4e-7], [0.0, 0.0]]))  # norms 5e-6, 5e-7, 0
    >>> np.round(l2_normalize(v).data, 12).tolist()    # below norm 1e-6: v / 1e-6
    [[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]]
    """
    return x / ops.sqrt(ops.clip(ops.sum(x * x, axis=axis, keepdims=True), lo=L2_EPS))


def cosine_scores(h: Tensor, e: Tensor) -> Tensor:
    """s[b, j] = sum_i h[b, i] e[j, i] for unit rows h (B, d), e (N, d): (B, N).

    Computed as one elementwise product and a sum over d, not a matrix product: every
    score is then reduced in the same order, so two choices with equal embeddings get
    bit-equal scores and the top-k tie rule (lowest index) decides between them. A BLAS
    product does not promise that (a one-row product rounds identical columns
    differently about half the time).

    >>> e = Tensor(np.array([[0.6, 0.8], [0.0, 1.0], [0.6, 0.8]]))
    >>> s = cosine_scores(Tensor(np.array([[0.28, 0.96]])), e).data
    >>> bool(s[0, 0] == s[0, 2])
    True
    """
    return ops.sum(h.reshape(h.shape[0], 1, h.shape[1]) * e.reshape(1, *e.shape), axis=-1)


class NoisyCosineGate(Module):
    """Eqs. 7-11 for one SparseMoE layer (or the depth controller).

    Args:
        config: the gate's options.
        in_features: F*D, the size of the flattened input feature map.
        num_choices: N experts (or L depths).
        rng: initialises the FFN (Glorot uniform) and the choice embeddings
            (Glorot uniform, (N, d)).

    Parameters: ``reduce.weight`` (F*D, F*D // r), ``reduce.bias``, ``project.weight``
    (F*D // r, d), ``project.bias`` (d,), ``embeddings`` (N, d), and ``log_tau`` (1,) or
    ``tau`` (1,).

    >>> import numpy as np
    >>> gate = NoisyCosineGate(GateConfig(hidden=4, reduction=2), 8, 3, rng=np.random.default_rng(0))
    >>> x = Tensor(np.random.default_rng(1).normal(size=(5, 2, 4)))
    >>> out = gate(x, k=2, rng=np.random.default_rng(2))     # training mode: jitter drawn from rng
    >>> out.mask.sum(axis=1).tolist(), np.allclose(out.gates.data.sum(axis=1), 1)
    ([2, 2, 2, 2, 2], True)
    """

    EQUATION = "eqs. 7-11"
    PARAM_LAYOUTS = {"embeddings": "(N, d): row j is choice j's embedding e_j, in the model's expert "
                                   "(or depth) order",
                     "log_tau": "(1,): tau = exp(log_tau)", "tau": "(1,): tau itself"}

    def __init__(self, config: GateConfig, in_features: int, num_choices: int, *,
                 rng: np.random.Generator, dtype=np.float64):
        super().__init__()
        self.config, self.in_features, self.num_choices = config, in_features, num_choices
        reduced = max(1, in_features // config.reduction)
        self.reduce = Linear(in_features, reduced, rng=rng, dtype=dtype)
        self.project = Linear(reduced, config.hidden, rng=rng, dtype=dtype)
        self.embeddings = Parameter(glorot_uniform(rng, config.hidden, num_choices,
                                                   (num_choices, config.hidden), dtype))
        if config.temperature == "log":
            self.log_tau = Parameter(np.full(1, np.log(config.tau_init), dtype=dtype))
        else:
            self.tau = Parameter(np.full(1, config.tau_init, dtype=dtype))
        self._act = activation(config.activation)

    def logit_flops(self) -> int:
        """Forward FLOPs per example up to the scores g of eq. 9, in the convention of
        :mod:`adaref.experts.base` (a multiply-add is 2, other arithmetic 1): in training
        mode with jitter, the F*D products by the noise of eq. 7 (drawing it counts 0, as
        the embedding lookup does); the two Linear layers (2 per weight, 1 per bias), the
        activation (1 per unit, 0 for ``linear``), normalising h (2d for the squared
        norm, 2 for the max with eps and the sqrt, d divisions), the cosine scores (2dN;
        the choice embeddings are normalised once per batch, not per example) and the
        temperature (N divisions).
        """
        fd, r, d, n = self.in_features, self.reduce.out_features, self.config.hidden, self.num_choices
        jitter = fd if self.training and self.config.jitter > 0 else 0
        return (jitter + (2 * fd * r + r) + act_flops(self.config.activation, r) + (2 * r * d + d)
                + (3 * d + 2) + 2 * d * n + n)

    @staticmethod
    def topk_flops(n: int, k: int) -> int:
        """Comparisons of a top-k over n scores as k successive maxima, each over the
        scores not yet chosen: (n - 1) + (n - 2) + ... + (n - k)."""
        return k * n - k * (k + 1) // 2

    def flops(self, k: int) -> int:
        """Forward FLOPs per example of the whole gate at top-k: :meth:`logit_flops`, the
        full softmax p (5N - 1), the top-k selection (:meth:`topk_flops`), eq. 10's
        softmax over the masked scores (5N - 1) and, for ``combine="switch"``, the N
        products p * mask."""
        n = self.num_choices
        extra = n if self.config.combine == "switch" else 0
        return self.logit_flops() + (5 * n - 1) + self.topk_flops(n, k) + (5 * n - 1) + extra

    def temperature(self) -> Tensor:
        """tau (1,): exp(log tau) or the raw parameter."""
        return ops.exp(self.log_tau) if self.config.temperature == "log" else self.tau

    def logits(self, x: Tensor, rng: np.random.Generator | None = None) -> Tensor:
        """g (B, N) of eqs. 7-9 for the gate input x (B, F, D)."""
        cfg = self.config
        if x.ndim != 3 or x.shape[1] * x.shape[2] != self.in_features:
            raise ShapeError(f"NoisyCosineGate: input must be (B, F, D) with F*D = "
                             f"{self.in_features}, got {x.shape}")
        if cfg.stop_gradient:
            x = x.detach()
        flat = x.reshape(x.shape[0], self.in_features)                   # (B, F*D)
        noise = None
        if self.training and cfg.jitter > 0:
            if rng is None:
                raise ValueError("NoisyCosineGate: jitter is on in training mode; pass rng=, "
                                 "call model.eval(), or set gate jitter to 0")
            noise = draw_jitter(rng, cfg.jitter, flat.shape, flat.dtype)  # (B, F*D), eq. 7
        # (flat * noise) @ W + b, the product not kept for the backward pass
        h = self.project(self._act(self.reduce(flat, scale=noise)))      # (B, d)
        s = cosine_scores(l2_normalize(h), l2_normalize(self.embeddings))  # (B, N), eq. 8
        return s / self.temperature()                                    # (B, N), eq. 9

    def forward(self, x: Tensor, k: int, rng: np.random.Generator | None = None) -> GateOutput:
        """Route each example of x (B, F, D) to its top-k choices."""
        if not 1 <= k <= self.num_choices:
            raise ValueError(f"NoisyCosineGate: k = {k} must be in [1, {self.num_choices}]")
        g = self.logits(x, rng)                                          # (B, N)
        mask = ops.topk_mask(g, k)                                       # (B, N), eq. 11
        probs = ops.softmax(g, axis=-1)                                  # (B, N), p(x)
        gates = ops.softmax(ops.where(mask, g, -np.inf), axis=-1)        # (B, N), eq. 10
        combine = self.config.combine
        if combine == "gates":
            if k == 1 and self.training and any(p.requires_grad for p in self.parameters()):
                warnings.warn("gate combine='gates' with k = 1: every weight is exactly 1, so the "
                              "gate gets no gradient from the task loss (only from the "
                              "regularisers); consider combine='switch'", stacklevel=2)
            weights = gates
        elif combine == "switch":
            weights = probs * mask.astype(g.dtype)
        else:                                                            # "unweighted"
            weights = Tensor(mask.astype(g.dtype))
        return GateOutput(g, probs, mask, gates, weights)
