"""The 13 competing models of §4.1.3 (Table 1), one file each.

=================  ===================  ================================  ====================
name               class                paper                             file
=================  ===================  ================================  ====================
``lr``             :class:`LR`          McMahan et al., KDD 2013          ``lr.py``
``fm``             :class:`FM`          Rendle, ICDM 2010                 ``fm.py``
``dnn``            :class:`DNN`         (multilayer perceptron)           ``dnn.py``
``wide_deep``      :class:`WideDeep`    Cheng et al., DLRS 2016           ``wide_deep.py``
``deepfm``         :class:`DeepFM`      Guo et al., IJCAI 2017            ``deepfm.py``
``deep_crossing``  :class:`DeepCrossing` Shan et al., KDD 2016            ``deep_crossing.py``
``dcn``            :class:`DCN`         Wang et al., ADKDD 2017           ``dcn.py``
``pnn``            :class:`PNN`         Qu et al., ICDM 2016 / TOIS 2018  ``pnn.py``
``xdeepfm``        :class:`XDeepFM`     Lian et al., KDD 2018             ``xdeepfm.py``
``autoint``        :class:`AutoInt`     Song et al., CIKM 2019            ``autoint.py``
``fibinet``        :class:`FiBiNET`     Huang et al., RecSys 2019         ``fibinet.py``
``xdeepint``       :class:`XDeepInt`    Yan and Li, DLP-KDD 2020          ``xdeepint.py``
``dcn_v2``         :class:`DCNV2`       Wang et al., WWW 2021             ``dcn_v2.py``
=================  ===================  ================================  ====================

Every model is ``Model(config, vocab_sizes, *, rng, dtype)``, maps per-field ids (B, F)
(the input AdaEnsemble takes) to the logit (B,), and counts its forward FLOPs per
example with ``flops_per_example()`` (:mod:`adaref.baselines.base`). Shared blocks:
:mod:`~adaref.baselines.linear` (the first-order term), :mod:`~adaref.baselines.mlp`
(the DNN tower); DCN-V2 reuses the Cross expert and xDeepInt the PIN expert, AutoInt
the fused attention op. PNN's inner/outer choice is its ``product`` option.

:data:`MODELS` maps each name to its (config class, model class);
:func:`build_baseline` builds one from a config or a dict of config keys.

>>> import numpy as np
>>> sorted(MODELS) == sorted(NAMES) and len(NAMES) == 13
True
>>> model = build_baseline("fm", {"dim": 4}, [3, 5, 2], rng=np.random.default_rng(0))
>>> model(np.array([[1, 4, 0], [2, 0, 1]])).shape
(2,)
>>> build_baseline("fm", {"dims": 4}, [3, 5, 2], rng=np.random.default_rng(0))
Traceback (most recent call last):
...
adaref.config.ConfigError: FMConfig: unknown key 'dims' (known: dim, embedding_oov, embedding_std)
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from adaref.baselines.autoint import AutoInt, AutoIntConfig
from adaref.baselines.base import Baseline, BaselineConfig
from adaref.baselines.dcn import DCN, DCNConfig
from adaref.baselines.dcn_v2 import DCNV2, DCNV2Config
from adaref.baselines.deep_crossing import DeepCrossing, DeepCrossingConfig
from adaref.baselines.deepfm import DeepFM, DeepFMConfig
from adaref.baselines.dnn import DNN, DNNConfig
from adaref.baselines.fibinet import FiBiNET, FiBiNETConfig
from adaref.baselines.fm import FM, FMConfig
from adaref.baselines.lr import LR, LRConfig
from adaref.baselines.pnn import PNN, PNNConfig
from adaref.baselines.wide_deep import WideDeep, WideDeepConfig
from adaref.baselines.xdeepfm import XDeepFM, XDeepFMConfig
from adaref.baselines.xdeepint import XDeepInt, XDeepIntConfig
from adaref.config import Config, ConfigError

#: name -> (config class, model class), in Table 1's order
MODELS: dict[str, tuple[type[Config], type[Baseline]]] = {
    "lr": (LRConfig, LR),
    "fm": (FMConfig, FM),
    "dnn": (DNNConfig, DNN),
    "wide_deep": (WideDeepConfig, WideDeep),
    "deepfm": (DeepFMConfig, DeepFM),
    "deep_crossing": (DeepCrossingConfig, DeepCrossing),
    "dcn": (DCNConfig, DCN),
    "pnn": (PNNConfig, PNN),
    "xdeepfm": (XDeepFMConfig, XDeepFM),
    "autoint": (AutoIntConfig, AutoInt),
    "fibinet": (FiBiNETConfig, FiBiNET),
    "xdeepint": (XDeepIntConfig, XDeepInt),
    "dcn_v2": (DCNV2Config, DCNV2),
}
NAMES = tuple(MODELS)


def build_baseline(name: str, config: Config | dict[str, Any] | None, vocab_sizes: Sequence[int], *,
                   rng: np.random.Generator, dtype=np.float64) -> Baseline:
    """The model called ``name`` from its config, a dict of its config keys (unknown keys
    are refused, naming them) or None (the defaults)."""
    if name not in MODELS:
        raise ValueError(f"build_baseline: unknown model {name!r}; known: {', '.join(MODELS)}")
    config_cls, model_cls = MODELS[name]
    if config is None:
        config = config_cls()
    elif isinstance(config, dict):
        config = config_cls.from_dict(config)
    elif not isinstance(config, config_cls):
        raise ConfigError(f"build_baseline: model {name!r} needs a {config_cls.__name__} or a dict, "
                          f"got {type(config).__name__}")
    return model_cls(config, vocab_sizes, rng=rng, dtype=dtype)


__all__ = ["MODELS", "NAMES", "Baseline", "BaselineConfig", "build_baseline",
           "LR", "LRConfig", "FM", "FMConfig", "DNN", "DNNConfig", "WideDeep", "WideDeepConfig",
           "DeepFM", "DeepFMConfig", "DeepCrossing", "DeepCrossingConfig", "DCN", "DCNConfig",
           "PNN", "PNNConfig", "XDeepFM", "XDeepFMConfig", "AutoInt", "AutoIntConfig",
           "FiBiNET", "FiBiNETConfig", "XDeepInt", "XDeepIntConfig", "DCNV2", "DCNV2Config"]
