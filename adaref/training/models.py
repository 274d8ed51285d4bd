"""The model a run trains: AdaEnsemble, or one of the competing models of §4.1.3.

:func:`build_model` builds it from a :class:`~adaref.training.config.RunConfig`;
:func:`model_output` runs a forward pass and returns a
:class:`~adaref.model.adaensemble.ModelOutput` for either kind, so that the objective
(eq. 18), the trainer and evaluation treat both alike. A competing model's output has
no regulariser terms (the expert term is 0, the depth and z terms absent), no routing
and its fixed FLOPs per example.

>>> import numpy as np
>>> from adaref.training.config import RunConfig, BaselineChoice, TrainConfig
>>> run = RunConfig(baseline=BaselineChoice("fm"), train=TrainConfig(bilevel="off"))
>>> model = build_model(run, [3, 5, 2], np.random.default_rng(0))
>>> out = model_output(model, np.array([[1, 4, 0], [2, 0, 1]]))
>>> out.prob.shape, out.expert_loss.item(), out.depth_loss, out.form
((2,), 0.0, None, 'full')
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from adaref import ops
from adaref.baselines import Baseline, build_baseline
from adaref.model import AdaEnsemble
from adaref.model.adaensemble import ModelOutput
from adaref.model.routing import Routing
from adaref.nn import Module
from adaref.tensor import Tensor

__all__ = ["build_model", "model_output", "is_adaensemble", "model_name"]


def build_model(run, vocab_sizes: Sequence[int], rng: np.random.Generator,
                steps_per_epoch: int | None = None) -> Module:
    """AdaEnsemble from ``run.model``, or ``run.baseline.name`` with ``run.baseline.options``
    (``dim`` and ``embedding_oov`` default to ``run.model``'s). ``steps_per_epoch``: the
    training run's epoch length, for a k schedule given in epochs."""
    dtype = np.dtype(run.dtype)
    if not run.baseline.name:
        return AdaEnsemble(run.model, vocab_sizes, rng=rng, dtype=dtype, steps_per_epoch=steps_per_epoch)
    from adaref.baselines import MODELS

    config_cls = MODELS[run.baseline.name][0]
    fields = set(config_cls.__dataclass_fields__)
    options = dict(run.baseline.options)
    if "dim" in fields:
        options.setdefault("dim", run.model.dim)
    if "embedding_oov" in fields:
        options.setdefault("embedding_oov", run.model.embedding_oov)
    return build_baseline(run.baseline.name, options, vocab_sizes, rng=rng, dtype=dtype)


def is_adaensemble(model: Module) -> bool:
    return isinstance(model, AdaEnsemble)


def model_name(model: Module) -> str:
    return "AdaEnsemble" if is_adaensemble(model) else type(model).name


def model_output(model: Module, ids: np.ndarray, *, step: int = 0, rng: np.random.Generator | None = None,
                 k: int | None = None, form: str | None = None) -> ModelOutput:
    """One forward pass of either kind of model over ids (B, F)."""
    if is_adaensemble(model):
        return model(ids, step=step, rng=rng, k=k, form=form)
    if not isinstance(model, Baseline):
        raise TypeError(f"model_output: expected AdaEnsemble or a baseline, got {type(model).__name__}")
    logit = model(ids)                                                          # (B,)
    b = logit.shape[0]
    return ModelOutput(ops.sigmoid(logit), logit, Tensor(np.zeros((), dtype=logit.dtype)), None, None,
                       Routing([], np.ones(b, dtype=np.int64)),
                       np.full(b, float(model.flops_per_example())), "full", 0)
