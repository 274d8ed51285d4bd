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

    @property
    def failures(self) -> list[Row]:
        return [r for r in self.rows if not r.ok]

    @property
    def first_divergence(self) -> Row | None:
        bad = self.failures
        return bad[0] if bad else None

    @property
    def agree(self) -> bool:
        return not self.failures

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
        for name in self.extra:
            hint = f" (did you mean {self.hints[name]}?)" if name in self.hints else ""
            lines.append(f"note: their {name!r} is not a golden tensor; ignored{hint}")
        n_ok = sum(r.ok for r in self.rows)
        lines.append(f"{n_ok} of {len(self.rows)} tensors agree (rtol {self.rtol:g}, atol {self.atol:g} "
                     f"x max(1, max |golden|))")
        first = self.first_divergence
        if first is None:
            lines.append("AGREE")
        else:
            lines.append(f"first divergence: {first.name}: {first.status}: {first.message}")
            lines.append(f"DISAGREE ({len(self.failures)} tensor(s) fail; the first is where the "
                         f"implementations part ways, later ones usually follow from it)")
        return "\n".join(lines)


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
    tensors: dict[str, np.ndarray] = {}
    for f in ("outputs.npz", "grads.npz"):
        try:
            arrays, _ = load_npz(d / f)
        except NpzError as e:
            raise GoldenError(str(e)) from None
        tensors.update(arrays)
    return manifest, tensors


def load_theirs(path: str | os.PathLike, names: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """Their dump, renamed through ``names`` ({their name: golden name})."""
    try:
        arrays, _ = load_npz(path)
    except NpzError as e:
        raise GoldenError(str(e)) from None
    if not names:
        return arrays
    out = {}
    for key, value in arrays.items():
        new = names.get(key, key)
        if new in out:
            raise GoldenError(f"--names maps two of their tensors onto {new!r}")
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


def check_tensor(name: str, theirs: np.ndarray, golden: np.ndarray, rtol: float, atol: float,
                 slack: float = 0.0) -> Row:
    """One tensor's verdict (see the module docstring); ``slack`` is an extra absolute
    allowance (the property suite's float32 rounding estimate)."""
    theirs = np.asarray(theirs)
    shape = golden.shape
    if theirs.shape != golden.shape:
        hint = ""
        if theirs.ndim == golden.ndim >= 2 and theirs.shape == golden.shape[::-1]:
            hint = "; the transpose would match (a (out, in) vs (in, out) layout?)"
        elif theirs.size == golden.size:
            hint = "; same number of elements (a reshape or flatten order?)"
        return Row(name, "shape", shape, message=f"their shape {theirs.shape}, golden {golden.shape}{hint}")
    if golden.dtype.kind in "iub":
        if theirs.dtype.kind not in "iub":
            if theirs.dtype.kind != "f" or not np.array_equal(theirs, np.round(theirs)):
                return Row(name, "dtype", shape, message=f"their dtype {theirs.dtype}, golden integer {golden.dtype}")
        diff = np.asarray(theirs).astype(np.int64) != golden
        if diff.any():
            first = tuple(int(i) for i in np.argwhere(diff)[0])
            return Row(name, "integers", shape, 0.0, 0.0,
                       f"{int(diff.sum())} of {diff.size} differ; first at {first}: theirs "
                       f"{theirs[first]}, golden {golden[first]}")
        return Row(name, "ok", shape, 0.0, 0.0)
    if theirs.dtype.kind not in "fiu":
        return Row(name, "dtype", shape, message=f"their dtype {theirs.dtype} is not numeric")
    if theirs.dtype.kind == "f" and theirs.dtype != golden.dtype:
        return Row(name, "dtype", shape, message=f"their dtype {theirs.dtype}, golden {golden.dtype} "
                                                 f"(write the golden set with --dtype {theirs.dtype})")
    t, g = np.atleast_1d(theirs.astype(np.float64)), np.atleast_1d(golden.astype(np.float64))
    bad = ~np.isfinite(t) & np.isfinite(g)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        return Row(name, "nonfinite", shape, message=f"{int(bad.sum())} NaN/infinite value(s) where golden "
                                                     f"is finite; first at {first[:len(shape)]}: {t[first]}")
    if t.size == 0:
        return Row(name, "ok", shape, 0.0, 0.0)
    scale = max(1.0, float(np.max(np.abs(g))))
    err = np.abs(t - g)
    err[~np.isfinite(g) & (t == g)] = 0.0                    # equal infinities
    max_abs = float(np.max(err))
    significant = np.abs(g) > atol * scale
    max_rel = float(np.max(err[significant] / np.abs(g[significant]))) if significant.any() else 0.0
    fails = err > rtol * np.abs(g) + atol * scale + slack
    if fails.any():
        first = tuple(int(i) for i in np.argwhere(fails)[0])
        return Row(name, "values", shape, max_abs, max_rel,
                   f"{int(fails.sum())} of {fails.size} element(s) outside tolerance; first at {first[:len(shape)]}: "
                   f"theirs {t[first]:.10g}, golden {g[first]:.10g}")
    return Row(name, "ok", shape, max_abs, max_rel)


def compare(golden_dir: str | os.PathLike, theirs: str | os.PathLike | dict, *,
            names: dict[str, str] | None = None, rtol: float | None = None, atol: float | None = None,
            only: Sequence[str] = (), allow_missing: bool = False) -> Report:
    """Compare their dump (a path or a dict) with a golden directory.

    ``only``: glob patterns (``hard.*``, ``grad.*``): compare just the golden tensors
    matching one of them. ``allow_missing``: a golden tensor they do not provide is
    reported but does not fail.
    """
    manifest, golden = load_golden(golden_dir)
    tol = TOLERANCES.get(manifest.get("dtype"), TOLERANCES["float64"])
    rtol = tol["rtol"] if rtol is None else rtol
    atol = tol["atol"] if atol is None else atol
    if isinstance(theirs, dict):
        theirs_arrays = {names.get(k, k) if names else k: v for k, v in theirs.items()}
    else:
        theirs_arrays = load_theirs(theirs, names)
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
    hints = {}
    for n in extra:
        close = difflib.get_close_matches(n, list(golden), n=1, cutoff=0.75)
        if close:
            hints[n] = close[0]
    return Report(rows, extra, hints, rtol, atol)
