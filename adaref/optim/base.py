"""The optimiser base class: named parameters, in-place steps, checkpointable state.

Every optimiser in :mod:`adaref.optim` is one pure **update rule**

    rule(w, g, *slots) -> (w_new, *slots_new)

written with the equations in its docstring, and this class does the rest:

* ``step()`` applies the rule to every parameter whose ``.grad`` is not None (a
  parameter with ``grad is None`` got no gradient this step and is skipped: its weights
  and its state stay bit-identical) and writes the results **in place** into ``p.data``
  and into the state arrays, so every reference to a parameter sees the new values.
* A dense gradient (an ndarray shaped like the parameter) updates every element.
* A :class:`~adaref.tensor.RowSparseGrad` (from an embedding lookup) updates only its
  ``rows``: the rule runs on the gathered rows ``w[rows]`` (R, D), ``g.values`` (R, D)
  and ``slot[rows]`` (R, D), and the results are scattered back
  (:meth:`Optimizer.update_rows_in_place`; Adam does it in one kernel pass with the same
  bits). Every other row, of the weights and of the state, is untouched (bit-identical). This is the **lazy** (sparse)
  update; config ``sparse_update="dense"`` instead densifies the gradient first (zero
  rows and all), which is what frameworks without sparse kernels compute.
* All gradients are checked before anything is written (shape, dtype, finiteness,
  row indices), so a failing ``step()`` leaves weights and state unchanged.
* ``state_dict()`` is ``{"step": int, "<slot>.<param name>": array, ...}``, e.g.
  ``"m.layers.0.weight"``: plain NumPy, storable with :func:`adaref.io.save_npz`.
  ``load_state_dict()`` refuses a missing, unexpected, mis-shaped or mis-typed entry,
  naming it, and otherwise copies in place. Saving the model's and the optimiser's
  state and loading both into fresh objects continues training **bit for bit**.

State is allocated eagerly at construction, with the parameter's shape and dtype (a
float32 parameter keeps float32 state and stays float32). ``step`` counts calls to
:meth:`step`; Adam's bias correction uses it (the optimiser's global step, as
TensorFlow does, not a per-parameter or per-row count).

>>> import numpy as np
>>> from adaref.nn import Parameter
>>> from adaref.optim import SGD
>>> w = Parameter(np.array([1.0, -2.0]))
>>> opt = SGD([("w", w)], lr=0.5)
>>> w.grad = np.array([0.2, 0.4])
>>> opt.step()                      # w <- w - lr * g
>>> w.data
array([ 0.9, -2.2])
>>> opt.state_dict()
{'step': 1}
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Iterable, Literal, Mapping

import numpy as np

from adaref.config import Config, ConfigError
from adaref.nn.module import StateDictError, check_state_array, check_state_keys
from adaref.tensor import RowSparseGrad, Tensor

__all__ = ["Optimizer", "OptimizerConfig", "StateDictError"]

@dataclasses.dataclass(frozen=True)
class OptimizerConfig(Config):
    """Base of the optimisers' configs: adds value checks to :class:`~adaref.config.Config`.

    Subclasses list their hyper-parameters as typed, commented fields and state their
    constraints in :meth:`_check`; a violated one is a :class:`ConfigError` naming the key.
    """

    def __post_init__(self) -> None:
        self._check()

    def _check(self) -> None:  # overridden
        pass

    def _require(self, ok: bool, key: str, rule: str) -> None:
        if not ok:
            raise ConfigError(f"{type(self).__name__}: {key} must be {rule}, "
                              f"got {getattr(self, key)!r}")


SparseUpdate = Literal["lazy", "dense"]


def _named(params: Iterable[Any], owner: str) -> list[tuple[str, Tensor]]:
    """``[(name, parameter)]`` from Parameters (named "0", "1", ...) or (name, Parameter)."""
    items = list(params)
    if not items:
        raise ValueError(f"{owner}: got an empty parameter list")
    named = all(isinstance(i, tuple) for i in items)
    if not named and any(isinstance(i, tuple) for i in items):
        raise TypeError(f"{owner}: give either Parameters or (name, Parameter) pairs, not a mix")
    pairs = items if named else [(str(k), p) for k, p in enumerate(items)]
    seen_names: set[str] = set()
    seen_ids: dict[int, str] = {}
    for entry in pairs:
        if len(entry) != 2 or not isinstance(entry[0], str) or not entry[0]:
            raise TypeError(f"{owner}: a named parameter must be a (non-empty str, Parameter) "
                            f"pair, got {entry!r}")
        name, p = entry
        if not isinstance(p, Tensor):
            raise TypeError(f"{owner}: parameter {name!r} is a {type(p).__name__}, not a Parameter")
        if name in seen_names:
            raise ValueError(f"{owner}: two parameters are named {name!r}")
        if id(p) in seen_ids:
            raise ValueError(f"{owner}: parameter {name!r} is the same object as "
                             f"{seen_ids[id(p)]!r}; give each parameter once")
        seen_names.add(name)
        seen_ids[id(p)] = name
    return pairs


class Optimizer:
    """Base class. Subclasses set ``config_class`` and define :meth:`slots`,
    :meth:`init_slot` and :meth:`rule`.

    Args:
        params: Parameters, or (name, Parameter) pairs such as
            ``model.named_parameters()``; names key the state dict.
        config: the optimiser's config object (or a dict for ``from_dict``); or give the
            hyper-parameters as keyword arguments instead.
    """

    config_class: ClassVar[type[OptimizerConfig]] = OptimizerConfig

    def __init__(self, params: Iterable[Any], config: Any = None, **hyper: Any):
        owner = type(self).__name__
        cls = type(self).config_class
        if config is None:
            config = cls.from_dict(hyper)
        elif hyper:
            raise TypeError(f"{owner}: give a config or keyword hyper-parameters, not both")
        elif isinstance(config, dict):
            config = cls.from_dict(config)
        elif not isinstance(config, cls):
            raise TypeError(f"{owner}: config must be a {cls.__name__} or a dict, "
                            f"got {type(config).__name__}")
        self.config = config
        self.params: list[tuple[str, Tensor]] = _named(params, owner)
        for name, p in self.params:
            self.check_parameter(name, p)
        self.step_count = 0
        # state[slot][param name] has the parameter's shape and dtype
        self.state: dict[str, dict[str, np.ndarray]] = {
            slot: {name: self.init_slot(slot, p.data) for name, p in self.params}
            for slot in self.slots()}

    # --- what a subclass defines ------------------------------------------------------
    def slots(self) -> tuple[str, ...]:
        """Names of the per-parameter state arrays, in the order :meth:`rule` takes them."""
        return ()

    def init_slot(self, slot: str, w: np.ndarray) -> np.ndarray:
        """The initial value of ``slot`` for a parameter with values ``w`` (default zeros)."""
        return np.zeros_like(w)

    def check_parameter(self, name: str, p: Tensor) -> None:
        """Refuse a parameter this optimiser cannot update (e.g. GroupFTRL needs 2-D)."""

    def rule(self, w: np.ndarray, g: np.ndarray, *slots: np.ndarray) -> tuple[np.ndarray, ...]:
        """The update: new weights and new slots from weights, gradient and slots.

        Pure: must not modify its inputs. Runs on whole parameters or on gathered rows.
        """
        raise NotImplementedError(f"{type(self).__name__}.rule")

    # --- stepping -----------------------------------------------------------------------
    def zero_grad(self) -> None:
        """Forget every parameter's gradient (``grad = None``)."""
        for _, p in self.params:
            p.grad = None

    def step(self) -> None:
        """One update of every parameter that has a gradient, in place."""
        grads = [(name, p, self._checked_grad(name, p))
                 for name, p in self.params if p.grad is not None]
        self.step_count += 1
        for name, p, g in grads:
            state = [self.state[slot][name] for slot in self.slots()]
            if isinstance(g, RowSparseGrad):
                self.update_rows_in_place(p.data, np.asarray(g.rows), np.asarray(g.values), *state)
            else:
                self.update_in_place(p.data, g, *state)

    def update_in_place(self, w: np.ndarray, g: np.ndarray, *slots: np.ndarray) -> None:
        """Apply :meth:`rule` to a whole parameter and write the results into ``w`` and the
        slots. A subclass may override it with a fused kernel that gives the same bits."""
        new = self.rule(w, g, *slots)
        w[...] = new[0]
        for s, value in zip(slots, new[1:]):
            s[...] = value

    def update_rows_in_place(self, w: np.ndarray, rows: np.ndarray, g: np.ndarray,
                             *slots: np.ndarray) -> None:
        """Apply :meth:`rule` to the rows ``rows`` (R,) (unique) of a parameter w (V, D)
        and of its slots, with their gradients g (R, D); other rows are untouched. A
        subclass may override it with a fused kernel that gives the same bits."""
        new = self.rule(w[rows], g, *(s[rows] for s in slots))
        w[rows] = new[0]                                              # (R, D) scattered back
        for s, value in zip(slots, new[1:]):
            s[rows] = value

    def _checked_grad(self, name: str, p: Tensor) -> "np.ndarray | RowSparseGrad":
        owner = f"{type(self).__name__}: parameter {name!r}"
        g = p.grad
        if isinstance(g, RowSparseGrad):
            if p.ndim != 2 or tuple(g.shape) != p.shape:
                raise ValueError(f"{owner} has shape {p.shape} but its row-sparse gradient "
                                 f"has shape {tuple(g.shape)}")
            rows, values = np.asarray(g.rows), np.asarray(g.values)
            if rows.ndim != 1 or rows.dtype.kind not in "iu":
                raise ValueError(f"{owner}: gradient rows must be a 1-D integer array, "
                                 f"got {rows.dtype} of shape {rows.shape}")
            if values.shape != (len(rows), p.shape[1]):
                raise ValueError(f"{owner}: gradient values have shape {values.shape}, "
                                 f"expected ({len(rows)}, {p.shape[1]}) for {len(rows)} rows")
            if len(rows) and (rows[0] < 0 or rows[-1] >= p.shape[0] or np.any(np.diff(rows) <= 0)):
                raise ValueError(f"{owner}: gradient rows must be unique, sorted and in "
                                 f"[0, {p.shape[0]}), got {rows.tolist()[:10]}")
            self._check_values(owner, values, p)
            if getattr(self.config, "sparse_update", "lazy") == "dense":
                return g.to_dense()
            return g
        if not isinstance(g, np.ndarray):
            raise TypeError(f"{owner}: gradient must be an ndarray or a RowSparseGrad, "
                            f"got {type(g).__name__}")
        if g.shape != p.shape:
            raise ValueError(f"{owner} has shape {p.shape} but its gradient has shape {g.shape}")
        self._check_values(owner, g, p)
        return g

    @staticmethod
    def _check_values(owner: str, values: np.ndarray, p: Tensor) -> None:
        if values.dtype != p.dtype:
            raise TypeError(f"{owner} is {p.dtype} but its gradient is {values.dtype} "
                            f"(no silent casts)")
        # a sum is finite only if every term is (NaN and infinities carry through); one that
        # is not may only have overflowed, so then look at every element
        with np.errstate(over="ignore", invalid="ignore"):
            total = values.sum()
        if not np.isfinite(total) and not np.all(np.isfinite(values)):
            raise FloatingPointError(f"{owner}: gradient holds NaN or infinity")

    # --- checkpointing ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """``{"step": int, "<slot>.<name>": array copy}``: plain NumPy, ``.npz``-ready."""
        out: dict[str, Any] = {"step": self.step_count}
        for slot in self.slots():
            for name, value in self.state[slot].items():
                out[f"{slot}.{name}"] = value.copy()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Copy a :meth:`state_dict` back in place; refuse any mismatch, naming the key.

        ``step`` may be an int or a 0-d integer array (as read back from ``.npz``).
        """
        owner = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state, Mapping):
            raise StateDictError(f"{owner}: expected a mapping of keys to arrays, "
                                 f"got {type(state).__name__}")
        params = dict(self.params)
        expected = {"step": None}
        expected.update({f"{slot}.{name}": (slot, name) for slot in self.slots()
                         for name in params})
        check_state_keys(owner, expected, state, "key(s)")
        step = np.asarray(state["step"])
        if step.shape != () or step.dtype.kind not in "iu" or int(step) < 0:
            raise StateDictError(f"{owner}: key step must be a non-negative integer, "
                                 f"got {state['step']!r}")
        for key, where in expected.items():
            if where is None:
                continue
            check_state_array(owner, f"key {key}", state[key], params[where[1]], "the parameter has")
        for key, where in expected.items():
            if where is not None:
                np.copyto(self.state[where[0]][where[1]], state[key])
        self.step_count = int(step)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r}, {len(self.params)} parameters)"
