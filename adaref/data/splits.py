"""Train / validation / test assignment of data lines, §4.1.1.

Every data line (header excluded, bad lines included) has a 0-based index ``i`` over
all input files. :class:`SplitAssigner` gives it a code 0 = train, 1 = validation,
2 = test, *streaming*: codes are produced block by block in line order, so the full
45M-row file needs no permutation array in memory.

* ``kind="random"`` (``paper``): split sizes are exact -- ``floor(f_train N)``
  train, ``floor((f_train + f_val) N) - n_train`` validation, the rest test -- and the
  assignment is uniformly random: for each block of ``BLOCK`` lines the number of
  train/val/test slots it takes is a multivariate-hypergeometric draw from the slots
  left, then shuffled within the block (sampling without replacement, sequentially).
  Everything comes from ``numpy.random.Generator(PCG64(seed))``: the same seed and N
  give byte-identical codes.
* ``kind="interleaved"`` (``upstream``): line i has position p = i mod 1000 in its
  block; it trains if p/1000 <= f_train, is validation if p/1000 <= f_train + f_val,
  else test: the authors' ``criteo_split.py`` (80 %: 801 of every 1,000 lines train).
* ``kind="positional"``: the first ``n_train`` lines train, then validation, then test
  (the authors' unused time split).
* ``kind="by_file"``: the first input file is train, the last is test, any middle
  file validation (the iPinYou train/test days).

>>> a = SplitAssigner(SplitOptions(seed=1), [10])
>>> codes = a.codes_for(np.arange(10))
>>> np.bincount(codes, minlength=3).tolist()
[7, 1, 2]
>>> SplitAssigner(SplitOptions(kind="positional", fractions=(0.8, 0.0, 0.2)), [10]).codes_for(np.arange(10)).tolist()
[0, 0, 0, 0, 0, 0, 0, 0, 2, 2]
>>> codes = SplitAssigner(SplitOptions(kind="interleaved", fractions=(0.8, 0.0, 0.2)), [2500]).codes_for(np.arange(2500))
>>> np.bincount(codes, minlength=3).tolist(), codes[[0, 800, 801, 999, 1000]].tolist()
([2102, 0, 398], [0, 0, 2, 2, 0])
"""
from __future__ import annotations

import math

import numpy as np

from .config import OptionsError, SplitOptions

__all__ = ["SPLIT_NAMES", "BLOCK", "SplitAssigner", "split_sizes"]

SPLIT_NAMES = ("train", "val", "test")
#: Lines per block of the random assignment; part of the split's definition.
BLOCK = 1 << 16
INTERLEAVE = 1000   # the authors' block of lines for the interleaved split


def split_sizes(n: int, fractions) -> tuple[int, int, int]:
    """Exact split sizes for ``n`` lines.

    >>> split_sizes(10181, (0.7, 0.1, 0.2))
    (7126, 1018, 2037)
    """
    n_train = math.floor(fractions[0] * n + 1e-9)
    n_val = math.floor((fractions[0] + fractions[1]) * n + 1e-9) - n_train
    return n_train, n_val, n - n_train - n_val


class SplitAssigner:
    """Split codes for increasing data-line indices (see the module docstring)."""

    def __init__(self, options: SplitOptions, lines_per_file: list[int]):
        self.options = options
        self.n = int(sum(lines_per_file))
        self.lines_per_file = list(lines_per_file)
        self.sizes = split_sizes(self.n, options.fractions)
        if options.kind == "by_file" and len(lines_per_file) < 2:
            raise OptionsError("SplitOptions: kind='by_file' needs at least two input files (train, test)")
        self._rng = np.random.Generator(np.random.PCG64(options.seed))
        self._left = np.array(self.sizes, dtype=np.int64)
        self._next_block = 0
        self._blocks: dict[int, np.ndarray] = {}

    def _random_block(self, b: int) -> np.ndarray:
        while self._next_block <= b:
            k = self._next_block
            length = min(BLOCK, self.n - k * BLOCK)
            take = self._rng.multivariate_hypergeometric(self._left, length, method="marginals")
            self._left -= take
            codes = np.repeat(np.arange(3, dtype=np.int8), take)
            self._rng.shuffle(codes)
            self._blocks[k] = codes
            self._next_block += 1
        return self._blocks[b]

    def codes_for(self, index: np.ndarray) -> np.ndarray:
        """Codes ``(B,)`` int8 for ascending indices; calls must not go backwards."""
        index = np.asarray(index, dtype=np.int64)
        if len(index) == 0:
            return np.zeros(0, dtype=np.int8)
        if index[-1] >= self.n:
            raise ValueError(f"line index {int(index[-1])} beyond the {self.n} lines counted before; did the file change?")
        kind = self.options.kind
        if kind == "positional":
            t, v, _ = self.sizes
            return np.where(index < t, 0, np.where(index < t + v, 1, 2)).astype(np.int8)
        if kind == "interleaved":
            f_train, f_val, _ = self.options.fractions
            position = (index % INTERLEAVE) / INTERLEAVE            # as the authors' idx % 1000 / 1000
            return np.where(position <= f_train, 0,
                            np.where(position <= f_train + f_val, 1, 2)).astype(np.int8)
        if kind == "by_file":
            bounds = np.cumsum(self.lines_per_file)
            f = np.searchsorted(bounds, index, side="right")
            return np.where(f == 0, 0, np.where(f == len(bounds) - 1, 2, 1)).astype(np.int8)
        first, last = int(index[0]) // BLOCK, int(index[-1]) // BLOCK
        for old in [k for k in self._blocks if k < first]:
            del self._blocks[old]
        parts = []
        for b in range(first, last + 1):
            codes = self._random_block(b)
            sel = index[(index // BLOCK) == b] - b * BLOCK
            parts.append(codes[sel])
        return np.concatenate(parts)
