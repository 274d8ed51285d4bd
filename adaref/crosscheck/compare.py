"""``compare``: another implementation's dump against a golden directory.

Every golden tensor (``outputs.npz`` in forward order, then ``grads.npz``) is looked up
in their ``.npz`` (after renaming through an optional ``{their name: golden name}`` map)
and checked: present, same shape (a transposed shape is named as such), no NaN or
infinity where the golden value is finite, integers equal, floats within the
tolerances of :mod:`adaref.crosscheck.tolerances`. The report gives each tensor's max
absolute and max relative error and names the **first** tensor that fails, which is
where the two implementations part ways; the later failures are usually consequences.
"""
from __future__ import annotations

import difflib
import fnmatch
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from adaref.crosscheck.golden import FILES, FORMAT, GoldenError
from adaref.crosscheck.tolerances import TOLERANCES
from adaref.io import NpzError, load_npz


@dataclass
class Row:
    name: str
    status: str     # ok | absent (missing, allowed) | values | missing | shape | dtype | nonfinite | integers
    shape: tuple = ()
    max_abs: float = float("nan")
    max_rel: float = float("nan")
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "absent")


@dataclass
class Report:
    rows: list[Row]
    extra: list[str] = field(default_factory=list)
    hints: dict[str, str] = field(default_factory=dict)
    rtol: float = 0.0
    atol: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[Row]:
        return [r for r in self.rows if not r.ok]

    @property
    def compared(self) -> list[Row]:
        """The golden tensors found in their dump (and so checked)."""
        return [r for r in self.rows if r.status not in ("absent", "missing")]

    @property
    def first_divergence(self) -> Row | None:
        bad = self.failures
        return bad[0] if bad else None

    @property
    def agree(self) -> bool:
        return not self.failures and bool(self.compared)

    def format(self, verbose: bool = True) -> str:
        lines = []
        if verbose:
            width = max([len(r.name) for r in self.rows] + [10])
            lines.append(f"{'tensor':<{width}}  {'shape':<16} {'max abs err':>11} {'max rel err':>11}  verdict")
            for r in self.rows:
                err = (f"{r.max_abs:>11.3e} {r.max_rel:>11.3e}" if np.isfinite(r.max_abs)
                       else f"{'-':>11} {'-':>11}")
                verdict = ("ok" if r.status == "ok" else "absent (allowed)" if r.ok
                           else f"FAIL ({r.status}) {r.message}")
                lines.append(f"{r.name:<{width}}  {str(tuple(r.shape)):<16} {err}  {verdict}")
        notes = list(self.notes)
        for name in self.extra:
            hint = f" (did you mean {self.hints[name]}?)" if name in self.hints else ""
            notes.append(f"note: their {name!r} is not a golden tensor; ignored{hint}")
        shown = notes if verbose or len(notes) <= 5 else notes[:5] + [f"note: ... and {len(notes) - 5} more"]
        lines += shown
        compared = self.compared
        absent = sum(r.status == "absent" for r in self.rows)
        missing = sum(r.status == "missing" for r in self.rows)
        n_ok = sum(r.status == "ok" for r in compared)
        lines.append(f"{n_ok} of {len(compared)} compared tensors agree"
                     + (f"; {missing} golden tensor(s) missing from their dump" if missing else "")
                     + (f"; {absent} golden tensor(s) absent from their dump, allowed" if absent else "")
                     + f" (rtol {self.rtol:g}, atol {self.atol:g} x max(1, max |golden|))")
        first = self.first_divergence
        if not compared:
            lines.append("NOTHING COMPARED: none of the golden tensors is in their dump (check the names; "
                         "see the notes above)")
        elif first is None:
            lines.append("AGREE")
        elif first.status == "missing":
            lines.append(f"first missing: {first.name} (not in their dump; --allow-missing or --only narrows "
                         f"the check)")
            lines.append(f"DISAGREE ({len(self.failures)} tensor(s) fail)")
        else:
            lines.append(f"first divergence: {first.name}: {first.status}: {first.message}")
            lines.append(f"DISAGREE ({len(self.failures)} tensor(s) fail; the first is where the "
                         f"implementations part ways, later ones usually follow from it)")
        return "\n".join(lines)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _list_of(kind, check):
    return (f"a list of {kind}", lambda v: isinstance(v, list) and all(check(x) for x in v))


