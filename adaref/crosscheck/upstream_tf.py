"""The authors' TensorFlow AdaEnsemble (Yan & Li 2022) as a :class:`Mapping`.

The authors' Keras model names its variables by construction order (``dense_17``), so
a dump of its weights is keyed by *structural names* instead, one ``.npz`` of float32
arrays (``L{l}`` is SparseMoE layer l, 0-based; F*D = 608 for Criteo at D = 16)::

    L{l}/gate/{hidden,proj}/{kernel,bias}, L{l}/gate/expert_embedding, L{l}/gate/temperature
    L{l}/gated_dense/{dense,g1,g2}/{kernel,bias}   L{l}/cross/{kernel,bias}   L{l}/poly/kernel
    L{l}/cnn/{embed,conv,out}/{kernel,bias}
    L{l}/mha/{q,k,v,o,out}/{kernel,bias}, L{l}/mha/inorm/{gamma,beta}
    L{l}/estimator/{kernel,bias}    exit_gate/... (as a layer's gate)    emb/{column}

Kernels are stored (in, out) as adaref stores them and the conv kernel (K, C, O) as
adaref's, so no transposes are needed; what differs is *order*
(``docs/upstream-tf-mapping.md`` has the full table):

* **fields**: the TF input layer sorts its columns by feature-column name,
  ``name + "_embedding"``, where a numeric column is called ``{name}_bin``
  (:func:`tf_field_order`); adaref keeps the data set's order. Every axis that runs
  over fields -- F*D (f*D + d), the attention flatten F*P (f*P + p) and PIN's F*H
  subspace axis -- is permuted;
* **experts**: TF's gates list (GatedDense, Cross, PolynomialInteraction, CNN, MHSA)
  (:data:`TF_EXPERT_ORDER`); adaref uses ``config.moe.experts``: the rows of each
  ``expert_embedding`` are permuted;
* **temperature**: a TF scalar, adaref's ``tau`` of shape (1,);
* **embedding rows**: adaref has one table with every field's id 0 an OOV row that the
  ``upstream`` preset embeds to zero and that TF does not have (it is filled with 0 on
  import and dropped on export). A categorical TF table has a row per kept level in
  order of first appearance in the training split; a numeric one is an identity column
  of :data:`NUMERIC_BUCKETS` rows, row b for bin value b. TF rows of bins the training
  split never showed have no adaref id: their values are dropped on import, and export
  writes zeros there (counted in :attr:`Mapping.last_unrepresented`).

>>> import os, shutil, tempfile
>>> import numpy as np
>>> from adaref.data import load
>>> from adaref.model import AdaEnsemble, model_config
>>> from adaref.crosscheck.mapping import export_weights, import_weights
>>> tmp = tempfile.mkdtemp()
>>> out = os.path.join(tmp, "criteo-upstream")
>>> ds = load("criteo", sample=True, preset="upstream", out=out)
>>> model = AdaEnsemble(model_config("upstream", dim=4), ds.vocab_sizes, rng=np.random.default_rng(0))
>>> mapping = tf_mapping(model, out)
>>> dump = export_weights(model, mapping)
>>> dump["L0/gate/hidden/kernel"].shape, dump["L0/mha/out/kernel"].shape, dump["emb/I1"].shape
((152, 9), (304, 152), (64, 4))
>>> mapping.last_unrepresented["emb/I1"]       # bins 11..63 of I1 never occur in training
212
>>> fresh = AdaEnsemble(model_config("upstream", dim=4), ds.vocab_sizes, rng=np.random.default_rng(1))
>>> _ = import_weights(fresh, dump, mapping)
>>> all(np.array_equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
True
>>> del ds; shutil.rmtree(tmp)
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Sequence

import numpy as np

from adaref.crosscheck.mapping import Mapping, MappingError, Part, Rule

__all__ = ["TF_EXPERT_ORDER", "TF_EXPERT_CLASSES", "NUMERIC_BUCKETS", "tf_column_name",
           "tf_field_order", "train_first_appearance", "tf_mapping", "load_tf_dump", "save_tf_dump"]

#: the experts in the order of the TF gates' ``expert_embedding`` rows (adaref names)
TF_EXPERT_ORDER = ("dense", "cross", "pin", "conv", "mhsa")
#: the TF layer class of each (for messages and the documentation)
TF_EXPERT_CLASSES = {"dense": "GatedDense", "cross": "Cross", "pin": "PolynomialInteraction",
                     "conv": "CNN", "mhsa": "MHSA"}
#: rows of a numeric column's TF table: an identity column over bin values 0..63
NUMERIC_BUCKETS = 64

# adaref parameter (local name) -> (TF structural name, {axis: the fields' group size})
# where the group is "D" (f*D + d), "P" (the attention flatten, f*P + p) or "H" (PIN's
# subspaces, f*H + h); an axis not listed does not run over fields.
_GATE = {"reduce.weight": ("hidden/kernel", {0: "D"}), "reduce.bias": ("hidden/bias", {}),
         "project.weight": ("proj/kernel", {}), "project.bias": ("proj/bias", {}),
         "embeddings": ("expert_embedding", {}), "tau": ("temperature", {})}
_EXPERTS = {
    "dense": {"W": ("gated_dense/dense/kernel", {0: "D", 1: "D"}), "b": ("gated_dense/dense/bias", {0: "D"}),
              "W1": ("gated_dense/g1/kernel", {0: "D"}), "b1": ("gated_dense/g1/bias", {}),
              "W2": ("gated_dense/g2/kernel", {1: "D"}), "b2": ("gated_dense/g2/bias", {0: "D"})},
    "cross": {"W": ("cross/kernel", {0: "D", 1: "D"}), "b": ("cross/bias", {0: "D"})},
    "pin": {"W": ("poly/kernel", {0: "H", 1: "H"})},
    "conv": {"Wr": ("cnn/embed/kernel", {0: "D"}), "br": ("cnn/embed/bias", {}),
             "Wc": ("cnn/conv/kernel", {}), "bc": ("cnn/conv/bias", {}),
             "Wo": ("cnn/out/kernel", {1: "D"}), "bo": ("cnn/out/bias", {0: "D"})},
    "mhsa": {**{f"W{q}": (f"mha/{q}/kernel", {}) for q in "qkvo"},
             **{f"b{q}": (f"mha/{q}/bias", {}) for q in "qkvo"},
             "gamma": ("mha/inorm/gamma", {}), "beta": ("mha/inorm/beta", {}),
             "Wf": ("mha/out/kernel", {0: "P", 1: "D"}), "bf": ("mha/out/bias", {0: "D"})},
}
_ESTIMATOR = {"linear.weight": ("estimator/kernel", {0: "D"}), "linear.bias": ("estimator/bias", {})}

_LEVEL = re.compile(r"level (-?\d+)")


# ---------------------------------------------------------------------------------
def tf_column_name(name: str, kind: str) -> str:
    """The TF feature column of adaref field ``name``: ``{name}_bin`` for a numeric
    field (its bucketised copy), ``name`` for a categorical one.

    >>> tf_column_name("I1", "numeric"), tf_column_name("C1", "categorical")
    ('I1_bin', 'C1')
    """
    return f"{name}_bin" if kind == "numeric" else name


def tf_field_order(field_names: Sequence[str], field_kinds: Sequence[str]) -> list[int]:
    """adaref field indices in the TF model's field order: sorted by the embedding
    column's name, ``tf_column_name(...) + "_embedding"``, as plain strings (so
    ``C10_embedding`` sorts before ``C1_embedding``: "0" < "_").

    >>> names = ["I1", "I10", "C1", "C10", "C2"]
    >>> [names[i] for i in tf_field_order(names, ["numeric"] * 2 + ["categorical"] * 3)]
    ['C10', 'C1', 'C2', 'I10', 'I1']
    """
    keys = [tf_column_name(n, k) + "_embedding" for n, k in zip(field_names, field_kinds)]
    return sorted(range(len(keys)), key=keys.__getitem__)


def train_first_appearance(ds, fields: Sequence[int], chunk: int = 1 << 20) -> dict[int, np.ndarray]:
    """For each field index in ``fields``: the ids of the encoded data set ``ds`` in the
    order they first occur in its training split (rows in file order), each once.
    Reads the training rows in chunks of ``chunk`` and stops once every id of every
    requested field has been seen."""
    sizes, never = ds.vocab_sizes, np.iinfo(np.int64).max
    seen = {f: np.full(sizes[f], never, dtype=np.int64) for f in fields}          # id -> first row
    missing = {f: sizes[f] for f in fields}
    train = ds.splits["train"]
    cols = np.asarray(list(fields), dtype=np.int64)
    for start in range(0, len(train), chunk):
        if not any(missing.values()):
            break
        block = np.asarray(ds.ids[train[start:start + chunk]])[:, cols]          # (b, len(fields))
        for j, f in enumerate(fields):
            if not missing[f]:
                continue
            u, first = np.unique(block[:, j], return_index=True)
            new = seen[f][u] == never
            seen[f][u[new]] = start + first[new]
            missing[f] -= int(new.sum())
    out = {}
    for f in fields:
        ids = np.flatnonzero(seen[f] < never)
        out[f] = ids[np.argsort(seen[f][ids], kind="stable")]
    return out


# ---------------------------------------------------------------------------------
def _check_model(model) -> None:
    """Refuse a model that is not the ``upstream`` structure, naming every difference."""
    from adaref.experts import expert_configs
    from adaref.model import model_config
    cfg = getattr(model, "config", None)
    if cfg is None or not hasattr(model, "layers"):
        raise MappingError(f"tf_mapping: expected an adaref AdaEnsemble, got {type(model).__name__}")
    ref = model_config("upstream", dim=cfg.dim, num_layers=cfg.num_layers)
    diffs = []
    for path in ("embedding_oov", "moe.norm", "gate.temperature", "gate.input", "gate.activation",
                 "controller.enabled", "controller.gate.temperature", "controller.gate.input",
                 "controller.gate.activation"):
        mine, theirs = cfg, ref
        for key in path.split("."):
            mine, theirs = getattr(mine, key), getattr(theirs, key)
        if mine != theirs:
            diffs.append(f"{path} is {mine!r} (upstream: {theirs!r})")
    if sorted(cfg.moe.experts) != sorted(TF_EXPERT_ORDER):
        diffs.append(f"moe.experts is {cfg.moe.experts} (upstream: the five {TF_EXPERT_ORDER}, any order)")
    else:
        upstream = expert_configs("upstream")
        for name, expert in model.layers[0].experts.named_children():
            for fld in dataclasses.fields(upstream[name]):
                mine, theirs = getattr(expert.config, fld.name), getattr(upstream[name], fld.name)
                if mine != theirs:
                    diffs.append(f"expert {name!r} {fld.name} is {mine!r} (upstream: {theirs!r})")
    if diffs:
        raise MappingError("tf_mapping: the model is not the upstream structure the TensorFlow model has: "
                           + "; ".join(diffs))


def _open_data(data_dir, model):
    """The encoded upstream data set at ``data_dir``, checked against ``model``."""
    from adaref.data import open_encoded
    try:
        ds = open_encoded(os.fspath(data_dir))
    except (OSError, ValueError) as e:
        raise MappingError(f"tf_mapping: {data_dir}: not a prepared data directory ({e})") from None
    m = ds.manifest
    if m.get("preset") != "upstream" or m.get("oov_embedding") != "zero":
        raise MappingError(f"tf_mapping: {data_dir} was prepared under preset {m.get('preset')!r} "
                           f"(oov_embedding {m.get('oov_embedding')!r}); the TensorFlow tables follow the "
                           f"'upstream' preset (python -m adaref.data prepare --preset upstream)")
    names, sizes, kinds = ds.field_names, ds.vocab_sizes, m.get("field_kinds")
    if kinds is None or len(kinds) != len(names):
        raise MappingError(f"tf_mapping: {data_dir}/manifest.json lists no field_kinds for its {len(names)} fields")
    model_sizes = [int(v) for v in model.vocab_sizes]
    if len(sizes) != len(model_sizes):
        raise MappingError(f"tf_mapping: {data_dir} has {len(sizes)} fields, the model {len(model_sizes)}")
    wrong = [f"{n} (data {a}, model {b})" for n, a, b in zip(names, sizes, model_sizes) if a != b]
    if wrong:
        raise MappingError(f"tf_mapping: the vocabulary sizes of {data_dir} and the model differ for "
                           f"{len(wrong)} field(s): {', '.join(wrong[:8])}{' ...' if len(wrong) > 8 else ''}")
    return ds, names, sizes, kinds


def _numeric_bins(entry: dict, data_dir) -> list[int]:
    """The bin value of each kept id of a numeric field (id first_id + k -> values[k])."""
    bins = []
    for v in entry.get("values", []):
        match = _LEVEL.fullmatch(str(v))
        if match is None:
            raise MappingError(f"tf_mapping: {data_dir}/vocab.json field {entry['name']!r} has value {v!r}, "
                               f"not a bin level ('level b'); was it prepared with numeric_transform "
                               f"authors_log?")
        b = int(match.group(1))
        if not 0 <= b < NUMERIC_BUCKETS:
            raise MappingError(f"tf_mapping: field {entry['name']!r} has bin value {b}, outside the "
                               f"{NUMERIC_BUCKETS} buckets of the TensorFlow identity column")
        bins.append(b)
    return bins


def _embedding_parts(ds, names, sizes, kinds, data_dir, dim: int) -> list[Part]:
    """One part per field (adaref order): the TF table and the rows op onto adaref ids."""
    vocab = {e["name"]: e for e in ds.vocab()["fields"]}
    categorical = [f for f, k in enumerate(kinds) if k != "numeric"]
    order = train_first_appearance(ds, categorical)
    parts = []
    for f, (name, size, kind) in enumerate(zip(names, sizes, kinds)):
        entry = vocab.get(name)
        if entry is None:
            raise MappingError(f"tf_mapping: {data_dir}/vocab.json has no field {name!r}")
        if entry.get("first_id") != 1 or int(entry.get("size", -1)) != size:
            raise MappingError(f"tf_mapping: field {name!r} has first_id {entry.get('first_id')} and size "
                               f"{entry.get('size')} in vocab.json; the upstream layout is id 0 = OOV, levels "
                               f"from id 1, {size} ids")
        index = np.full(size, -1, dtype=np.int64)              # adaref id -> TF row; id 0: none
        if kind == "numeric":
            bins = _numeric_bins(entry, data_dir)
            if len(bins) != size - 1:
                raise MappingError(f"tf_mapping: field {name!r}: vocab.json lists {len(bins)} values "
                                   f"for {size - 1} kept ids")
            index[1:] = bins
            rows = NUMERIC_BUCKETS
        else:
            first = order[f][order[f] >= 1]                    # kept ids, first-appearance order
            if len(first) != size - 1:
                unseen = sorted(set(range(1, size)) - set(first.tolist()))
                raise MappingError(f"tf_mapping: field {name!r}: {len(unseen)} kept id(s) never occur in the "
                                   f"training split of {data_dir} (e.g. id {unseen[0]}); the data is "
                                   f"inconsistent, prepare it again")
            index[first] = np.arange(len(first))
            rows = size - 1
        parts.append(Part(f"emb/{name}", (rows, dim),
                          ({"op": "rows", "index": index.tolist(), "fill": 0.0},)))
    return parts


def _field_permutations(pos: np.ndarray, groups: dict[str, int]) -> dict[str, list[int]]:
    """For each group size g: index[a*g + j] = pos[a]*g + j (adaref element <- TF element)."""
    return {key: (pos[:, None] * g + np.arange(g)[None, :]).reshape(-1).tolist() for key, g in groups.items()}


def _rule(adaref: str, theirs: str, shape: tuple, their_shape: tuple, axes: dict, perms: dict,
          extra: tuple = ()) -> Rule:
    """One parameter: permute every field axis of ``axes``, then the ``extra`` ops."""
    ops = []
    for axis, key in axes.items():
        if shape[axis] != len(perms[key]):
            raise MappingError(f"tf_mapping: {adaref} has shape {shape}; axis {axis} should run over "
                               f"F*{key} = {len(perms[key])} (field-major)")
        ops.append({"op": "permute", "axis": axis, "index": perms[key]})
    return Rule(adaref, (Part(theirs, their_shape, tuple(ops) + extra),))


def tf_mapping(model, data_dir: str | os.PathLike) -> Mapping:
    """The mapping between the authors' TensorFlow weights (structural names, see the
    module docstring) and ``model``, an adaref ``upstream`` AdaEnsemble, for the data
    prepared under the ``upstream`` preset in ``data_dir``: the field order and the
    embedding rows come from the data (its field names and kinds, vocab.json and the
    training split's first appearances).

    Raises :class:`MappingError` naming what differs when the model is not the
    upstream structure (experts, expert options, norm, OOV row, temperature form, gate
    input and activation, controller) or the data directory is not an upstream one or
    disagrees with the model (field count, vocabulary sizes). Settings that carry no
    weights (k and its schedule, gate combine, jitter, priors, training form) are not
    checked.
    """
    _check_model(model)
    ds, names, sizes, kinds = _open_data(data_dir, model)
    f, d = len(names), int(model.config.dim)
    pos = np.argsort(tf_field_order(names, kinds))              # adaref field a -> TF position
    experts = dict(model.layers[0].experts.named_children())
    groups = {"D": d, "P": experts["mhsa"].out_size, "H": experts["pin"].subspaces}
    perms = _field_permutations(pos, groups)
    expert_rows = [TF_EXPERT_ORDER.index(e) for e in model.config.moe.experts]

    rules = [Rule("embedding.weight", tuple(_embedding_parts(ds, names, sizes, kinds, data_dir, d)), axis=0)]
    for name, p in model.named_parameters():
        if name == "embedding.weight":
            continue
        shape, parts = tuple(p.shape), name.split(".")
        if parts[0] == "layers" and parts[2] == "gate":
            theirs, axes = _GATE[".".join(parts[3:])]
            prefix = f"L{parts[1]}/gate/"
        elif parts[0] == "layers" and parts[2] == "experts":
            theirs, axes = _EXPERTS[parts[3]][parts[4]]
            prefix = f"L{parts[1]}/"
        elif parts[0] == "estimators":
            theirs, axes = _ESTIMATOR[".".join(parts[2:])]
            prefix = f"L{parts[1]}/"
        elif parts[0] == "controller" and parts[1] == "gate":
            theirs, axes = _GATE[".".join(parts[2:])]
            prefix = "exit_gate/"
        else:
            raise MappingError(f"tf_mapping: no TensorFlow counterpart is known for {name} {shape}")
        extra: tuple = ()
        their_shape = shape
        if parts[-1] == "tau":                                   # a TF scalar
            extra, their_shape = ({"op": "reshape", "shape": [1]},), ()
        elif parts[-1] == "embeddings" and parts[0] == "layers":
            extra = ({"op": "permute", "axis": 0, "index": expert_rows},)
        rules.append(_rule(name, prefix + theirs, shape, their_shape, axes, perms, extra))
    return Mapping(f"tensorflow-upstream (F={f}, D={d})", tuple(rules))


# ---------------------------------------------------------------------------------
def load_tf_dump(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A TF weight dump: one ``.npz`` of float arrays keyed by structural name. Never
    unpickles (:func:`adaref.io.load_npz`); refuses a non-float array, naming it."""
    from adaref.io import load_npz
    arrays, _ = load_npz(path)
    bad = [f"{k} ({a.dtype})" for k, a in arrays.items() if not np.issubdtype(a.dtype, np.floating)]
    if bad:
        raise MappingError(f"{path}: not a weight dump: non-float array(s) {', '.join(bad[:8])}")
    return arrays


def save_tf_dump(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` (e.g. :func:`export_weights` with :func:`tf_mapping`) as a TF
    weight dump: float32, keyed by structural name, no metadata."""
    from adaref.io import save_npz
    save_npz(path, {k: np.asarray(a, dtype=np.float32) for k, a in arrays.items()})
