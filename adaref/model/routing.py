"""Routing statistics of one forward pass (for Figure 4-style alluvial plots and Table 4)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class LayerRouting:
    """Which experts the examples that reached one layer used.

    Attributes:
        k: experts selected per example at this layer.
        rows: (n,) indices (into the batch) of the examples that reached the layer.
        mask: (n, N) bool, each example's selected experts.
    """

    k: int
    rows: np.ndarray
    mask: np.ndarray

    @property
    def reached(self) -> int:
        return len(self.rows)

    @property
    def selected(self) -> np.ndarray:
        """(N,) how many examples selected each expert; sums to k * reached."""
        return self.mask.sum(axis=0)

    @property
    def fractions(self) -> np.ndarray:
        """(N,) fraction of the examples reaching the layer that selected each expert."""
        return self.selected / max(self.reached, 1)

    def combinations(self) -> dict[tuple[int, ...], int]:
        """{sorted expert indices: number of examples that used exactly that set}; the
        counts sum to ``reached``."""
        if self.reached == 0:
            return {}
        codes = self.mask.astype(np.int64) @ (1 << np.arange(self.mask.shape[1], dtype=np.int64))
        values, counts = np.unique(codes, return_counts=True)
        n = self.mask.shape[1]
        return {tuple(j for j in range(n) if code >> j & 1): int(c) for code, c in zip(values, counts)}


@dataclass
class Routing:
    """Routing of a batch: per layer :class:`LayerRouting`, per example the exit depth."""

    layers: list[LayerRouting]
    exit_depth: np.ndarray      # (B,) int in 1..L: the layer whose estimator predicts

    def depth_fractions(self, num_layers: int) -> np.ndarray:
        """(L,) fraction of examples exiting at each depth (Table 4); sums to 1."""
        counts = np.bincount(self.exit_depth - 1, minlength=num_layers)
        return counts / max(len(self.exit_depth), 1)

    def example_experts(self, b: int) -> list[tuple[int, ...]]:
        """The expert set example ``b`` used at each layer it reached (an alluvial path)."""
        path = []
        for layer in self.layers:
            where = np.flatnonzero(layer.rows == b)
            if where.size == 0:
                break
            path.append(tuple(np.flatnonzero(layer.mask[where[0]]).tolist()))
        return path
