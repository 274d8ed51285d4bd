"""Per-field vocabularies: training counts, rare threshold, and local ids (§3.1, §4.1.1).

Each field gets its own id space ``[0, size)`` (the embedding layer keeps one table
``V_i`` per field, eq. 1):

* id 0 -- the OOV row: rare levels (train count below ``TransformOptions.min_count()``),
  levels never seen in training, and missing categorical values. ``paper`` learns it;
  ``upstream`` embeds it to zero (``oov_embedding`` in the manifest).
* id 1 -- missing numeric value, only for numeric fields under
  ``numeric_missing="own_id"`` (``paper``, docs/decisions.md row 1).
* the kept levels, in ascending key order, from ``first_id`` on.

:class:`KeyCounter` counts int64 keys in memory that grows with the number of
*distinct* keys, never with the number of rows: chunk counts are buffered and merged
when the buffer outgrows the table (or 4,096 entries, or 64 chunks), so the buffer
never holds more than about the table's size (amortised ``O(V log V)`` work).

>>> c = KeyCounter()
>>> c.add(np.array([5, 3, 5, 9])); c.add(np.array([5, 9]))
>>> keys, counts = c.result()
>>> keys.tolist(), counts.tolist()
([3, 5, 9], [1, 3, 2])
>>> v = FieldVocab.categorical("C1", keys, counts, min_count=2)
>>> v.size, v.encode(np.array([5, 3, 7, 9]), np.array([False, False, False, True])).tolist()
(3, [1, 0, 0, 0])
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["KeyCounter", "FieldVocab"]


class KeyCounter:
    """Exact counts of int64 keys, merged lazily (see the module docstring)."""

    def __init__(self, merge_floor: int = 4096, max_pending: int = 64):
        self._keys = np.zeros(0, dtype=np.int64)
        self._counts = np.zeros(0, dtype=np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_n = 0
        self._floor = merge_floor
        self._max_pending = max_pending

    def add(self, keys: np.ndarray) -> None:
        """Count every entry of ``keys`` ``(n,)``."""
        if len(keys) == 0:
            return
        u, c = np.unique(np.asarray(keys, dtype=np.int64), return_counts=True)
        self._pending.append((u, c.astype(np.int64)))
        self._pending_n += len(u)
        if self._pending_n > max(len(self._keys), self._floor) or len(self._pending) > self._max_pending:
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        keys = np.concatenate([self._keys] + [k for k, _ in self._pending])
        counts = np.concatenate([self._counts] + [c for _, c in self._pending])
        self._pending, self._pending_n = [], 0
        order = np.argsort(keys, kind="stable")
        keys, counts = keys[order], counts[order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        self._keys = keys[starts]
        self._counts = np.add.reduceat(counts, starts) if len(keys) else counts

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(keys, counts)``: distinct keys ascending and their counts."""
        self._merge()
        return self._keys, self._counts


@dataclass
class FieldVocab:
    """The id map of one field. ``kind`` is ``"categorical"`` (a key table) or
    ``"quantile"`` (bin edges); ``size`` counts every id including the special ones."""

    name: str
    kind: str
    first_id: int               # id of the first kept level / bin
    missing_id: int             # id of a missing value (0 = the OOV row, 1 = own id)
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    edges: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    dropped_levels: int = 0     # distinct training levels sent to OOV by the threshold
    dropped_rows: int = 0       # training rows whose level was dropped

    @classmethod
    def categorical(cls, name, keys, counts, min_count: int, missing_own_id: bool = False) -> "FieldVocab":
        """Keep levels with training count >= ``min_count``."""
        keep = counts >= min_count
        first = 2 if missing_own_id else 1
        return cls(name, "categorical", first, 1 if missing_own_id else 0, keys[keep], counts[keep],
                   dropped_levels=int((~keep).sum()), dropped_rows=int(counts[~keep].sum()))

    @classmethod
    def quantile(cls, name, edges) -> "FieldVocab":
        """Equal-frequency bins: id 0 OOV (unused), id 1 missing, bins from id 2."""
        return cls(name, "quantile", 2, 1, edges=np.asarray(edges, dtype=np.int64))

    @property
    def size(self) -> int:
        n_levels = len(self.keys) if self.kind == "categorical" else len(self.edges) + 1
        return self.first_id + n_levels

    def encode(self, keys: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """Local ids ``(B,)`` int32 in ``[0, size)`` of keys ``(B,)`` with a missing mask."""
        keys = np.asarray(keys, dtype=np.int64)
        if self.kind == "quantile":
            ids = np.searchsorted(self.edges, keys, side="left") + self.first_id
        else:
            pos = np.searchsorted(self.keys, keys)
            if len(self.keys):
                found = self.keys[np.minimum(pos, len(self.keys) - 1)] == keys
            else:
                found = np.zeros(len(keys), dtype=bool)
            ids = np.where(found, pos + self.first_id, 0)
        ids = np.where(missing, self.missing_id, ids)
        return ids.astype(np.int32)

    def to_json(self, show) -> dict:
        """JSON description; ``show(keys) -> list[str]`` renders kept keys as raw values."""
        special = {"0": "oov"}
        if self.missing_id == 1:
            special["1"] = "missing"
        out = {"name": self.name, "kind": self.kind, "size": self.size, "special_ids": special,
               "first_id": self.first_id}
        if self.kind == "quantile":
            out["bin_edges"] = self.edges.tolist()
            out["bins"] = "id = first_id + number of edges < value"
        else:
            out["values"] = show(self.keys)
            out["train_counts"] = self.counts.tolist()
            out["dropped_levels"] = self.dropped_levels
            out["dropped_train_rows"] = self.dropped_rows
        return out
