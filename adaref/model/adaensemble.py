"""The AdaEnsemble model (Figure 1): embedding -> L SparseMoE layers -> estimators, with
the depth-selecting controller and dynamic propagation (Algorithm 1).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np

from adaref import ops
from adaref.config import ConfigError
from adaref.io import load_npz
from adaref.model.config import ModelConfig, check_model_memory
from adaref.model.controller import DepthChoice, DepthController
from adaref.model.dispatcher import dispatch
from adaref.model.estimator import Estimator
from adaref.model.moe_layer import SparseMoELayer
from adaref.model.regularizers import distribution_loss, load_fractions, z_loss
from adaref.model.routing import LayerRouting, Routing
from adaref.model.schedule import KSchedule, check_step, is_int
from adaref.model.trace import Trace, scope
from adaref.nn import Embedding, Module, ModuleList, StateDictError
from adaref.nn.embedding import check_vocab_sizes
from adaref.nn.init import check_rng
from adaref.tensor import Tensor

FORMAT = "adaref.AdaEnsemble/1"
Form = Literal["soft", "expected", "straight_through", "hard", "full"]


@dataclass
class ModelOutput:
    """One forward pass over a batch of B examples.

    Attributes:
        prob: y_hat (B,), the predicted click probability.
        logit: (B,) logit of ``prob`` when the prediction is one estimator's (hard exit,
            full depth); None for the soft, expected and straight-through mixtures.
        expert_loss: eq. 16 summed over layers (the lambda_1 term of eq. 18, without lambda_1).
        depth_loss: eq. 16 over depths (the lambda_2 term), None without the controller.
        z_loss: router z-loss summed over all gates, None unless ``moe.z_loss``.
        routing: per-layer expert choices and per-example exit depth.
        flops: (B,) forward FLOPs of each example along its route (row 24).
        form: the propagation used: ``soft``, ``expected``, ``straight_through``, ``hard``
            or ``full``.
        k: the number of experts selected per example at each layer.
        layer_logits: (B, L) every estimator's logit z_l(x) in the forms that run every
            layer on every example (soft, expected, straight-through); else None.
        depth_probs: (B, L) the depth gate's p_l(x); None without the controller.
    """

    prob: Tensor
    logit: Tensor | None
    expert_loss: Tensor
    depth_loss: Tensor | None
    z_loss: Tensor | None
    routing: Routing
    flops: np.ndarray
    form: str
    k: int
    layer_logits: Tensor | None = None
    depth_probs: Tensor | None = None


class AdaEnsemble(Module):
    """The model. Input: per-field ids (B, F) from :mod:`adaref.data`; output: ModelOutput.

    Sub-modules: ``embedding`` (eq. 1), ``layers`` (L :class:`SparseMoELayer`),
    ``estimators`` (one per layer with the controller, else one for the last layer),
    ``controller`` (absent when ``controller.enabled`` is False).

    ``forward(ids, step=..., k=..., rng=..., form=...)``: k defaults to the annealing
    schedule at ``step``; ``form`` defaults to the controller's training form in training
    mode and to ``hard`` (Algorithm 1) in evaluation mode; without the controller it is
    always ``full`` (all L layers, the last estimator; Table 3's "w/o controller").
    ``step`` is a non-negative integer and ``k`` an integer in [1, N] (NumPy integers
    accepted); a float, a bool, an out-of-range value or an empty batch is refused.

    >>> import numpy as np
    >>> from adaref.model.config import model_config
    >>> cfg = model_config("paper", dim=4, num_layers=2)
    >>> model = AdaEnsemble(cfg, [5, 7, 3], rng=np.random.default_rng(0)).eval()
    >>> out = model(np.array([[1, 2, 0], [4, 6, 2]]), k=2)
    >>> out.prob.shape, out.form, out.routing.exit_depth.shape
    ((2,), 'hard', (2,))
    """

    def __init__(self, config: ModelConfig, vocab_sizes: Sequence[int], *,
                 rng: np.random.Generator, dtype=np.float64, steps_per_epoch: int | None = None):
        super().__init__()
        check_rng(rng, "AdaEnsemble")
        self.config = config
        self.vocab_sizes = check_vocab_sizes(vocab_sizes, "AdaEnsemble")
        self.dtype = np.dtype(dtype)
        check_model_memory(config, len(self.vocab_sizes), sum(self.vocab_sizes), self.dtype.itemsize)
        f, d, n_layers = len(self.vocab_sizes), config.dim, config.num_layers
        self.embedding = Embedding(self.vocab_sizes, d, rng=rng, oov=config.embedding_oov, dtype=dtype)
        self.layers = ModuleList([SparseMoELayer(config, f, rng=rng, dtype=dtype)
                                  for _ in range(n_layers)])
        n_est = n_layers if config.controller.enabled else 1
        self.estimators = ModuleList([Estimator(f * d, rng=rng, dtype=dtype) for _ in range(n_est)])
        if config.controller.enabled:
            self.controller = DepthController(config.controller, f * d, n_layers, rng=rng, dtype=dtype)
        # a schedule given in epochs needs the run's epoch length (the trainer passes it)
        self.steps_per_epoch = steps_per_epoch
        self.k_schedule = KSchedule(config.moe.schedule, len(config.moe.experts), steps_per_epoch)

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    # ------------------------------------------------------------------------------
    def forward(self, ids: np.ndarray, *, step: int = 0, k: int | None = None,
                rng: np.random.Generator | None = None, form: Form | None = None,
                trace: Trace | None = None) -> ModelOutput:
        """``trace``: an optional :class:`~adaref.model.trace.Trace` that records every
        named intermediate (:data:`adaref.model.trace.NAMES`) in forward order."""
        cfg = self.config
        ids = np.asarray(ids)
        if ids.ndim == 2 and ids.shape[0] == 0:
            raise ValueError(f"AdaEnsemble: the batch is empty (ids of shape {ids.shape}); "
                             "pass at least one example")
        step = check_step(step, "AdaEnsemble")
        k = self.k_schedule(step) if k is None else self._check_k(k)
        form = self._form(form)
        x0 = self.embedding(ids)                                               # (B, F, D)
        if trace is not None:
            trace("embedding", x0)
        gates_z: list[Tensor] = []
        depth = self.controller(x0, rng) if cfg.controller.enabled else None
        if depth is not None:
            gates_z.append(depth.logits)
            if trace is not None:
                trace("controller.logits", depth.logits)
                trace("controller.probs", depth.probs)
                trace("controller.exit_depth", depth.exit_depth.astype(np.int64))
        layer_logits = None                                                    # (B, L) every estimator's logit
        if form == "hard":
            logit, layers, expert_loss = self._dynamic(x0, depth.exit_depth, k, rng, gates_z, trace)
            prob, exit_depth = ops.sigmoid(logit), depth.exit_depth
        elif form == "full":
            logits, layers, expert_loss = self._all_layers(x0, k, rng, gates_z, form, trace)
            logit, exit_depth = logits[0], np.full(len(ids), self.num_layers)
            prob = ops.sigmoid(logit)
        else:
            logits, layers, expert_loss = self._all_layers(x0, k, rng, gates_z, form, trace)
            layer_logits = ops.stack(logits, axis=1)                           # (B, L)
            logit, prob, exit_depth = None, self._mixture(layer_logits, depth, form), depth.exit_depth
        depth_loss = None
        if depth is not None:
            fractions = load_fractions(depth.probs, depth.mask, "argmax")
            depth_loss = distribution_loss(depth.probs, fractions, cfg.controller.depth_prior)
        zl = None
        if cfg.moe.z_loss:
            zl = z_loss(gates_z[0])
            for g in gates_z[1:]:
                zl = zl + z_loss(g)
        routing = Routing(layers, exit_depth)
        if trace is not None:
            if logit is not None:
                trace("logit", logit)
            trace("prob", prob)
            trace("loss.expert", expert_loss)
            for name, value in (("loss.depth", depth_loss), ("loss.z", zl)):
                if value is not None:
                    trace(name, value)
        return ModelOutput(prob, logit, expert_loss, depth_loss, zl, routing,
                           self._route_flops(routing, form, len(ids)), form, k, layer_logits,
                           depth.probs if depth is not None else None)

    def _check_k(self, k) -> int:
        """k as an int; refuses a bool or non-integer k (TypeError) and one outside [1, N]."""
        n = len(self.config.moe.experts)
        what = f"AdaEnsemble: k must be an integer in [1, {n}] (experts per example)"
        if not is_int(k):
            raise TypeError(f"{what}, got {k!r} ({type(k).__name__})")
        if not 1 <= k <= n:
            raise ValueError(f"{what}, got {k!r}")
        return int(k)

    def _form(self, form: Form | None) -> str:
        ctl = self.config.controller
        if not ctl.enabled:
            if form not in (None, "full"):
                raise ValueError(f"AdaEnsemble: form {form!r} needs the controller (controller.enabled)")
            return "full"
        if form is None:
            return ctl.train_form if self.training else "hard"
        if form not in ("soft", "expected", "straight_through", "hard"):
            raise ValueError(f"AdaEnsemble: form must be soft, expected, straight_through or hard, got {form!r}")
        return form

    def _regularise(self, routing, expert_loss):
        moe = self.config.moe
        f = load_fractions(routing.probs, routing.mask, moe.load_fraction)
        loss = distribution_loss(routing.probs, f, moe.expert_prior)            # eq. 16
        return loss if expert_loss is None else expert_loss + loss

    def _all_layers(self, x0, k, rng, gates_z, form, trace=None):
        """Every example through every layer; the logit of each layer's estimator (or of
        the last layer only, without the controller)."""
        x, logits, layers, expert_loss = x0, [], [], None
        rows = np.arange(x0.shape[0])
        for l, layer in enumerate(self.layers):
            if trace is not None:
                trace(f"layers.{l}.rows", rows)
            x, routing = layer(x, x0, k, rng, scope(trace, f"layers.{l}"))     # (B, F, D)
            layers.append(LayerRouting(k, rows, routing.mask))
            expert_loss = self._regularise(routing, expert_loss)
            gates_z.append(routing.logits)
            if form != "full":
                logits.append(self.estimators[l](x))                           # (B,)
                if trace is not None:
                    trace(f"estimators.{l}.logit", logits[-1])
        if form == "full":
            logits.append(self.estimators[0](x))
            if trace is not None:
                trace("estimators.0.logit", logits[-1])
        return logits, layers, expert_loss

    def _mixture(self, layer_logits: Tensor, depth: DepthChoice, form) -> Tensor:
        """(B,) the depth mixture sum_l w_l(x) sigmoid(z_l(x)): w = p (soft; expected, whose
        loss is taken per depth in :func:`adaref.training.objective.task_loss`) or the
        one-hot exit with p's gradient (straight-through)."""
        probs = ops.sigmoid(layer_logits)                                      # (B, L)
        if form in ("soft", "expected"):
            weights = depth.probs                                              # p_l(x)
        else:                                                                  # straight-through
            weights = Tensor(depth.mask.astype(probs.dtype)) + (depth.probs - depth.probs.detach())
        return ops.sum(weights * probs, axis=1)

    def _dynamic(self, x0, exit_depth, k, rng, gates_z, trace=None):
        """Algorithm 1: examples leave at their exit depth; only the rest go deeper.

        Written as a loop over depths, which is the recursion of Algorithm 1 unrolled:
        at depth l the examples still active run layer l; those whose exit depth is l (all
        of them at the last layer) are predicted by estimator l, the others continue.
        A layer that no example reaches is not run.
        """
        b = x0.shape[0]
        active = np.arange(b)                                                  # batch rows
        x, x0_active = x0, x0
        layers, expert_loss, pieces, piece_rows = [], None, [], []
        for l, layer in enumerate(self.layers):
            if active.size == 0:
                break                                                          # nobody left
            if trace is not None:
                trace(f"layers.{l}.rows", active)
            x, routing = layer(x, x0_active, k, rng, scope(trace, f"layers.{l}"))
            layers.append(LayerRouting(k, active, routing.mask))
            expert_loss = self._regularise(routing, expert_loss)
            gates_z.append(routing.logits)
            leaving = exit_depth[active] == l + 1 if l + 1 < self.num_layers else np.ones(active.size, bool)
            out_local, keep_local = np.flatnonzero(leaving), np.flatnonzero(~leaving)
            if out_local.size:
                pieces.append(self.estimators[l](dispatch(x, out_local)))      # (n_exit,)
                piece_rows.append(active[out_local])
            if trace is not None:                                              # (n_exit,), maybe (0,)
                trace(f"estimators.{l}.logit", pieces[-1] if out_local.size else np.zeros(0, self.dtype))
            active = active[keep_local]
            if active.size:
                x, x0_active = dispatch(x, keep_local), dispatch(x0_active, keep_local)
        rows = np.concatenate(piece_rows)
        logit = ops.scatter_add(np.zeros(b, dtype=self.dtype), rows, ops.concatenate(pieces))
        if expert_loss is None:
            expert_loss = Tensor(np.zeros((), dtype=self.dtype))
        return logit, layers, expert_loss

    # ------------------------------------------------------------------------------
    def _route_flops(self, routing: Routing, form: str, batch: int) -> np.ndarray:
        """(B,) FLOPs per example along its route (docs/decisions.md row 24), in the
        convention of :mod:`adaref.experts.base`: the depth gate, and at every layer it
        reaches the layer's gate, residual and norm, its selected experts and the
        weighted combine (2 F*D per selected expert), then the estimator(s) it uses: one
        at its exit (hard/full) or all L plus the mixture (2L) in the soft and
        straight-through forms. The embedding lookup, the dispatch copies and the
        regularisers (training objectives: eqs. 13-16, the z-loss) count 0."""
        flops = np.zeros(batch, dtype=np.int64)
        fd = self.layers[0].gate.in_features
        if self.config.controller.enabled:
            flops += self.controller.flops()
        for layer, r in zip(self.layers, routing.layers):
            per_example = layer.fixed_flops(r.k) + r.mask.astype(np.int64) @ layer.expert_flops() \
                + 2 * fd * r.mask.sum(axis=1)
            np.add.at(flops, r.rows, per_example)
        if form in ("soft", "expected", "straight_through"):
            flops += sum(e.flops() for e in self.estimators) + 2 * self.num_layers
        else:
            flops += self.estimators[0].flops()
        return flops

    # ------------------------------------------------------------------------------
    def checkpoint_meta(self) -> dict[str, Any]:
        meta = {"format": FORMAT, "config": self.config.to_dict(), "vocab_sizes": self.vocab_sizes,
                "dtype": self.dtype.name}
        if self.steps_per_epoch is not None:
            meta["steps_per_epoch"] = self.steps_per_epoch
        return meta

    def save(self, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> None:
        """Weights and everything needed to rebuild the model (config, vocabulary sizes,
        dtype) in one ``.npz``, written atomically; ``meta`` adds more (e.g. training state)."""
        super().save(path, {**(meta or {}), "model": self.checkpoint_meta()})

    def load(self, path: str | os.PathLike) -> dict[str, Any]:
        """Load weights saved by :meth:`save` into this model; a checkpoint of a model
        with another config, vocabulary or dtype is refused, naming the difference."""
        _, meta = load_npz(path, meta_only=True)             # which model, before any array is read
        saved = meta.get("model")
        if not isinstance(saved, dict) or saved.get("format") != FORMAT:
            raise StateDictError(f"{path}: not an AdaEnsemble checkpoint (no '{FORMAT}' metadata)")
        mine = self.checkpoint_meta()
        for key in ("vocab_sizes", "dtype"):
            if saved.get(key) != mine[key]:
                raise StateDictError(f"{path}: checkpoint {key} {saved.get(key)} != model {key} {mine[key]}")
        diff = first_difference(saved.get("config"), mine["config"])
        if diff:
            raise StateDictError(f"{path}: checkpoint config differs from the model's at {diff}")
        arrays, meta = load_npz(path, limits={k: p.data.nbytes for k, p in self.named_parameters()})
        try:
            self.load_state_dict(arrays)
        except StateDictError as e:
            raise StateDictError(f"{path}: {e}") from None
        return meta

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike) -> "AdaEnsemble":
        """Rebuild a model from a checkpoint written by :meth:`save`."""
        _, meta = load_npz(path)
        saved = meta.get("model")
        if not isinstance(saved, dict) or saved.get("format") != FORMAT:
            raise StateDictError(f"{path}: not an AdaEnsemble checkpoint (no '{FORMAT}' metadata)")
        missing = [k for k in ("config", "vocab_sizes", "dtype") if k not in saved]
        if missing:
            raise StateDictError(f"{path}: the checkpoint's model metadata lacks {', '.join(missing)}")
        try:
            config = ModelConfig.from_dict(saved["config"])
        except ConfigError as e:
            raise StateDictError(f"{path}: the checkpoint's model config is not valid: {e}") from None
        if saved["dtype"] not in ("float32", "float64"):
            raise StateDictError(f"{path}: the checkpoint's dtype is {saved['dtype']!r}, not float32 or float64")
        sizes = saved["vocab_sizes"]
        if (not isinstance(sizes, list) or not sizes
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sizes)):
            raise StateDictError(f"{path}: the checkpoint's vocab_sizes is not a list of positive integers "
                                 f"(got {str(sizes)[:80]})")
        try:
            model = cls(config, sizes, rng=np.random.default_rng(0), dtype=np.dtype(saved["dtype"]),
                        steps_per_epoch=saved.get("steps_per_epoch"))
        except (ConfigError, ValueError) as e:       # too large for this machine; a bad epoch length
            raise StateDictError(f"{path}: {e}") from None
        model.load(path)
        return model


def first_difference(a: Any, b: Any, where: str = "config") -> str:
    """The dotted path of the first difference between two JSON-like values, or ''."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{where}.{key} (present in only one)"
            found = first_difference(a[key], b[key], f"{where}.{key}")
            if found:
                return found
        return ""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        a, b = list(a), list(b)
    return "" if a == b else f"{where}: {a!r} != {b!r}"
