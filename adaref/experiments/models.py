"""The models of §4's tables and figures, each as a change of a base
:class:`~adaref.training.config.RunConfig`.

* the 13 competing models of §4.1.3 (:data:`BASELINES`, Table 1's order): the base run
  with ``baseline.name`` and the §4.1.4 optimisers
  (:func:`~adaref.training.config.baseline_train_config`); on the bundled samples and
  planted data the two slowest take smaller sizes (:data:`SMALL_OPTIONS`);
* AdaEnsemble: the base run unchanged;
* its variants (Tables 2-3, Figure 5): :func:`ada_variant` fixes k (a ``constant``
  schedule: every step and the evaluation use that k), turns the depth controller on
  or off, keeps a subset of the experts, or sets the depth L.

A :class:`Variant` is a run to make at each seed: a directory ``name``, a ``label`` for
the tables and the ``family`` whose hyper-parameter grid decides its setting (every
AdaEnsemble variant takes the setting searched for AdaEnsemble itself: see
:mod:`adaref.experiments.grid`).
"""
from __future__ import annotations

from dataclasses import dataclass

from adaref.training.config import BaselineChoice, RunConfig, baseline_train_config

__all__ = ["BASELINES", "LABELS", "EXPERT_LABELS", "SMALL_OPTIONS", "Variant", "baseline",
           "adaensemble", "ada_variant", "table1_models"]

#: Table 1's competing models, in its order.
BASELINES = ("lr", "fm", "dnn", "wide_deep", "deepfm", "deep_crossing", "dcn", "pnn", "xdeepfm",
             "autoint", "fibinet", "xdeepint", "dcn_v2")

#: Table 1's row names.
LABELS = {"lr": "LR", "fm": "FM", "dnn": "DNN", "wide_deep": "Wide&Deep", "deepfm": "DeepFM",
          "deep_crossing": "DeepCrossing", "dcn": "DCN", "pnn": "PNN", "xdeepfm": "xDeepFM",
          "autoint": "AutoInt", "fibinet": "FiBiNET", "xdeepint": "xDeepInt", "dcn_v2": "DCN V2",
          "adaensemble": "AdaEnsemble"}

#: adaref's expert names -> Table 2's ("Polynomial" is the PIN expert, eq. 5).
EXPERT_LABELS = {"dense": "Dense", "cross": "Cross", "pin": "Polynomial", "conv": "CNN", "mhsa": "MHSA"}

#: Smaller sizes for the bundled samples and planted data (D = 8, 7k training rows),
#: where the defaults of docs/baselines.md cost most of the time of Table 1: AutoInt
#: 2 interacting layers of 2 heads of 16 (default 3 layers, heads of 32: 3.95M FLOPs per
#: example at F = 39, D = 8, against 0.83M), xDeepFM a CIN of (32, 32) maps and a (128,
#: 128) DNN (default (128, 128) and (256, 256): 13.7M against 1.55M). ``--full-size``
#: keeps the defaults; on ``--data`` files they are always kept.
SMALL_OPTIONS = {
    "autoint": {"layers": 2, "heads": 2, "head_size": 16},
    "xdeepfm": {"cin_layers": [32, 32], "hidden": [128, 128]},
}


@dataclass(frozen=True)
class Variant:
    """One model of an experiment: its run (before the seed and the grid's setting), a
    directory ``name``, a table ``label`` and the grid ``family`` that sets it."""

    name: str
    label: str
    run: RunConfig
    family: str


def baseline(base: RunConfig, name: str, small: bool = False) -> Variant:
    """Competing model ``name`` on ``base``'s data and training budget (§4.1.4 optimisers)."""
    options = dict(SMALL_OPTIONS.get(name, {})) if small else {}
    run = base.replace(train=baseline_train_config(name, base.train), baseline=BaselineChoice(name, options))
    return Variant(name, LABELS[name], run, name)


def adaensemble(base: RunConfig) -> Variant:
    return Variant("adaensemble", "AdaEnsemble", base, "adaensemble")


def ada_variant(base: RunConfig, name: str, label: str, *, k: int | None = None,
                controller: bool | None = None, experts: tuple[str, ...] | None = None,
                layers: int | None = None) -> Variant:
    """AdaEnsemble with a fixed ``k`` (a constant schedule), the controller on/off, only
    ``experts``, or ``layers`` SparseMoE layers; what is not given stays as in ``base``.

    >>> from adaref.training.config import sample_defaults
    >>> v = ada_variant(sample_defaults(), "single-pin", "PIN", k=1, controller=False, experts=("pin",))
    >>> v.run.model.moe.experts, v.run.model.moe.schedule.kind, v.run.model.controller.enabled
    (('pin',), 'constant', False)
    """
    model = base.model
    moe, ctl = model.moe.to_dict(), model.controller.to_dict()
    if experts is not None:
        moe["experts"] = tuple(experts)
        moe["expert_prior"] = ()            # one weight per expert: back to uniform
    if k is not None:
        moe["schedule"] = {**moe["schedule"], "kind": "constant", "k": k, "boundaries": ()}
    if controller is not None:
        ctl["enabled"] = controller
    changes = {"moe": moe, "controller": ctl}
    if layers is not None:
        changes["num_layers"] = layers
        if len(ctl["depth_prior"]) not in (0, layers):
            ctl["depth_prior"] = ()
    if experts is not None:
        changes["expert_options"] = {e: o for e, o in model.expert_options.items() if e in experts}
    return Variant(name, label, base.replace(model=model.replace(**changes)), "adaensemble")


def table1_models(base: RunConfig, small: bool, names: tuple[str, ...] | None = None) -> list[Variant]:
    """Table 1's rows: the 13 competing models and AdaEnsemble (or those in ``names``)."""
    wanted = names or BASELINES + ("adaensemble",)
    return [adaensemble(base) if n == "adaensemble" else baseline(base, n, small) for n in wanted]
