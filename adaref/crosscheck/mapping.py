"""Foreign weights in and out: a declarative mapping between another implementation's
arrays ("theirs") and adaref's parameters.

A :class:`Mapping` is data (it round-trips through JSON): one :class:`Rule` per adaref
parameter, each built from one or more :class:`Part` s. A part names one of their
arrays, its shape there, and the ops that turn it into (a piece of) the adaref
parameter; the pieces of a rule are concatenated along ``Rule.axis`` (per-field tables
into adaref's one offset table). The ops, each invertible, applied in order:

==========================================  =================================================
``{"op": "transpose", "axes": [...]}``      ``np.transpose(x, axes)``
``{"op": "reshape", "shape": [...]}``       ``x.reshape(shape)`` (e.g. a scalar to (1,))
``{"op": "permute", "axis": a, "index": i}`` ``np.take(x, i, axis=a)``, i a permutation
``{"op": "slice", "axis": a, "start": s,     a slice of a packed tensor (a fused QKV)
"stop": e}``
``{"op": "rows", "index": i, "fill": v}``   row r of the result is x[i[r]], or v where
                                            i[r] = -1 (a row they do not have, e.g. OOV)
==========================================  =================================================

:meth:`Mapping.to_adaref` (import) and :meth:`Mapping.from_adaref` (export) check
coverage: every adaref parameter is produced by exactly one rule, every one of their
arrays is used, no element of theirs is read twice, and every element of theirs is
written by export, unless it is a row adaref has no counterpart for (export writes zeros
there and reports it in :attr:`Mapping.last_unrepresented`; adaref values their arrays
cannot hold are counted in :attr:`Mapping.last_dropped`, elements of theirs that import
does not read in :attr:`Mapping.last_unread`). Errors name the array, its shape and
the rule.

:func:`import_weights` / :func:`export_weights` apply a mapping to a model;
:func:`torch_mapping` is the PyTorch convention of :mod:`adaref.crosscheck.torch_port`
(``nn.Linear`` weights (out, in), Conv1D kernels (O, C, K), channel-major flatten),
built from the parameter layouts of ``python -m adaref.crosscheck spec``.

>>> m = Mapping("demo", (Rule("w", (Part("dense/kernel", (3, 2), ({"op": "transpose", "axes": [1, 0]},)),)),))
>>> m.to_adaref({"dense/kernel": np.arange(6.0).reshape(3, 2)})["w"].shape
(2, 3)
>>> np.array_equal(m.from_adaref(m.to_adaref({"dense/kernel": np.ones((3, 2))}))["dense/kernel"], np.ones((3, 2)))
True
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping as TMapping, Sequence

import numpy as np

FORMAT = "adaref.crosscheck.mapping/1"
OPS = ("transpose", "reshape", "permute", "slice", "rows")


class MappingError(ValueError):
    """A mapping that does not fit the arrays or the model; the message names them."""


@dataclass(frozen=True)
class Part:
    """One of their arrays (``theirs``, of ``shape`` there) and the ops to adaref."""

    theirs: str
    shape: tuple[int, ...]
    ops: tuple[dict, ...] = ()

    def __post_init__(self):     # plain JSON values: parts compare with == and serialise as given
        if not all(isinstance(op, dict) for op in self.ops):
            raise MappingError(f"part {self.theirs!r}: every op must be an object like "
                               f"{{\"op\": \"transpose\", \"axes\": [1, 0]}}, got {list(self.ops)!r}")
        object.__setattr__(self, "ops", tuple(_jsonable(op) for op in self.ops))
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))


@dataclass(frozen=True)
class Rule:
    """The adaref parameter ``adaref`` = concatenate(ops(part) for part in parts, axis)."""

    adaref: str
    parts: tuple[Part, ...]
    axis: int = 0


# ---------------------------------------------------------------------------------
# ops: forward (theirs -> adaref) and inverse (adaref -> theirs, with the written region)
# ---------------------------------------------------------------------------------
def _check_op(op: dict, shape: tuple[int, ...], where: str) -> tuple[int, ...]:
    """Validate one op against its input shape; return the output shape."""
    kind = op.get("op")
    if kind not in OPS:
        raise MappingError(f"{where}: unknown op {kind!r}; known: {', '.join(OPS)}")
    nd = len(shape)

    def axis_of(key="axis"):
        a = op.get(key)
        if not isinstance(a, int) or not -nd <= a < nd:
            raise MappingError(f"{where}: {kind} axis {a!r} is not an axis of shape {shape}")
        return a % nd

    if kind == "transpose":
        axes = list(op.get("axes", []))
        if sorted(axes) != list(range(nd)):
            raise MappingError(f"{where}: transpose axes {axes} do not permute the {nd} axes of {shape}")
        return tuple(shape[a] for a in axes)
    if kind == "reshape":
        new = tuple(int(s) for s in op.get("shape", ()))
        if int(np.prod(new)) != int(np.prod(shape)):
            raise MappingError(f"{where}: cannot reshape {shape} to {new}")
        return new
    index = np.asarray(op.get("index", []))
    if kind in ("permute", "rows") and index.size and index.dtype.kind not in "iu":
        raise MappingError(f"{where}: {kind} index must hold integers, got {index.dtype} values")
    if kind == "permute":
        a = axis_of()
        if index.ndim != 1 or not np.array_equal(np.sort(index), np.arange(shape[a])):
            raise MappingError(f"{where}: permute index must be a permutation of 0..{shape[a] - 1} "
                               f"(axis {a} of {shape})")
        return shape
    if kind == "slice":
        a = axis_of()
        start, stop = op.get("start"), op.get("stop")
        if not (isinstance(start, int) and isinstance(stop, int) and 0 <= start < stop <= shape[a]):
            raise MappingError(f"{where}: slice [{start}, {stop}) is not inside axis {a} of {shape}")
        return shape[:a] + (stop - start,) + shape[a + 1:]
    if nd < 1 or index.ndim != 1 or (index.size and (index.min() < -1 or index.max() >= shape[0])):
        raise MappingError(f"{where}: rows index must be a list of row numbers in [-1, {shape[0] if nd else 0}) "
                           f"of their shape {shape}")
    kept = index[index >= 0]
    if len(np.unique(kept)) != len(kept):
        raise MappingError(f"{where}: rows index uses a row of theirs twice")
    return (len(index),) + shape[1:]


def _apply(op: dict, x: np.ndarray) -> np.ndarray:
    kind = op["op"]
    if kind == "transpose":
        return np.transpose(x, op["axes"])
    if kind == "reshape":
        return x.reshape(op["shape"])
    if kind == "permute":
        return np.take(x, np.asarray(op["index"], dtype=np.int64), axis=op["axis"])
    if kind == "slice":
        sl = [slice(None)] * x.ndim
        sl[op["axis"]] = slice(op["start"], op["stop"])
        return x[tuple(sl)]
    index = np.asarray(op["index"], dtype=np.int64)
    out = np.empty((len(index),) + x.shape[1:], dtype=x.dtype)
    out[index >= 0] = x[index[index >= 0]]
    out[index < 0] = op.get("fill", 0.0)
    return out


def _invert(op: dict, y: np.ndarray, written: np.ndarray, in_shape: tuple[int, ...]):
    """(y, written) in the op's output space -> the same in its input space."""
    kind = op["op"]
    if kind == "transpose":
        inv = np.argsort(op["axes"])
        return np.transpose(y, inv), np.transpose(written, inv)
    if kind == "reshape":
        return y.reshape(in_shape), written.reshape(in_shape)
    if kind == "permute":
        inv = np.argsort(np.asarray(op["index"]))
        return np.take(y, inv, axis=op["axis"]), np.take(written, inv, axis=op["axis"])
    if kind == "slice":
        x, w = np.zeros(in_shape, y.dtype), np.zeros(in_shape, bool)
        sl = [slice(None)] * len(in_shape)
        sl[op["axis"]] = slice(op["start"], op["stop"])
        x[tuple(sl)], w[tuple(sl)] = y, written
        return x, w
    index = np.asarray(op["index"], dtype=np.int64)
    keep = index >= 0
    x, w = np.zeros(in_shape, y.dtype), np.zeros(in_shape, bool)
    x[index[keep]], w[index[keep]] = y[keep], written[keep]
    return x, w


