"""Hyper-parameters by grid search on the validation split (§4.1.4), never the test split.

The grid is small, one optimiser rate per model, from the ranges of §4.1.4:

* the models trained with Adam (the neural baselines, AdaEnsemble): ``lr`` in
  {1e-3, 3e-4} (§4.1.4: 1e-4 to 1e-3). For the baselines it is the rate of every
  parameter, embeddings included; for AdaEnsemble the rate of the weights and of the
  gates, its embedding table keeping its G-FTRL;
* LR and FM (FTRL-Proximal): ``alpha`` in {0.01, 0.05, 0.1} (§4.1.4: 1e-2 to 1e-1).

The search trains each setting once, at the first seed of ``--seeds`` (0 by default),
and keeps the one with the best validation AUC (the best evaluation of the run, the
one early stopping selected; a tie goes to the first in the grid's order); every seed
is then run with that setting. The AdaEnsemble variants of Tables 2-3 and Figure 5
(fixed k, no controller, single experts, other depths) take AdaEnsemble's choice rather
than a search of their own. The paper's grid also covers L2 weights, layer counts and
widths; searching those would multiply the runs and is left to ``--set``.
With ``--quick`` or ``--no-grid`` the grid is the default setting alone.

>>> from adaref.training.config import sample_defaults
>>> grid_for(sample_defaults())
[{'lr': 0.001}, {'lr': 0.0003}]
>>> run = apply_setting(sample_defaults(), {"lr": 3e-4})
>>> run.train.optimizer.options["lr"], run.train.gate_optimizer.options["lr"], run.train.embedding_optimizer.name
(0.0003, 0.0003, 'gftrl')
"""
from __future__ import annotations

from dataclasses import dataclass, field

from adaref.config import ConfigError
from adaref.experiments.models import Variant
from adaref.training.config import OptimizerChoice, RunConfig

__all__ = ["GRIDS", "grid_for", "default_setting", "apply_setting", "select", "GridResult", "Tuner"]

#: optimiser name -> (its searched option, the values, in order)
GRIDS = {"adam": ("lr", (1e-3, 3e-4)), "ftrl": ("alpha", (0.01, 0.05, 0.1))}


def _searched(run: RunConfig) -> tuple[str, str, tuple]:
    name = run.train.optimizer.name
    if name not in GRIDS:
        raise ConfigError(f"no grid for optimizer {name!r}; the grids cover {', '.join(GRIDS)}")
    key, values = GRIDS[name]
    return name, key, values


def grid_for(run: RunConfig) -> list[dict]:
    """The settings searched for ``run`` (by the optimiser of its weights)."""
    _, key, values = _searched(run)
    return [{key: v} for v in values]


def default_setting(run: RunConfig) -> dict:
    """The run's own value of the searched option.

    >>> from adaref.training.config import sample_defaults, baseline_train_config
    >>> default_setting(sample_defaults().replace(train=baseline_train_config("fm", sample_defaults().train)))
    {'alpha': 0.05}
    """
    name, key, values = _searched(run)
    return {key: run.train.optimizer.options.get(key, values[0])}


def apply_setting(run: RunConfig, setting: dict) -> RunConfig:
    """``run`` with the setting on every optimiser slot of the grid's optimiser (Adam:
    ``lr``; FTRL: ``alpha``); the other slots (AdaEnsemble's G-FTRL) unchanged."""
    name, key, _ = _searched(run)
    unknown = set(setting) - {key}
    if unknown:
        raise ConfigError(f"setting {setting}: the grid of {name} searches {key!r} only")
    changes = {}
    for slot in ("optimizer", "embedding_optimizer", "gate_optimizer"):
        choice = getattr(run.train, slot)
        if choice.name == name:
            changes[slot] = OptimizerChoice(choice.name, {**choice.options, **setting})
    return run.replace(train=run.train.replace(**changes))


def select(trials: list[tuple[dict, float | None]]) -> dict:
    """The setting with the best validation AUC; a tie goes to the first.

    >>> select([({"lr": 1e-3}, 0.71), ({"lr": 3e-4}, 0.72)])
    {'lr': 0.0003}
    """
    if not trials:
        raise ValueError("select: no trials")
    missing = [s for s, auc in trials if auc is None]
    if missing:
        raise ValueError(f"select: no validation AUC for {missing} (the data has no validation split)")
    best = max(range(len(trials)), key=lambda i: (trials[i][1], -i))
    return dict(trials[best][0])


@dataclass
class GridResult:
    """One family's search: the trials at ``seed`` and the chosen setting."""

    family: str
    seed: int
    mode: str                               # "grid" or "default"
    trials: list = field(default_factory=list)   # RunRecords, one per setting
    chosen: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"family": self.family, "seed": self.seed, "mode": self.mode,
                "criterion": "validation AUC of the run's best evaluation",
                "trials": [{"setting": r.setting, "val_auc": r.val_auc, "dir": r.dir} for r in self.trials],
                "chosen": self.chosen}


class Tuner:
    """Searches each family's grid once per invocation and runs variants with the choice.

    ``mode``: ``grid`` (search :func:`grid_for`) or ``default`` (the run's own setting
    only). ``runner`` is anything with ``run(run, name, label, setting) -> RunRecord``.
    """

    def __init__(self, runner, seeds: list[int], mode: str = "grid"):
        if mode not in ("grid", "default"):
            raise ValueError(f"Tuner: mode must be grid or default, got {mode!r}")
        self.runner, self.seeds, self.mode = runner, list(seeds), mode
        self.results: dict[str, GridResult] = {}

    def setting(self, reference: Variant) -> dict:
        """The chosen setting of ``reference.family``, searched on ``reference`` at the
        first seed (once)."""
        family = reference.family
        if family not in self.results:
            seed = self.seeds[0]
            grid = grid_for(reference.run) if self.mode == "grid" else [default_setting(reference.run)]
            result = GridResult(family, seed, self.mode)
            for s in grid:
                result.trials.append(self.runner.run(apply_setting(reference.run, s).replace(seed=seed),
                                                     reference.name, reference.label, s))
            result.chosen = select([(r.setting, r.val_auc) for r in result.trials])
            self.results[family] = result
        return self.results[family].chosen

    def runs(self, variant: Variant, reference: Variant | None = None) -> list:
        """``variant`` at every seed with its family's setting (searched on ``reference``,
        by default the variant itself)."""
        chosen = self.setting(reference or variant)
        run = apply_setting(variant.run, chosen)
        return [self.runner.run(run.replace(seed=s), variant.name, variant.label, chosen) for s in self.seeds]

    def to_dict(self) -> dict:
        return {family: r.to_dict() for family, r in self.results.items()}
