"""``spec``: the public contract of a model, generated from the model itself.

:func:`model_spec` lists every parameter (dotted name, shape, dtype, layout, equation:
read from the owning module's ``PARAM_LAYOUTS`` and ``EQUATION``) and, for each depth
form, every named intermediate in forward order (the patterns of
:data:`adaref.model.trace.NAMES` expanded over the model's layers and experts), then the
gradients that ``golden`` writes. Nothing here is kept by hand: a new parameter without
a layout, or a recorded name without a pattern, fails ``tests/test_crosscheck_spec.py``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from adaref.model import AdaEnsemble
from adaref.model.trace import NAMES

FORMAT = "adaref.crosscheck.spec/1"


def forms(config) -> list[str]:
    """The depth forms a golden set records: the soft mixture and the hard exit (and the
    training form if it is neither); ``full`` without the controller."""
    ctl = config.controller
    if not ctl.enabled:
        return ["full"]
    out = ["soft", "hard"]
    if ctl.train_form not in out:
        out.insert(1, ctl.train_form)
    return out


def gradient_form(config) -> str:
    """The form whose eq. 18 is differentiated: the training form."""
    return config.controller.train_form if config.controller.enabled else "full"


def parameter_spec(model: AdaEnsemble) -> list[dict]:
    """Every parameter in ``named_parameters`` order with its layout and equation."""
    out = []
    for name, p in model.named_parameters():
        module, equation = model, model.EQUATION
        *path, local = name.split(".")
        for part in path:
            module = dict(module.named_children())[part]
            equation = module.EQUATION or equation
        out.append({"name": name, "shape": list(p.shape), "dtype": p.dtype.name,
                    "layout": type(module).PARAM_LAYOUTS.get(local, ""),
                    "equation": equation, "module": type(module).__name__})
    return out


def intermediate_names(model: AdaEnsemble, form: str) -> list[str]:
    """Every name a forward pass in ``form`` can record, in forward order. In the hard
    form a layer that no example reaches records nothing (its names are absent), and
    ``estimators.{l}.logit`` holds only the examples exiting at layer l."""
    cfg = model.config
    ctl = cfg.controller.enabled
    names = ["embedding"]
    if ctl:
        names += ["controller.logits", "controller.probs", "controller.exit_depth"]
    for l, layer in enumerate(model.layers):
        p = f"layers.{l}."
        names += [p + "rows", p + "gate.logits", p + "gate.probs", p + "gate.topk", p + "gate.values",
                  p + "gate.weights"]
        for e in layer.names:
            names += [f"{p}experts.{e}.rows", f"{p}experts.{e}.output"]
        names += [p + "combined", p + "output"]
        if ctl:
            names.append(f"estimators.{l}.logit")
    if not ctl:
        names.append("estimators.0.logit")
    if form in ("hard", "full"):
        names.append("logit")
    names += ["prob", "loss.expert"]
    if ctl:
        names.append("loss.depth")
    if cfg.moe.z_loss:
        names.append("loss.z")
    return names + ["loss.log_loss", "loss.total"]


def pattern_of(name: str) -> str:
    """The :data:`NAMES` pattern of a concrete name (``layers.1.experts.pin.output`` ->
    ``layers.{l}.experts.{e}.output``)."""
    parts = name.split(".")
    if parts[0] in ("layers", "estimators") and len(parts) > 1:
        parts[1] = "{l}"
        if len(parts) > 3 and parts[2] == "experts":
            parts[3] = "{e}"
    pattern = ".".join(parts)
    if pattern not in NAMES:
        raise KeyError(f"{name!r} matches no pattern of adaref.model.trace.NAMES")
    return pattern


def _shape(pattern: str, dims: dict) -> str:
    shape = NAMES[pattern][0]
    for key in ("F", "D", "L", "N"):
        shape = shape.replace(f", {key}", f", {dims[key]}").replace(f"({key},", f"({dims[key]},")
    return shape


def model_spec(model: AdaEnsemble, k: int | str = "k") -> dict:
    """The JSON-able spec of ``model`` (see the module docstring)."""
    cfg = model.config
    dims = {"F": len(model.vocab_sizes), "D": cfg.dim, "L": cfg.num_layers, "N": len(cfg.moe.experts),
            "k": k, "B": "batch"}
    spec_forms = {}
    for form in forms(cfg):
        spec_forms[form] = [{"name": n, "shape": _shape(pattern_of(n), dims).replace(" k)", f" {k})"),
                             "meaning": NAMES[pattern_of(n)][1]} for n in intermediate_names(model, form)]
    grads = [{"name": f"grad.{p['name']}", "shape": p["shape"],
              "meaning": f"d(eq. 18 total)/d {p['name']}, adaref's layout"} for p in parameter_spec(model)]
    grads.append({"name": "grad.embedding", "shape": f"(B, {dims['F']}, {dims['D']})",
                  "meaning": "d(eq. 18 total)/d X_0"})
    return {
        "format": FORMAT,
        "config": cfg.to_dict(),
        "vocab_sizes": list(model.vocab_sizes),
        "dims": dims,
        "expert_order": list(cfg.moe.experts),
        "parameters": parameter_spec(model),
        "forms": spec_forms,
        "gradient_form": gradient_form(cfg),
        "gradients": grads,
        "notes": [
            "Names in golden outputs.npz are '<form>.<name>'; gradients are in grads.npz.",
            "Evaluation semantics: no jitter (eq. 7's noise is random).",
            "Hard form: layer l is recorded only for the examples with exit depth >= l + 1; "
            "a layer no example reaches is absent.",
            "rows of an expert are positions within its layer's rows; gate.topk lists the "
            "selected experts in ascending index order; top-k ties: the lowest index wins.",
        ],
    }


def build_model(config, vocab_sizes: Sequence[int], dtype=np.float64,
                rng: np.random.Generator | None = None) -> AdaEnsemble:
    """An :class:`AdaEnsemble` (weights from ``rng``, default seed 0)."""
    return AdaEnsemble(config, vocab_sizes, rng=rng if rng is not None else np.random.default_rng(0),
                       dtype=dtype)
