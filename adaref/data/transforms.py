"""Numeric feature transformations, §3.1 and §4.1.1 (docs/decisions.md rows 1-2).

All functions act on int64 arrays of shape ``(B,)`` and return int64 levels, which
then get per-field ids through a vocabulary (:mod:`adaref.data.vocab`).

* :func:`winners_log` -- ``numeric_transform="winners_log"`` (``paper``): the Criteo
  winners' floor(ln(v)^2) for v > 2, and v itself otherwise (so v <= 2 is not
  transformed; larger values can land on the same level as a small one: 3 and 4 give
  level 1, as v = 1 does, and 5 gives 2). §4.1.1 prints floor(log(V^2)) but credits the
  winners, whose code computes floor(ln(V)^2); the winners' form is taken.
* :func:`authors_log` -- ``numeric_transform="authors_log"`` (``upstream``): the
  authors' floor(ln(v^2 + 1)), which is symmetric in the sign of v. Computed exactly
  (float64); the authors' code casts to float32 first, which moves some large values
  to the next level (about 50 integers below 3e7, e.g. v = 1,202,604: 27 here, 28 in
  float32). No value of the bundled Criteo sample is affected.
* :func:`quantile_edges` / :func:`bucketize` -- ``numeric_transform="quantile"``:
  equal-frequency bins (§3.1) fitted on the training split's value counts.

>>> winners_log(np.array([-1, 0, 2, 3, 100, 10**9])).tolist()
[-1, 0, 2, 1, 21, 429]
>>> authors_log(np.array([-3, 0, 3, 100])).tolist()
[2, 0, 2, 9]
"""
from __future__ import annotations

import numpy as np

__all__ = ["winners_log", "authors_log", "quantile_edges", "bucketize"]


def winners_log(v: np.ndarray) -> np.ndarray:
    """floor(ln(v)^2) for v > 2, else v. ``(B,)`` int64 -> ``(B,)`` int64."""
    v = np.asarray(v, dtype=np.int64)
    big = v > 2
    out = v.copy()
    out[big] = np.floor(np.log(v[big].astype(np.float64)) ** 2).astype(np.int64)
    return out


def authors_log(v: np.ndarray) -> np.ndarray:
    """floor(ln(v^2 + 1)) (the authors' code). ``(B,)`` int64 -> ``(B,)`` int64."""
    x = np.asarray(v, dtype=np.float64)
    return np.floor(np.log1p(x * x)).astype(np.int64)


def quantile_edges(values: np.ndarray, counts: np.ndarray, n_bins: int) -> np.ndarray:
    """Inner edges of ``n_bins`` equal-frequency bins from a (value, count) table.

    ``values`` are the distinct training values (sorted ascending), ``counts`` how
    often each occurs. Edge k is the smallest value at which the cumulative count
    reaches k/n_bins of the total; repeated edges (ties) are merged, so heavy ties
    give fewer bins. Bin of x = number of edges < x (:func:`bucketize`), i.e. bins are
    the intervals (e_{k-1}, e_k].

    >>> quantile_edges(np.arange(1, 9), np.ones(8, dtype=np.int64), 4).tolist()
    [2, 4, 6]
    >>> quantile_edges(np.array([0, 5]), np.array([90, 10]), 4).tolist()  # ties merge
    [0]
    """
    values = np.asarray(values, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    cum = np.cumsum(counts)
    targets = cum[-1] * np.arange(1, n_bins) / n_bins
    idx = np.searchsorted(cum, targets, side="left")
    edges = np.unique(values[np.minimum(idx, len(values) - 1)])
    return edges[edges < values[-1]]


def bucketize(v: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index in ``[0, len(edges)]`` of each value: the number of edges < v.

    >>> bucketize(np.array([1, 2, 3, 9]), np.array([2, 4, 6])).tolist()
    [0, 0, 1, 3]
    """
    return np.searchsorted(edges, np.asarray(v, dtype=np.int64), side="left").astype(np.int64)
