"""Training AdaEnsemble (§3.6, §4.1): the objective of eq. 18, the bi-level optimisation of
Algorithm 2, evaluation, run artefacts and resume. The command is ``python -m adaref.train``.

* :mod:`~adaref.training.config` -- RunConfig = data + model + train options; sample defaults
* :mod:`~adaref.training.objective` -- eq. 18
* :mod:`~adaref.training.bilevel` -- alpha/W split, first- and second-order (DARTS) alpha gradients
* :mod:`~adaref.training.trainer` -- the loop, evaluation schedule, early stopping, checkpoints
* :mod:`~adaref.training.evaluate` -- metrics of a split in both prediction forms
* :mod:`~adaref.training.plots`, :mod:`~adaref.training.progress`, :mod:`~adaref.training.cli`
"""