def _STR(v) -> bool:
    return isinstance(v, str)


_DICT = ("a JSON object", lambda v: isinstance(v, dict))

#: manifest.json's fields as ``golden`` writes them: (required, what, check). The
#: required ones are those ``compare`` reads; the others are checked when present.
MANIFEST_FIELDS = {
    "forms": (True, *_list_of("form names", _STR)),
    "gradient_form": (True, "a form name (a string)", _STR),
    "outputs": (True, *_list_of("tensor names", _STR)),
    "gradients": (True, *_list_of("tensor names", _STR)),
    "preset": (False, "a preset name or null", lambda v: v is None or isinstance(v, str)),
    "config": (False, *_DICT),
    "vocab_sizes": (False, *_list_of("positive integers", lambda x: _is_int(x) and x > 0)),
    "seed": (False, "an integer", _is_int),
    "batch": (False, "a positive integer", lambda v: _is_int(v) and v > 0),
    "k": (False, "a positive integer", lambda v: _is_int(v) and v > 0),
    "lambdas": (False, *_DICT),
    "tolerances": (False, *_DICT),
    "source": (False, *_DICT),
    "versions": (False, *_DICT),
    "spec": (False, *_DICT),
}


def check_manifest(manifest: dict, path) -> None:
    """Every field of a golden manifest has the type ``golden`` writes (a GoldenError
    naming the file and the first field that has not)."""
    damaged = "the golden set is damaged: write it again with golden"
    for name, (required, what, check) in MANIFEST_FIELDS.items():
        if name not in manifest:
            if required:
                raise GoldenError(f"{path}: has no field {name!r} ({what}); {damaged}")
            continue
        value = manifest[name]
        if not check(value):
            shown = repr(value) if len(repr(value)) <= 40 else f"a {type(value).__name__}"
            raise GoldenError(f"{path}: field {name!r} is {shown}, expected {what}; {damaged}")
    if manifest["gradient_form"] not in manifest["forms"]:
        raise GoldenError(f"{path}: field 'gradient_form' is {manifest['gradient_form']!r}, not one of its "
                          f"forms {manifest['forms']}; {damaged}")


