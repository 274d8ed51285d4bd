"""Scatter-add of rows: the backward pass of an embedding lookup (and later, of the
sparse dispatcher's combine step)."""
import numpy as np

from adaref.kernels import Kernel


def _scatter_add_rows_numpy(out: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
    """out[index[i]] += values[i] for i = 0..n-1, in order.

    Shapes: out (R, D), index (n,) int64 in [0, R), values (n, D); ``out`` is updated
    in place. Both twins add in the order of ``i``, so they agree exactly.
    """
    np.add.at(out, index, values)


def _scatter_add_rows_loop(out, index, values):
    n, d = values.shape
    for i in range(n):
        row = index[i]
        for j in range(d):
            out[row, j] += values[i, j]


scatter_add_rows = Kernel("scatter_add_rows", _scatter_add_rows_numpy, _scatter_add_rows_loop)
