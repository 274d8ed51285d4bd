"""Scatter-add of rows: the backward pass of an embedding lookup (``scatter_add_rows``,
repeated rows allowed) and the engine's adding of a row-sparse gradient into a dense one
(``scatter_add_unique_rows``, e.g. the backward of the dispatcher's row gather)."""
import numpy as np
try:
    from numba import prange   # parallel rows under the JIT; a plain range without it
except ImportError:            # the NumPy twins run without Numba
    prange = range

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


def _scatter_add_unique_rows_numpy(out: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
    """out[index[i]] += values[i] for unique index. Shapes: out (R, C), index (n,) int64
    in [0, R) without repeats (the loop writes rows in parallel), values (n, C). Each
    element gets one addition, so the twins agree exactly."""
    out[index] += values


def _scatter_add_unique_rows_loop(out, index, values):
    n, c = values.shape
    for i in prange(n):           # unique rows: each out row has one writer
        row = index[i]
        for j in range(c):
            out[row, j] += values[i, j]


scatter_add_rows = Kernel("scatter_add_rows", _scatter_add_rows_numpy, _scatter_add_rows_loop)
scatter_add_unique_rows = Kernel("scatter_add_unique_rows", _scatter_add_unique_rows_numpy,
                                 _scatter_add_unique_rows_loop, parallel=True)
