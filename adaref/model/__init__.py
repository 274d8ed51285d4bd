"""The AdaEnsemble model, split by role (one file each):

* :mod:`~adaref.model.config` -- frozen configs of every component; ``paper``/``upstream`` presets
* :mod:`~adaref.model.gate` -- the noisy cosine top-k gating network (eqs. 7-11)
* :mod:`~adaref.model.schedule` -- annealed k (§3.3.2)
* :mod:`~adaref.model.dispatcher` -- the sparse dispatcher (eq. 12)
* :mod:`~adaref.model.regularizers` -- load balancing and distribution losses (eqs. 13-16)
* :mod:`~adaref.model.moe_layer` -- one SparseMoE layer with residual and normalisation
* :mod:`~adaref.model.estimator` -- eq. 17
* :mod:`~adaref.model.controller` -- the depth-selecting network (§3.5)
* :mod:`~adaref.model.routing` -- routing statistics (expert usage, combinations, exit depths)
* :mod:`~adaref.model.adaensemble` -- the model and Algorithm 1
"""
from adaref.model.adaensemble import AdaEnsemble, ModelOutput
from adaref.model.config import (ControllerConfig, GateConfig, KScheduleConfig, ModelConfig,
                                 MoEConfig, model_config)
from adaref.model.trace import NAMES, Trace

__all__ = ["AdaEnsemble", "ModelOutput", "ControllerConfig", "GateConfig", "KScheduleConfig",
           "ModelConfig", "MoEConfig", "model_config", "Trace", "NAMES"]
