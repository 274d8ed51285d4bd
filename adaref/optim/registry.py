"""Build an optimiser from a name and a config dict (what a training config holds).

>>> import numpy as np
>>> from adaref.nn import Parameter
>>> opt = build_optimizer("adam", [Parameter(np.zeros(2))], {"lr": 1e-4, "l2": 1e-4})
>>> opt.config
AdamConfig(lr=0.0001, beta1=0.9, beta2=0.999, eps=1e-08, l2=0.0001,
           epsilon_form='algorithm1', sparse_update='lazy')
>>> build_optimizer("adamw", [Parameter(np.zeros(2))])
Traceback (most recent call last):
...
adaref.config.ConfigError: unknown optimiser 'adamw' (known: sgd, adam, ftrl, gftrl)
>>> build_optimizer("sgd", [Parameter(np.zeros(2))], {"learning_rate": 0.1})
Traceback (most recent call last):
...
adaref.config.ConfigError: SGDConfig: unknown key 'learning_rate' (known: lr, momentum, sparse_update)
"""
from __future__ import annotations

from typing import Any, Iterable

from adaref.config import ConfigError
from adaref.optim.adam import Adam
from adaref.optim.base import Optimizer
from adaref.optim.ftrl import FTRL, GroupFTRL
from adaref.optim.sgd import SGD

OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "ftrl": FTRL, "gftrl": GroupFTRL}


def build_optimizer(name: str, params: Iterable[Any], config: dict[str, Any] | None = None) -> Optimizer:
    """``OPTIMIZERS[name](params, config)``; an unknown name or key is a ConfigError."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimiser {name!r} (known: {', '.join(OPTIMIZERS)})")
    cls = OPTIMIZERS[name]
    return cls(params, cls.config_class.from_dict({} if config is None else config))