# ---------------------------------------------------------------------------------
@dataclass
class Mapping:
    """A named list of rules (see the module docstring)."""

    name: str
    rules: tuple[Rule, ...]
    #: after :meth:`from_adaref`: {their array: number of elements written as zeros
    #: because adaref has no counterpart (e.g. their rows for levels adaref maps to OOV)}
    last_unrepresented: dict[str, int] = field(default_factory=dict, compare=False)
    #: after :meth:`from_adaref`: {adaref parameter: number of its values their arrays
    #: cannot hold (e.g. a learned OOV row mapped to a fill value), lost on export}
    last_dropped: dict[str, int] = field(default_factory=dict, compare=False)
    #: after :meth:`to_adaref`: {their array: number of elements no rule reads}
    last_unread: dict[str, int] = field(default_factory=dict, compare=False)

    def __post_init__(self):
        seen: dict[str, int] = {}
        for i, r in enumerate(self.rules):
            if r.adaref in seen:
                raise MappingError(f"mapping {self.name!r}: adaref parameter {r.adaref!r} is produced by "
                                   f"rules {seen[r.adaref]} and {i}; each must be covered exactly once")
            seen[r.adaref] = i
            if not r.parts:
                raise MappingError(f"mapping {self.name!r}: rule for {r.adaref!r} has no parts")
            shapes = [self._part_shape(r, p) for p in r.parts]
            if any(not -len(sh) <= r.axis < len(sh) for sh in shapes) and len(shapes) > 1:
                raise MappingError(f"mapping {self.name!r}: rule for {r.adaref!r} concatenates along axis "
                                   f"{r.axis}, which its parts of shapes {shapes} do not have")
            if len(shapes) > 1:
                ax = r.axis
                rest = {s[:ax] + s[ax + 1:] for s in shapes}
                if len(rest) != 1:
                    raise MappingError(f"mapping {self.name!r}: the parts of {r.adaref!r} have shapes "
                                       f"{shapes}, which do not concatenate along axis {ax}")

    def _part_shape(self, rule: Rule, part: Part) -> tuple[int, ...]:
        shape = tuple(part.shape)
        for j, op in enumerate(part.ops):
            shape = _check_op(op, shape, f"mapping {self.name!r}, {rule.adaref!r} <- {part.theirs!r} op {j}")
        return shape

    # -- shapes ------------------------------------------------------------------
    def adaref_shapes(self) -> dict[str, tuple[int, ...]]:
        out = {}
        for r in self.rules:
            shapes = [self._part_shape(r, p) for p in r.parts]
            s = list(shapes[0])
            if len(shapes) > 1:
                s[r.axis] = sum(x[r.axis] for x in shapes)
            out[r.adaref] = tuple(s)
        return out

    def their_shapes(self) -> dict[str, tuple[int, ...]]:
        out: dict[str, tuple[int, ...]] = {}
        for r in self.rules:
            for p in r.parts:
                if p.theirs in out and out[p.theirs] != tuple(p.shape):
                    raise MappingError(f"mapping {self.name!r}: {p.theirs!r} is given shapes "
                                       f"{out[p.theirs]} and {tuple(p.shape)}")
                out[p.theirs] = tuple(p.shape)
        return out

    # -- import ------------------------------------------------------------------
    def to_adaref(self, theirs: TMapping[str, Any]) -> dict[str, np.ndarray]:
        """Their arrays -> adaref's; refuses a missing, extra or misshapen array of
        theirs, naming it."""
        expected = self.their_shapes()
        missing = [k for k in expected if k not in theirs]
        if missing:
            raise MappingError(f"mapping {self.name!r}: {len(missing)} array(s) the mapping needs are not "
                               f"among theirs: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        unused = [k for k in theirs if k not in expected]
        if unused:
            raise MappingError(f"mapping {self.name!r}: {len(unused)} of their arrays are used by no "
                               f"rule: {', '.join(map(str, unused[:8]))}{' ...' if len(unused) > 8 else ''}")
        self._check_reads()
        out = {}
        for r in self.rules:
            pieces = []
            for p in r.parts:
                x = np.asarray(theirs[p.theirs])
                if x.dtype.kind not in "fiu":
                    raise MappingError(f"mapping {self.name!r}: their {p.theirs!r} has dtype {x.dtype}, "
                                       f"not numbers")
                if x.shape != tuple(p.shape):
                    hint = " (the transpose would match)" if x.shape == tuple(p.shape)[::-1] and x.ndim > 1 else ""
                    raise MappingError(f"mapping {self.name!r}: their {p.theirs!r} has shape {x.shape}, "
                                       f"the rule for {r.adaref!r} expects {tuple(p.shape)}{hint}")
                for op in p.ops:
                    x = _apply(op, x)
                pieces.append(x)
            out[r.adaref] = np.ascontiguousarray(pieces[0] if len(pieces) == 1
                                                 else np.concatenate(pieces, axis=r.axis))
        return out

    def _check_reads(self) -> None:
        """Import reads each element of theirs at most once: two rules reading the same
        element (overlapping slices, a row placed twice) is an error; elements no rule
        reads are counted in :attr:`last_unread` (e.g. their rows for levels adaref sends
        to its OOV row)."""
        shapes = self.their_shapes()
        reads = {k: np.zeros(sh, np.int32) for k, sh in shapes.items()}
        reader = {k: np.full(sh, -1, np.int32) for k, sh in shapes.items()}     # rule index per element
        for i, r in enumerate(self.rules):
            for p in r.parts:
                chain = [tuple(p.shape)]
                for op in p.ops:
                    chain.append(_check_op(op, chain[-1], ""))
                y, w = np.zeros(chain[-1]), np.ones(chain[-1], bool)
                for op, in_shape in zip(reversed(p.ops), reversed(chain[:-1])):
                    y, w = _invert(op, y, w, in_shape)
                twice = w & (reads[p.theirs] > 0)
                if twice.any():
                    other = self.rules[int(reader[p.theirs][twice].flat[0])].adaref
                    raise MappingError(f"mapping {self.name!r}: their {p.theirs!r} is read twice, by the rules "
                                       f"for {other!r} and {r.adaref!r} (overlapping slices or rows?)")
                reads[p.theirs] += w
                reader[p.theirs][w] = i
        self.last_unread = {k: int((c == 0).sum()) for k, c in reads.items() if (c == 0).any()}

    # -- export ------------------------------------------------------------------
    def from_adaref(self, arrays: TMapping[str, Any]) -> dict[str, np.ndarray]:
        """adaref's arrays -> theirs (the inverse of :meth:`to_adaref`)."""
        want = self.adaref_shapes()
        missing = [k for k in want if k not in arrays]
        if missing:
            raise MappingError(f"mapping {self.name!r}: adaref arrays lack {', '.join(missing[:8])}")
        extra = [k for k in arrays if k not in want]
        if extra:
            raise MappingError(f"mapping {self.name!r}: adaref parameter(s) {', '.join(extra[:8])} "
                               f"are mapped by no rule")
        shapes = self.their_shapes()
        dtype = np.result_type(*[np.asarray(a).dtype for a in arrays.values()]) if arrays else np.float64
        out = {k: np.zeros(s, dtype) for k, s in shapes.items()}
        written = {k: np.zeros(s, bool) for k, s in shapes.items()}
        for r in self.rules:
            a = np.asarray(arrays[r.adaref])
            if a.shape != want[r.adaref]:
                raise MappingError(f"mapping {self.name!r}: adaref {r.adaref!r} has shape {a.shape}, "
                                   f"the rule gives {want[r.adaref]}")
            sizes = [self._part_shape(r, p)[r.axis] if len(r.parts) > 1 else None for p in r.parts]
            start = 0
            for p, size in zip(r.parts, sizes):
                if size is None:
                    y = a
                else:
                    y = np.take(a, np.arange(start, start + size), axis=r.axis)
                    start += size
                shapes_chain = [tuple(p.shape)]
                for op in p.ops:
                    shapes_chain.append(_check_op(op, shapes_chain[-1], ""))
                w = np.ones(y.shape, bool)
                for op, in_shape in zip(reversed(p.ops), reversed(shapes_chain[:-1])):
                    y, w = _invert(op, y, w, in_shape)
                if np.any(written[p.theirs] & w):
                    raise MappingError(f"mapping {self.name!r}: their {p.theirs!r} is written twice "
                                       f"(by {r.adaref!r} and an earlier rule)")
                out[p.theirs][w] = y[w]
                written[p.theirs] |= w
        self.last_unrepresented = {k: int((~w).sum()) for k, w in written.items() if not w.all()}
        back = self.to_adaref(out)               # what their arrays can hold of adaref's
        self.last_dropped = {n: int(np.sum(back[n] != np.asarray(a))) for n, a in arrays.items()
                             if not np.array_equal(back[n], np.asarray(a))}
        return out

    # -- JSON --------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"format": FORMAT, "name": self.name,
                "rules": [{"adaref": r.adaref, "axis": r.axis,
                           "parts": [{"theirs": p.theirs, "shape": list(p.shape), "ops": [_jsonable(o) for o in p.ops]}
                                     for p in r.parts]} for r in self.rules]}

    @classmethod
    def from_json(cls, doc: dict, where: str = "mapping") -> "Mapping":
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise MappingError(f"{where}: not a mapping (expected \"format\": \"{FORMAT}\")")
        try:
            rules = tuple(Rule(r["adaref"], tuple(Part(p["theirs"], tuple(p["shape"]), tuple(p.get("ops", ())))
                                                  for p in r["parts"]), int(r.get("axis", 0)))
                          for r in doc["rules"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise MappingError(f"{where}: malformed rule ({type(e).__name__}: {e})") from None
        return cls(str(doc.get("name", where)), rules)

    def save(self, path: str | os.PathLike) -> None:
        from adaref.io import write_json
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Mapping":
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except OSError as e:
            raise MappingError(f"{path}: cannot read the mapping: {e.strerror}") from None
        except json.JSONDecodeError as e:
            raise MappingError(f"{path}: not JSON: {e}") from None
        return cls.from_json(doc, str(path))


def _jsonable(op: dict) -> dict:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in op.items()}


def identity_mapping(model, name: str = "adaref") -> Mapping:
    """Their names and layouts are adaref's own."""
    return Mapping(name, tuple(Rule(n, (Part(n, tuple(p.shape)),)) for n, p in model.named_parameters()))


# ---------------------------------------------------------------------------------
def import_weights(model, arrays: TMapping[str, Any], mapping: Mapping) -> dict[str, np.ndarray]:
    """Load their ``arrays`` into ``model`` through ``mapping``; returns the adaref
    arrays loaded. Every adaref parameter must be covered exactly once and every one of
    their arrays used (:class:`MappingError` names what is not); values are cast to the
    model's dtype and checked (shape, finite) by ``load_state_dict``."""
    converted = mapping.to_adaref(arrays)
    params = dict(model.named_parameters())
    unmapped = [n for n in params if n not in converted]
    if unmapped:
        raise MappingError(f"mapping {mapping.name!r}: {len(unmapped)} adaref parameter(s) are mapped by no "
                           f"rule: {', '.join(unmapped[:8])}{' ...' if len(unmapped) > 8 else ''}")
    foreign = [n for n in converted if n not in params]
    if foreign:
        raise MappingError(f"mapping {mapping.name!r}: rule(s) for {', '.join(foreign[:8])}, which the "
                           f"model does not have")
    for n, a in converted.items():
        if a.shape != params[n].shape:
            raise MappingError(f"mapping {mapping.name!r}: {n} comes out {a.shape}, the model's is "
                               f"{params[n].shape}")
    converted = {n: a.astype(params[n].dtype, copy=False) for n, a in converted.items()}
    model.load_state_dict(converted)
    return converted


def export_weights(model, mapping: Mapping) -> dict[str, np.ndarray]:
    """The model's parameters as their arrays (the inverse of :func:`import_weights`)."""
    return mapping.from_adaref(model.state_dict())


# ---------------------------------------------------------------------------------
def _owner(model, name: str):
    """(module owning parameter ``name``, its local name, the nearest EQUATION)."""
    parts = name.split(".")
    module, equation = model, getattr(model, "EQUATION", "")
    for p in parts[:-1]:
        module = dict(module.named_children())[p]
        equation = getattr(module, "EQUATION", "") or equation
    return module, parts[-1], equation


def torch_mapping(config, vocab_sizes: Sequence[int], *, model=None) -> Mapping:
    """The PyTorch convention (:mod:`adaref.crosscheck.torch_port`): same dotted names;
    every ``(in, out)`` matrix stored (out, in) as ``nn.Linear``; Conv1D kernels
    (O, C, K) as ``nn.Conv1d``; the conv expert's output Dense reads its input
    channel-major (o*T_p + t: ``h.reshape(B, -1)`` of (B, O, T_p)) where adaref
    flattens time-major (t*O + o). Everything else is stored as adaref stores it."""
    if model is None:
        from adaref.model import AdaEnsemble
        model = AdaEnsemble(config, vocab_sizes, rng=np.random.default_rng(0))
    rules = []
    for name, p in model.named_parameters():
        module, local, _ = _owner(model, name)
        layout = type(module).PARAM_LAYOUTS.get(local, "")
        shape = tuple(p.shape)
        if layout.startswith("(K, C, O)"):
            rules.append(Rule(name, (Part(name, shape[::-1], ({"op": "transpose", "axes": [2, 1, 0]},)),)))
        elif layout.startswith("(in") and len(shape) == 2:        # "(in F*D, ..." and Linear's "(in, out)"
            ops: tuple[dict, ...] = ({"op": "transpose", "axes": [1, 0]},)
            if getattr(module, "name", "") == "conv" and local == "Wo":
                t_p, o = module.pooled, module.config.filters
                index = [oo * t_p + t for t in range(t_p) for oo in range(o)]   # adaref row t*O+o
                ops = ops + ({"op": "permute", "axis": 0, "index": index},)
            rules.append(Rule(name, (Part(name, shape[::-1], ops),)))
        else:
            rules.append(Rule(name, (Part(name, shape),)))
    return Mapping("pytorch", tuple(rules))
