"""Training AdaEnsemble (§3.6, §4.1): the objective of eq. 18, the bi-level optimisation of
Algorithm 2, evaluation, run artefacts and resume. The command is ``python -m adaref.train``.

* :mod:`~adaref.training.config` -- RunConfig = data + model + train options; sample defaults
* :mod:`~adaref.training.objective` -- eq. 18
* :mod:`~adaref.training.bilevel` -- alpha/W split, first- and second-order (DARTS) alpha gradients
* :mod:`~adaref.training.trainer` -- the loop, evaluation schedule, early stopping, checkpoints
* :mod:`~adaref.training.evaluate` -- metrics of a split in both prediction forms
* :mod:`~adaref.training.models` -- AdaEnsemble or a competing model (§4.1.3), one forward for both
* :mod:`~adaref.training.plots`, :mod:`~adaref.training.progress`, :mod:`~adaref.training.cli`

The names most programs need are importable from here:

>>> from adaref.training import RunConfig, Trainer, evaluate, objective, run_config
>>> run_config("paper").train.batch_size
4096
"""
from adaref.training.config import (BaselineChoice, DataChoice, OptimizerChoice, RunConfig, TrainConfig,
                                    run_config, sample_defaults, train_config)
from adaref.training.evaluate import Evaluation, evaluate
from adaref.training.objective import objective
from adaref.training.trainer import Trainer, TrainingDataError, TrainingDiverged, TrainingInterrupted

__all__ = ["BaselineChoice", "DataChoice", "OptimizerChoice", "RunConfig", "TrainConfig", "run_config",
           "sample_defaults", "train_config", "Evaluation", "evaluate", "objective", "Trainer",
           "TrainingDataError", "TrainingDiverged", "TrainingInterrupted"]
