"""Configuration of a training run: data, model and training options in one JSON document.

``RunConfig`` = ``data`` (which data set, preset, seed) + ``model``
(:class:`~adaref.model.config.ModelConfig`) + ``train`` (:class:`TrainConfig`). Every key
is checked: unknown keys and wrong types are errors naming the key. ``config.json`` in
a run directory is exactly this document, so a run can be repeated from it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from adaref.config import Config, ConfigError
from adaref.model.config import ModelConfig, model_config


#: Largest xi accepted (Algorithm 2's unrolled step size; DARTS uses the W learning rate).
MAX_XI = 1.0


@dataclass(frozen=True)
class OptimizerChoice(Config):
    """One optimiser by registry name (``adaref.optim.OPTIMIZERS``) and its hyper-parameters."""

    name: str = "adam"                    # sgd, adam, ftrl (FTRL-Proximal) or gftrl (group-lasso FTRL per row)
    options: dict = field(default_factory=dict)   # JSON of its hyper-parameters, e.g. {"lr": 1e-3}


@dataclass(frozen=True)
class TrainConfig(Config):
    """The training loop (§3.6, §4.1.4; docs/decisions.md rows 20-23)."""

    batch_size: int = 256                 # training mini-batch (the paper: 4096 on full data)
    shuffle: bool = True                  # a new random order every epoch; false: file order (authors' code)
    epochs: float = 10.0                  # passes over the training split (an upper bound)
    max_steps: int = 0                    # stop after this many W steps (0: no limit)
    eval_every: int = 50                  # evaluate on the validation split every N W steps
    evals_per_epoch: float = 0.0          # > 0: evaluate every min(eval_every, ceil(steps per epoch / this))
    # ^ steps, so that a run on a small data set is evaluated and early-stopped more than once
    eval_batch_size: int = 4096           # examples per evaluation forward pass
    patience: int = 5                     # early stopping: evaluations without improvement
    lambda1: float = 0.01                 # eq. 18: weight of the expert load-distribution term
    lambda2: float = 0.01                 # eq. 18: weight of the depth load-distribution term
    z_loss: float = 0.0                   # weight of the router z-loss (upstream preset: 1.0)
    exit_loss: float = 0.0                # weight of the mean of every estimator's own log-loss (deep
    # ^ supervision, as BranchyNet's joint exit loss; not part of eq. 18): every estimator learns
    #   to predict alone whatever weight the depth gate gives it (docs/decisions.md row 18)
    bilevel: Literal["on", "off"] = "on"  # Algorithm 2 (on) or one joint step on training batches (off)
    inner_steps: int = 1                  # t of Algorithm 2: W steps per alpha step
    alpha_batch_size: int = 0             # validation examples per alpha step; 0: batch_size (Algorithm 2
    # ^ and DARTS use one size). The alpha step costs a forward and a pruned backward pass, about
    #   0.7 of a W step at the same size (python -m adaref.bench train); half the size halves that
    xi: float = 0.0                       # Algorithm 2's xi: 0 first order, > 0 DARTS second order
    darts_eps: float = 0.01               # xi > 0: the Hessian-vector product's finite-difference step is
    # ^ darts_eps / ||v|| (DARTS' 0.01); the ReLUs' kinks make it an approximation (docs/training.md)
    alpha_val: Literal["split", "shared"] = "split"
    # ^ validation rows for alpha steps: "split" reserves a fixed half of the validation split
    #   for alpha and evaluates/early-stops on the other half (alpha can fit the rows it is
    #   trained on); "shared" uses the whole split for both, as Algorithm 2 reads literally
    embedding_optimizer: OptimizerChoice = field(
        default_factory=lambda: OptimizerChoice("gftrl", {}))            # G-FTRL on embeddings (§4.1.4)
    optimizer: OptimizerChoice = field(
        default_factory=lambda: OptimizerChoice("adam", {"lr": 1e-3}))   # W: experts, norms, estimators
    gate_optimizer: OptimizerChoice = field(
        default_factory=lambda: OptimizerChoice("adam", {"lr": 1e-3}))   # alpha: gates and controller

    def __post_init__(self):
        for key in ("batch_size", "eval_every", "eval_batch_size", "inner_steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"TrainConfig: {key} must be >= 1, got {getattr(self, key)}")
        if self.epochs <= 0:
            raise ConfigError(f"TrainConfig: epochs must be > 0, got {self.epochs}")
        if not self.darts_eps > 0:
            raise ConfigError(f"TrainConfig: darts_eps must be > 0, got {self.darts_eps}")
        for key in ("max_steps", "patience", "xi", "lambda1", "lambda2", "z_loss", "exit_loss",
                    "alpha_batch_size", "evals_per_epoch"):
            if getattr(self, key) < 0:
                raise ConfigError(f"TrainConfig: {key} must be >= 0, got {getattr(self, key)}")
        if self.xi > MAX_XI:
            raise ConfigError(f"TrainConfig: xi must be in [0, {MAX_XI:g}], got {self.xi:g} (the step size of "
                              f"Algorithm 2's unrolled W step, like a learning rate; larger values overflow "
                              f"the unrolled weights)")
        if self.alpha_val not in ("split", "shared"):
            raise ConfigError(f"TrainConfig: alpha_val must be 'split' or 'shared', got {self.alpha_val!r}")
        if self.bilevel not in ("on", "off"):
            raise ConfigError(f"TrainConfig: bilevel must be 'on' or 'off', got {self.bilevel!r}")


@dataclass(frozen=True)
class BaselineChoice(Config):
    """A competing model of §4.1.3 (Table 1) trained instead of AdaEnsemble."""

    name: str = ""                        # lr, fm, dnn, wide_deep, deepfm, deep_crossing, dcn, pnn, xdeepfm,
    # ^ autoint, fibinet, xdeepint or dcn_v2 (adaref.baselines.MODELS); "" trains AdaEnsemble
    options: dict = field(default_factory=dict)   # its config keys, e.g. {"hidden": [256, 128]}; dim and
    # ^ embedding_oov default to model.dim and model.embedding_oov

    def __post_init__(self):
        from adaref.baselines import MODELS

        if self.name and self.name not in MODELS:
            raise ConfigError(f"BaselineChoice: unknown model {self.name!r}; choose one of "
                              f"{', '.join(MODELS)} (or leave it empty for AdaEnsemble)")
        if not isinstance(self.options, dict):
            raise ConfigError(f"BaselineChoice: options must be an object of the model's config keys, "
                              f"got {self.options!r}")


@dataclass(frozen=True)
class DataChoice(Config):
    """Which data: a bundled sample or a file, the data preset, and the split seed."""

    dataset: Literal["criteo", "avazu", "ipinyou"] = "criteo"
    sample: bool = True                   # the bundled sample (data_samples/) instead of ``path``
    path: str = ""                        # raw data file when ``sample`` is false
    preset: Literal["paper", "upstream"] = "paper"
    overrides: dict = field(default_factory=dict)   # data options by dotted name, e.g. transform.rare_threshold

    def __post_init__(self):
        if not self.sample and not self.path:
            raise ConfigError("DataChoice: give a path when sample is false")


@dataclass(frozen=True)
class RunConfig(Config):
    """Everything needed to repeat a run."""

    data: DataChoice = field(default_factory=DataChoice)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    baseline: BaselineChoice = field(default_factory=BaselineChoice)   # a competing model instead
    seed: int = 0                         # splits, initialisation, batch order, gate jitter
    dtype: Literal["float32", "float64"] = "float32"

    def __post_init__(self):
        if self.baseline.name and self.train.bilevel == "on":
            raise ConfigError(f"RunConfig: baseline {self.baseline.name!r} has no gates for Algorithm 2's "
                              f"alpha step; train it with bilevel off (--bilevel off)")
        if self.train.exit_loss > 0:
            ctl = self.model.controller
            if self.baseline.name or not ctl.enabled or ctl.train_form == "hard":
                what = (f"baseline {self.baseline.name!r}" if self.baseline.name else
                        "a model without the depth controller" if not ctl.enabled else
                        "train_form 'hard' (Algorithm 1 runs only the layers each example reaches)")
                raise ConfigError(f"RunConfig: train.exit_loss needs every estimator's prediction on every "
                                  f"example, which {what} does not compute; set train.exit_loss to 0")


def train_config(preset: str = "paper") -> TrainConfig:
    """Training options of the two presets on the full data sets (§4.1.4).

    ``paper``: batch 4096, evaluation every 2,000 steps or twice per epoch, whichever is
    more often, with early stopping (patience 3), Algorithm 2
    (first order), G-FTRL on the embedding table and Adam (lr 1e-3) elsewhere, without
    L2: §4.1.4 grid-searches an L2 weight in [1e-4, 1e-3] for dense layers but does not
    report the value chosen; set one with ``--train.optimizer.options '{"lr": 1e-3,
    "l2": 1e-4}'`` (coupled L2, :mod:`adaref.optim.adam`).
    ``upstream`` (the authors' exp1.py): batch 4096, 3 passes in file order, no bi-level
    step (one joint step on training batches), balance losses with weight 1 (their
    ``alpha=1.0``) and router z-loss weight 1, G-FTRL exactly as theirs (z starts at 0,
    dense row updates), Keras Adam (lr 1e-3, eps 1e-7 added to sqrt(v)), no L2.
    """
    if preset == "paper":
        return TrainConfig(batch_size=4096, epochs=10.0, eval_every=2000, evals_per_epoch=2.0, patience=3)
    if preset == "upstream":
        keras_adam = {"lr": 1e-3, "eps": 1e-7, "epsilon_form": "keras"}   # tf.keras Adam defaults
        return TrainConfig(batch_size=4096, epochs=3.0, eval_every=2000, patience=0, bilevel="off",
                           shuffle=False, lambda1=1.0, lambda2=1.0, z_loss=1.0,
                           embedding_optimizer=OptimizerChoice(
                               "gftrl", {"z_init": "zero", "sparse_update": "dense"}),
                           optimizer=OptimizerChoice("adam", keras_adam),
                           gate_optimizer=OptimizerChoice("adam", keras_adam))
    raise ConfigError(f"unknown preset {preset!r}; choose 'paper' or 'upstream'")


def baseline_train_config(name: str, train: TrainConfig) -> TrainConfig:
    """§4.1.4's optimisers for the competing models, from ``train``: joint steps (no
    gates, so no bi-level step); Adam (lr 1e-3, the top of the paper's [1e-4, 1e-3]) on
    every parameter, the embedding table included, for the neural models; FTRL-Proximal
    (alpha 0.05, inside the paper's [1e-2, 1e-1]) on every parameter for LR and FM. G-FTRL
    is AdaEnsemble's own choice (§4.1.4) and is not used for them.

    >>> baseline_train_config("fm", train_config("paper")).optimizer.name
    'ftrl'
    """
    if name in ("lr", "fm"):
        ftrl = OptimizerChoice("ftrl", {"alpha": 0.05})
        return train.replace(bilevel="off", optimizer=ftrl, embedding_optimizer=ftrl)
    return train.replace(bilevel="off", embedding_optimizer=OptimizerChoice("adam", {"lr": 1e-3}))


def run_config(preset: str = "paper", sample: bool = False) -> RunConfig:
    """The defaults of a run: :func:`sample_defaults` for the bundled samples, else the
    preset's model (:func:`~adaref.model.config.model_config`) and :func:`train_config`."""
    if sample:
        return sample_defaults(preset)
    return RunConfig(data=DataChoice(preset=preset, sample=False, path="-"), model=model_config(preset),
                     train=train_config(preset))


def sample_defaults(preset: str = "paper") -> RunConfig:
    """Defaults chosen for the ~10k-row bundled samples (7k training rows).

    The paper's full-data setting (D = 16, L = 4, k = 3) overfits 7k rows (test AUC about
    0.69 on Criteo). These defaults were chosen on the validation split of the Criteo
    sample (seeds 0-2; docs/training.md gives the sweep and the test numbers):

    * a smaller model: D = 8, L = 2, k annealed from 5 to 2 over 100 steps;
    * ``controller.train_form = "straight_through"``: the soft depth mixture lets the
      per-layer estimators compensate each other, so the hard exit used in evaluation
      is much worse than the mixture (val AUC 0.55-0.60 against 0.73-0.75 at the same
      step); straight-through trains the estimators as they are used;
    * ``bilevel = "off"``: with Algorithm 2 the gates fit the few hundred validation rows
      they are trained on (val AUC 0.78 against test 0.70); joint steps generalise better
      here. The full-data ``paper`` preset keeps Algorithm 2 on;
    * G-FTRL on the embeddings with a strong ridge term (l2 = 10, l1 = 0.01, alpha = 0.05):
      most ids occur a handful of times in 7k rows;
    * evaluation every 20 steps (~0.7 epoch) with patience 5.
    """
    if preset == "paper":
        model = model_config(preset, dim=8, num_layers=2)
        model = model.replace(
            moe={**model.moe.to_dict(), "schedule": {**model.moe.schedule.to_dict(), "k": 2, "steps": 100,
                                                     "epochs": 0.0}},
            controller={**model.controller.to_dict(), "train_form": "straight_through"})
        embedding = OptimizerChoice("gftrl", {"l2": 10.0, "l1": 0.01, "alpha": 0.05})
        train = TrainConfig(batch_size=256, epochs=10.0, eval_every=20, patience=5, bilevel="off",
                            embedding_optimizer=embedding)
    elif preset == "upstream":   # the authors' choices, scaled down; their depth prior kept in shape
        base = model_config(preset)
        model = model_config(preset, dim=8, num_layers=2,
                             controller={**base.controller.to_dict(), "depth_prior": (0.3, 0.7)})
        train = train_config("upstream").replace(batch_size=256, epochs=3.0, eval_every=20, patience=5)
    else:
        raise ConfigError(f"unknown preset {preset!r}; choose 'paper' or 'upstream'")
    return RunConfig(data=DataChoice(preset=preset), model=model, train=train)
