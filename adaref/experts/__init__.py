"""The five feature-interaction experts of §3.2, one file each.

=========  ==================  =======  ==========================================
name       class               eq.      file
=========  ==================  =======  ==========================================
``dense``  :class:`Dense`      (2)      ``dense.py`` (and the authors' GatedDense)
``conv``   :class:`Conv`       (3)      ``conv.py``
``mhsa``   :class:`MHSA`       (4)      ``attention.py``
``pin``    :class:`PIN`        (5)      ``pin.py``
``cross``  :class:`Cross`      (6)      ``cross.py``
=========  ==================  =======  ==========================================

Every expert is ``Expert(config, num_fields, dim, *, rng, dtype)`` and maps
``forward(x, x0)`` with x = X_{l-1}, x0 = X_0, both (B, F, D), to (B, F, D);
``flops()`` is its forward FLOPs per example (:mod:`adaref.experts.base`).

:func:`expert_configs` gives the two presets of docs/decisions.md rows 4-8:
``"paper"`` (the paper's text, suggested defaults where it is open) and
``"upstream"`` (the authors' TensorFlow code).

>>> import numpy as np, adaref
>>> configs = expert_configs("upstream")
>>> expert = build_expert("conv", configs["conv"], 38, 16, rng=np.random.default_rng(0))
>>> expert(adaref.Tensor(np.zeros((2, 38, 16)))).shape
(2, 38, 16)
>>> build_expert("cross", {"bias": "inside"}, 3, 2, rng=np.random.default_rng(0)).config
CrossConfig(bias='inside')
>>> build_expert("dcn", {}, 3, 2, rng=np.random.default_rng(0))
Traceback (most recent call last):
...
ValueError: build_expert: unknown expert 'dcn'; known: dense, conv, mhsa, pin, cross
"""
from __future__ import annotations

from typing import Any

import numpy as np

from adaref.config import Config, ConfigError
from adaref.experts.attention import MHSA, MHSAConfig
from adaref.experts.base import Expert
from adaref.experts.conv import Conv, ConvConfig
from adaref.experts.cross import Cross, CrossConfig
from adaref.experts.dense import Dense, DenseConfig
from adaref.experts.pin import PIN, PINConfig

EXPERTS: dict[str, type[Expert]] = {"dense": Dense, "conv": Conv, "mhsa": MHSA,
                                    "pin": PIN, "cross": Cross}
CONFIGS: dict[str, type[Config]] = {"dense": DenseConfig, "conv": ConvConfig,
                                    "mhsa": MHSAConfig, "pin": PINConfig, "cross": CrossConfig}
PRESETS = ("paper", "upstream")


def expert_configs(preset: str) -> dict[str, Config]:
    """name -> config of each expert for the ``"paper"`` or ``"upstream"`` preset
    (docs/decisions.md rows 4-8; the docstring of each expert explains every option)."""
    if preset == "paper":
        return {name: cls() for name, cls in CONFIGS.items()}
    if preset == "upstream":
        return {
            "dense": DenseConfig(activation="relu", form="gated", gate_reduction=16),      # row 4
            "conv": ConvConfig(reshape="dense", length=None, filters=16, width=4,          # row 5
                               padding="valid", activation="linear", pool=2,
                               out_activation="linear"),
            "mhsa": MHSAConfig(heads=4, head_size=2, qkv_activation="gelu", out_size=8,    # row 6
                               out_activation="gelu", norm="instance", readout="flatten"),
            "pin": PINConfig(subspaces=None),                                              # row 7
            "cross": CrossConfig(bias="inside"),                                           # row 8
        }
    raise ValueError(f"expert_configs: unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")


def build_expert(name: str, config: Config | dict[str, Any], num_fields: int, dim: int, *,
                 rng: np.random.Generator, dtype=np.float64) -> Expert:
    """The expert called ``name`` from its config (or a dict of config keys)."""
    if name not in EXPERTS:
        raise ValueError(f"build_expert: unknown expert {name!r}; known: {', '.join(EXPERTS)}")
    config_cls = CONFIGS[name]
    if isinstance(config, dict):
        config = config_cls.from_dict(config)
    elif not isinstance(config, config_cls):
        raise ConfigError(f"build_expert: expert {name!r} needs a {config_cls.__name__} or a dict, "
                          f"got {type(config).__name__}")
    return EXPERTS[name](config, num_fields, dim, rng=rng, dtype=dtype)


__all__ = ["EXPERTS", "CONFIGS", "PRESETS", "Expert", "build_expert", "expert_configs",
           "Dense", "DenseConfig", "Conv", "ConvConfig", "MHSA", "MHSAConfig",
           "PIN", "PINConfig", "Cross", "CrossConfig"]
