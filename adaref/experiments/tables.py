"""Summaries over seeds, Markdown tables, and the files each command writes.

Every number over seeds is ``mean ± std``: the sample standard deviation (n - 1) over
the seeds; with one seed the ``± std`` is left out.

>>> mean_std([0.70, 0.72, 0.74])
(0.72, 0.02)
>>> fmt(*mean_std([0.70, 0.72, 0.74]))
'0.7200 ± 0.0200'
>>> fmt_flops(2.26e6), fmt_flops(2041.0), fmt_flops(41)
('2.26M', '2.0k', '41')
>>> print(markdown([["a", "b"], ["1", "2"]]))
| a | b |
|---|---|
| 1 | 2 |
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from adaref.io import write_json

__all__ = ["mean_std", "fmt", "fmt_flops", "fmt_paper", "markdown", "summarize", "write_outputs"]


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    """(mean, sample std) of the values that are not None; std None for fewer than 2."""
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return None, None
    mean = float(v.mean())
    std = float(v.std(ddof=1)) if v.size > 1 else None
    return round(mean, 12), (None if std is None else round(std, 12))


def fmt(mean: float | None, std: float | None = None, digits: int = 4) -> str:
    if mean is None:
        return "—"
    text = f"{mean:.{digits}f}"
    return text if std is None else f"{text} ± {std:.{digits}f}"


def fmt_flops(x: float | None, std: float | None = None) -> str:
    """FLOPs per example: M above a million, k above a thousand."""
    if x is None:
        return "—"
    for scale, unit, digits in ((1e6, "M", 2), (1e3, "k", 1)):
        if abs(x) >= scale:
            text = f"{x / scale:.{digits}f}{unit}"
            return text if not std else f"{text} ± {std / scale:.{digits}f}{unit}"
    return f"{x:.0f}"


def fmt_paper(value: float | None, digits: int = 4) -> str:
    """A paper number as printed there (log-losses of iPinYou keep their 6 decimals)."""
    if value is None:
        return "(blank)"
    if value < 0.01:
        return f"{value:.6f}"
    return f"{value:.{digits}f}"


def markdown(rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table: the first row is the header."""
    head, *body = rows
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def summarize(records) -> dict:
    """mean and std over the runs (seeds) of test AUC, log-loss, mean FLOPs per example
    and validation AUC."""
    out = {"seeds": [r.seed for r in records]}
    for key, get in (("auc", lambda r: r.test.get("auc")), ("log_loss", lambda r: r.test.get("log_loss")),
                     ("flops", lambda r: r.test.get("mean_flops")), ("val_auc", lambda r: r.val_auc)):
        m, s = mean_std(get(r) for r in records)
        out[key], out[key + "_std"] = m, s
    return out


def _clean(value):
    """JSON-safe: NaN and infinities become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


def write_outputs(out: Path, command: str, text: str, payload: dict, records: list) -> list[Path]:
    """``OUT/<command>.md`` (the text), ``.json`` (payload + every run) and ``.csv``
    (one row per run); returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    md, js, cs = out / f"{command}.md", out / f"{command}.json", out / f"{command}.csv"
    md.write_text(text + "\n")
    unique = list({r.dir: r for r in records}.values())
    write_json(js, _clean({**payload, "runs": [r.to_dict() for r in unique]}))
    buffer = io.StringIO()
    rows = [r.to_row() for r in unique]
    fields = list(rows[0]) if rows else ["name"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    cs.write_text(buffer.getvalue())
    return [md, js, cs]
