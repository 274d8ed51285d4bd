"""Optimisers: SGD, Adam (coupled L2, lazy rows), FTRL-Proximal and G-FTRL (group lasso
over embedding rows), all updating parameters in place with checkpointable state.

One concept per file: :mod:`~adaref.optim.base` (the stepping, sparse-row and
state-dict machinery), :mod:`~adaref.optim.sgd`, :mod:`~adaref.optim.adam`,
:mod:`~adaref.optim.ftrl` and :mod:`~adaref.optim.registry` (build by name).
The paper's setup (§4.1.4, docs/decisions.md row 23) is G-FTRL on the embedding table
and Adam on everything else: two optimisers over disjoint parameter lists.
"""
from adaref.optim.adam import Adam, AdamConfig
from adaref.optim.base import Optimizer, OptimizerConfig, StateDictError
from adaref.optim.ftrl import FTRL, FTRLConfig, GroupFTRL, GroupFTRLConfig
from adaref.optim.registry import OPTIMIZERS, build_optimizer
from adaref.optim.sgd import SGD, SGDConfig

__all__ = ["Adam", "AdamConfig", "FTRL", "FTRLConfig", "GroupFTRL", "GroupFTRLConfig",
           "OPTIMIZERS", "Optimizer", "OptimizerConfig", "SGD", "SGDConfig", "StateDictError",
           "build_optimizer"]
