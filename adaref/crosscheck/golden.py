"""``golden``: a directory of reference answers that another implementation is compared with.

Files (every ``.npz`` byte-reproducible: same arguments, same bytes, on one machine):

* ``weights.npz``: every parameter, adaref's names and layouts (``spec``);
* ``inputs.npz``: ``ids`` (B, F) int64 per-field ids, ``labels`` (B,) float 0/1;
* ``outputs.npz``: every named intermediate of each depth form, as ``<form>.<name>``
  (``soft.layers.1.experts.pin.output``, ``hard.prob``), in forward order;
* ``grads.npz``: ``grad.<parameter>`` and ``grad.embedding`` (d/d X_0) of eq. 18's total
  in the training form;
* ``manifest.json``: config, vocabulary sizes, dtype, seed, batch, k, forms, lambdas,
  tolerances, data source, versions, and the spec of every name.

Weights: the model's initialisation from ``seed``, then every parameter moved by
Gaussian noise (biases, gains and the temperature included), so that no parameter sits
at a special value (a zero bias or a unit gain would hide a bias on the wrong side or a
missing gain). Inputs: ``batch`` rows of a prepared data directory, or synthetic ids
(about one in ten an OOV id 0) and labels with both classes.
"""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Sequence

import numpy as np

import adaref
from adaref.crosscheck.reference import Lambdas, forward, gradients
from adaref.crosscheck.spec import build_model, forms, gradient_form, model_spec
from adaref.crosscheck.tolerances import TOLERANCES
from adaref.io import save_npz, write_json

FORMAT = "adaref.crosscheck.golden/1"
FILES = ("weights.npz", "inputs.npz", "outputs.npz", "grads.npz", "manifest.json")


class GoldenError(ValueError):
    """Bad golden arguments or a golden directory that cannot be used; names the cause."""


def perturb(model, rng: np.random.Generator) -> None:
    """Move every parameter off its initial value (see the module docstring)."""
    state = {}
    for name, p in model.named_parameters():
        x = p.data.astype(np.float64)
        scale = float(np.std(x)) or 0.3
        if name.endswith(".tau"):
            v = rng.uniform(0.5, 1.5, size=x.shape)                       # raw tau: kept > 0
        elif name.endswith(".log_tau"):
            v = rng.uniform(-0.4, 0.4, size=x.shape)
        else:
            v = x + rng.normal(0.0, 0.3 * scale, size=x.shape)
        state[name] = v.astype(p.dtype)
    if model.embedding.oov == "zero":                                       # rows never used
        state["embedding.weight"][model.embedding.offsets[:-1]] = 0.0
    model.load_state_dict(state)


def synthetic_inputs(vocab_sizes: Sequence[int], batch: int, rng: np.random.Generator):
    ids = np.stack([rng.integers(0, v, size=batch) for v in vocab_sizes], axis=1).astype(np.int64)
    ids[rng.random(ids.shape) < 0.1] = 0                                    # some OOV ids
    labels = (rng.random(batch) < 0.3).astype(np.float64)
    if batch >= 2:
        labels[0], labels[1] = 1.0, 0.0                                     # both classes
    return ids, labels


def data_inputs(directory: str, batch: int, split: str):
    """The first ``batch`` rows of ``split`` of a prepared data directory."""
    from adaref.data import open_encoded

    refuse_golden_as_data(directory)
    data = open_encoded(directory)
    ids, labels = data.subset(split)
    if len(ids) < batch:
        raise GoldenError(f"{directory}: the {split} split has {len(ids)} rows, fewer than --batch {batch}")
    return (data.vocab_sizes, np.asarray(ids[:batch], dtype=np.int64),
            np.asarray(labels[:batch], dtype=np.float64), data.oov_embedding)


def refuse_golden_as_data(directory) -> None:
    """A GoldenError if ``directory``, given as ``--data``, is a golden set (which the data
    reader would call damaged and advise deleting)."""
    if is_golden(Path(directory)):
        raise GoldenError(f"{directory}: is a golden set, not a prepared data directory "
                          f"(python -m adaref.data prepare writes those)")


def is_golden(directory: Path) -> bool:
    """True if ``directory`` holds a golden manifest (format checked, not just the name)."""
    try:
        doc = json.loads((Path(directory) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(doc, dict) and doc.get("format") == FORMAT


def check_out(out: Path) -> None:
    """``--out`` must be a new or empty directory, or an earlier golden set (replaced)."""
    if out.exists() and not out.is_dir():
        raise GoldenError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not is_golden(out):
        raise GoldenError(f"{out}: a non-empty directory that is not a golden set (no golden manifest.json); "
                          f"choose another --out")
    extra = sorted(p.name for p in out.iterdir() if p.name not in FILES) if out.is_dir() else []
    if extra:
        raise GoldenError(f"{out}: a golden set with other files in it ({', '.join(extra[:5])}); choose another --out")


def make_golden(out: str | os.PathLike, config, *, vocab_sizes: Sequence[int] | None = None,
                ids: np.ndarray | None = None, labels: np.ndarray | None = None,
                dtype=np.float64, batch: int = 32, seed: int = 0, k: int | None = None,
                lambdas: Lambdas = Lambdas(), source: dict | None = None,
                preset: str | None = None) -> dict:
    """Write a golden directory (see the module docstring); returns the manifest."""
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise GoldenError(f"dtype must be float32 or float64, got {dtype}")
    rng = np.random.default_rng(seed)
    n_experts = len(config.moe.experts)
    k = config.moe.schedule.k if k is None else int(k)
    if not 1 <= k <= n_experts:
        raise GoldenError(f"k = {k} must be in [1, {n_experts}] (the model's experts)")
    out = Path(out)
    check_out(out)
    if ids is None:
        ids, labels = synthetic_inputs(vocab_sizes, batch, rng)
    model = build_model(config, vocab_sizes, dtype, rng)
    perturb(model, rng)
    outputs = {}
    for form in forms(config):
        for name, value in forward(model, ids, labels, k=k, form=form, lambdas=lambdas).items():
            outputs[f"{form}.{name}"] = value
    grads = gradients(model, ids, labels, k=k, form=gradient_form(config), lambdas=lambdas)
    spec = model_spec(model, k)
    manifest = {
        "format": FORMAT,
        "preset": preset,
        "config": config.to_dict(),
        "vocab_sizes": [int(v) for v in vocab_sizes],
        "dtype": dtype.name,
        "seed": int(seed),
        "batch": int(len(ids)),
        "k": k,
        "forms": forms(config),
        "gradient_form": gradient_form(config),
        "lambdas": lambdas.to_dict(),
        "tolerances": TOLERANCES[dtype.name],
        "source": source or {"kind": "synthetic"},
        "versions": {"adaref": adaref.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "outputs": list(outputs),
        "gradients": list(grads),
        "spec": spec,
    }
    save_npz(out / "weights.npz", model.state_dict())
    save_npz(out / "inputs.npz", {"ids": ids.astype(np.int64), "labels": labels.astype(np.float64)})
    save_npz(out / "outputs.npz", outputs)
    save_npz(out / "grads.npz", grads)
    write_json(out / "manifest.json", manifest)
    return manifest