def load_golden(directory: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """(manifest, {name: array} of outputs then gradients, in order)."""
    d = Path(directory)
    if not d.is_dir():
        raise GoldenError(f"{d}: not a directory (expected a golden set written by "
                          f"`python -m adaref.crosscheck golden`)")
    missing = [f for f in FILES if not (d / f).is_file()]
    if missing:
        raise GoldenError(f"{d}: not a complete golden set; missing {', '.join(missing)}")
    try:
        manifest = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GoldenError(f"{d / 'manifest.json'}: unreadable: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise GoldenError(f"{d / 'manifest.json'}: not a golden manifest (format {FORMAT!r})")
    if not isinstance(manifest.get("dtype"), str) or manifest["dtype"] not in TOLERANCES:
        raise GoldenError(f"{d / 'manifest.json'}: dtype {manifest.get('dtype')!r} is not one of "
                          f"{', '.join(TOLERANCES)}")
    check_manifest(manifest, d / "manifest.json")
    tensors: dict[str, np.ndarray] = {}
    for f, key in (("outputs.npz", "outputs"), ("grads.npz", "gradients")):
        try:
            arrays, _ = load_npz(d / f)
        except NpzError as e:
            raise GoldenError(str(e)) from None
        listed = manifest.get(key)
        if not isinstance(listed, list) or list(arrays) != listed:
            raise GoldenError(f"{d / f}: its tensors are not the {key} manifest.json lists "
                              f"({len(arrays)} against {len(listed) if isinstance(listed, list) else 'none'}); "
                              f"the golden set is damaged: write it again with golden")
        tensors.update(arrays)
    return manifest, tensors


def load_theirs(path: str | os.PathLike, names: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """Their dump, renamed through ``names`` ({their name: golden name})."""
    try:
        arrays, _ = load_npz(path)
    except NpzError as e:
        raise GoldenError(str(e)) from None
    return rename(arrays, names)


def rename(arrays: dict, names: dict[str, str] | None, prefix: str = "") -> dict:
    """Their tensors renamed through ``names`` ({their name: golden name}), then, if
    ``prefix`` (``--form``), non-gradient names without a form prefix get it."""
    if names:
        unknown = [k for k in names if k not in arrays]
        if unknown:
            raise GoldenError(f"--names renames {', '.join(map(repr, unknown[:5]))}, which their dump does not hold")
    out = {}
    for key, value in arrays.items():
        new = names.get(key, key) if names else key
        if prefix and not new.startswith(("grad.", f"{prefix}.")):
            new = f"{prefix}.{new}"
        if new in out:
            raise GoldenError(f"two of their tensors end up named {new!r} (--names/--form)")
        out[new] = value
    return out


def load_names(path: str | os.PathLike) -> dict[str, str]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise GoldenError(f"{path}: cannot read the name map: {e.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GoldenError(f"{path}: the name map is not JSON: {e}") from None
    if not isinstance(doc, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in doc.items()):
        raise GoldenError(f"{path}: the name map must be a JSON object {{\"their name\": \"golden name\"}}")
    return doc


def _permutation_hint(theirs: np.ndarray, golden: np.ndarray) -> str:
    """Which axis permutation of theirs has the golden shape (or values), if any."""
    import itertools

    if theirs.ndim != golden.ndim:
        return ""
    for axes in itertools.permutations(range(golden.ndim)):
        if axes != tuple(range(golden.ndim)) and tuple(theirs.shape[a] for a in axes) == golden.shape:
            if golden.ndim == 2:
                return "; the transpose would match (a (out, in) vs (in, out) layout?)"
            return f"; their axes in the order {axes} would match (np.transpose(theirs, {axes}))"
    return ""


def check_tensor(name: str, theirs: np.ndarray, golden: np.ndarray, rtol: float, atol: float,
                 slack: float = 0.0) -> Row:
    """One tensor's verdict (see the module docstring); ``slack`` is an extra absolute
    allowance (the property suite's float32 rounding estimate)."""
    theirs = np.asarray(theirs)
    shape = golden.shape
    if theirs.dtype.kind not in "fiub":
        return Row(name, "dtype", shape, message=f"their dtype {theirs.dtype} is not numeric")
    if theirs.shape != golden.shape:
        hint = _permutation_hint(theirs, golden)
        if not hint and theirs.size == golden.size:
            hint = "; same number of elements (a reshape or flatten order?)"
        return Row(name, "shape", shape, message=f"their shape {theirs.shape}, golden {golden.shape}{hint}")
    if golden.dtype.kind in "iub":
        if theirs.dtype.kind not in "iub":
            if theirs.dtype.kind != "f" or not np.all(np.isfinite(theirs)) or not np.array_equal(theirs, np.round(theirs)):
                return Row(name, "dtype", shape, message=f"their dtype {theirs.dtype}, golden integer {golden.dtype}")
        diff = np.asarray(theirs).astype(np.int64) != golden
        if diff.any():
            first = tuple(int(i) for i in np.argwhere(diff)[0])
            return Row(name, "integers", shape, 0.0, 0.0,
                       f"{int(diff.sum())} of {diff.size} differ; first at {first}: theirs "
                       f"{theirs[first]}, golden {golden[first]}")
        return Row(name, "ok", shape, 0.0, 0.0)
    if theirs.dtype.kind == "f" and theirs.dtype.itemsize != golden.dtype.itemsize:
        theirs_name = np.dtype(theirs.dtype.newbyteorder("=")).name
        return Row(name, "dtype", shape, message=f"their dtype {theirs_name}, golden {golden.dtype.name} "
                                                 f"(write the golden set with --dtype {theirs_name})"
                   if theirs_name in TOLERANCES else f"their dtype {theirs_name}, golden {golden.dtype.name}")
    t, g = np.atleast_1d(theirs.astype(np.float64)), np.atleast_1d(golden.astype(np.float64))
    g_finite, t_finite = np.isfinite(g), np.isfinite(t)
    same_special = (np.isnan(g) & np.isnan(t)) | (~g_finite & ~np.isnan(g) & (t == g))
    bad = (g_finite & ~t_finite) | (~g_finite & ~same_special)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        where = "golden is finite" if g_finite[first] else f"golden is {g[first]}"
        return Row(name, "nonfinite", shape, message=f"{int(bad.sum())} value(s) where the NaN/infinity pattern "
                                                     f"differs; first at {first[:len(shape)]}: theirs {t[first]}, "
                                                     f"{where}")
    if t.size == 0 or not g_finite.any():
        return Row(name, "ok", shape, 0.0, 0.0)
    tf, gf = t[g_finite], g[g_finite]
    scale = max(1.0, float(np.max(np.abs(gf))))
    err = np.abs(tf - gf)
    max_abs = float(np.max(err))
    significant = np.abs(gf) > atol * scale
    max_rel = float(np.max(err[significant] / np.abs(gf[significant]))) if significant.any() else 0.0
    fails_f = err > rtol * np.abs(gf) + atol * scale + slack
    if fails_f.any():
        fails = np.zeros(g.shape, bool)
        fails[g_finite] = fails_f
        first = tuple(int(i) for i in np.argwhere(fails)[0])
        hint = ""
        if g.ndim == 2 and g.shape[0] == g.shape[1] and g.shape[0] > 1 and g_finite.all() and np.all(
                np.abs(t.T - g) <= rtol * np.abs(g) + atol * scale + slack):
            hint = "; their transpose matches (a square weight read (out, in) vs (in, out)?)"
        return Row(name, "values", shape, max_abs, max_rel,
                   f"{int(fails_f.sum())} of {fails_f.size} element(s) outside tolerance; first at "
                   f"{first[:len(shape)]}: theirs {t[first]:.10g}, golden {g[first]:.10g}{hint}")
    return Row(name, "ok", shape, max_abs, max_rel)


def compare(golden_dir: str | os.PathLike, theirs: str | os.PathLike | dict, *,
            names: dict[str, str] | None = None, rtol: float | None = None, atol: float | None = None,
            only: Sequence[str] = (), allow_missing: bool = False, form: str | None = None) -> Report:
    """Compare their dump (a path or a dict) with a golden directory.

    ``only``: glob patterns (``hard.*``, ``grad.*``): compare just the golden tensors
    matching one of them. ``allow_missing``: a golden tensor they do not provide is
    reported but does not fail (at least one must be compared). ``form``: their names
    carry no form prefix (a serving graph's ``layers.0.gate.logits``) and are that
    form's (``hard``); only that form's tensors, and gradients if they give any, are
    compared.
    """
    manifest, golden = load_golden(golden_dir)
    tol = TOLERANCES[manifest["dtype"]]
    rtol = tol["rtol"] if rtol is None else rtol
    atol = tol["atol"] if atol is None else atol
    if form is not None and form not in manifest.get("forms", []):
        raise GoldenError(f"--form {form}: the golden set holds the forms {', '.join(manifest.get('forms', []))}")
    if isinstance(theirs, dict):
        theirs_arrays = rename(dict(theirs), names, form or "")
    else:
        theirs_arrays = rename(load_theirs(theirs), names, form or "")
    if form is not None and not only:
        only = [f"{form}.*"] + (["grad.*"] if any(n.startswith("grad.") for n in theirs_arrays) else [])
    selected = [n for n in golden if not only or any(fnmatch.fnmatchcase(n, p) for p in only)]
    if not selected:
        raise GoldenError(f"--only {' '.join(only)} matches no golden tensor")
    rows = []
    for name in selected:
        if name not in theirs_arrays:
            rows.append(Row(name, "absent" if allow_missing else "missing", golden[name].shape,
                            message="not in their dump"))
            continue
        rows.append(check_tensor(name, theirs_arrays[name], golden[name], rtol, atol))
    extra = [n for n in theirs_arrays if n not in golden]
    hints, notes = {}, []
    prefixed = {f: sum(f"{f}.{n}" in golden for n in extra) for f in manifest.get("forms", [])}
    if form is None and extra and max(prefixed.values(), default=0) >= max(1, len(extra) // 2):
        notes.append(f"note: {len(extra)} of their names carry no form prefix (e.g. {extra[0]!r}); the golden "
                     f"names are '<form>.<name>': pass --form {' or --form '.join(prefixed)} to say which "
                     f"form your dump computes")
    else:
        for n in extra:
            close = difflib.get_close_matches(n, list(golden), n=1, cutoff=0.75)
            if close:
                hints[n] = close[0]
    return Report(rows, extra, hints, rtol, atol, notes)
