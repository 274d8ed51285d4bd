"""Gradient accumulation: summing the gradients a tensor receives, dense or row-sparse.

A tensor used by several ops receives one gradient from each of them during
:meth:`~adaref.tensor.Tensor.backward`, and a leaf receives one per ``backward`` call
until :meth:`~adaref.tensor.Tensor.zero_grad`. Every such sum goes through
:func:`accumulate`; the engine never adds gradients anywhere else.

A gradient is either a dense ``numpy.ndarray`` or a :class:`RowSparseGrad`: the
gradient of an embedding table (only the rows a batch looked up) or of the rows that
the sparse dispatcher gathered (eq. 12).

>>> import numpy as np
>>> g = RowSparseGrad(np.array([1]), np.ones((1, 2)), (3, 2))
>>> accumulate(g, g).to_dense().tolist()          # two sparse gradients stay sparse
[[0.0, 0.0], [2.0, 2.0], [0.0, 0.0]]
>>> accumulate(np.zeros((3, 2)), g).tolist()       # sparse into dense: only its rows
[[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]
"""
from __future__ import annotations

import numpy as np

from adaref import kernels


class RowSparseGrad:
    """Gradient of an array that is nonzero only in some rows (entries of axis 0).

    ``rows`` (R,) are unique sorted row indices, ``values`` (R, ...) their gradients and
    ``shape`` (V, ...) the array's shape. An embedding lookup produces one for its (V, D)
    table, and optimisers update only ``rows``; the dispatcher's row gather produces one
    for an intermediate (B, F, D), which the engine adds into that tensor's gradient.
    ``to_dense()`` gives the ordinary array.
    """

    __slots__ = ("rows", "values", "shape")

    def __init__(self, rows: np.ndarray, values: np.ndarray, shape: tuple[int, ...]):
        self.rows, self.values, self.shape = rows, values, tuple(shape)

    @property
    def dtype(self) -> np.dtype:
        return self.values.dtype

    def to_dense(self) -> np.ndarray:
        dense = np.zeros(self.shape, dtype=self.values.dtype)
        dense[self.rows] = self.values  # rows are unique: plain assignment is exact
        return dense

    def __add__(self, other: "RowSparseGrad | np.ndarray") -> "RowSparseGrad | np.ndarray":
        return accumulate(self, other)

    __radd__ = __add__

    def __repr__(self) -> str:
        return f"RowSparseGrad(rows={self.rows.tolist()}, shape={self.shape})"


def dense(grad: "np.ndarray | RowSparseGrad") -> np.ndarray:
    """The gradient as a dense array, whatever form it is stored in."""
    return grad.to_dense() if isinstance(grad, RowSparseGrad) else grad


def accumulate(total: "np.ndarray | RowSparseGrad", g: "np.ndarray | RowSparseGrad",
               in_place: bool = False) -> "np.ndarray | RowSparseGrad":
    """``total + g`` for dense and row-sparse gradients in any combination.

    * dense + dense: the NumPy sum;
    * sparse + sparse: a :class:`RowSparseGrad` over the union of the rows, so an
      embedding table's gradient stays the size of the rows a batch touched;
    * dense + sparse: the dense array with the sparse rows added.

    ``in_place=True`` promises that ``total`` is a dense array nobody else holds (one
    the engine allocated itself); it is then updated in place and returned, which is
    what keeps summing the many gradients of a shared intermediate cheap. The rows of a
    sparse ``g`` go through the kernel ``scatter_add_unique_rows``, so the backward pass
    of a row gather never builds a full array of zeros.
    """
    if in_place:
        if isinstance(g, RowSparseGrad) and total.flags.c_contiguous:   # rows as (F*D,) views
            kernels.scatter_add_unique_rows(total.reshape(total.shape[0], -1), g.rows,
                                            np.ascontiguousarray(g.values).reshape(len(g.rows), -1))
        elif isinstance(g, RowSparseGrad):
            total[g.rows] += g.values
        else:
            total += g
        return total
    if isinstance(total, RowSparseGrad) and isinstance(g, RowSparseGrad):
        rows, inverse = np.unique(np.concatenate([total.rows, g.rows]), return_inverse=True)
        values = np.zeros((len(rows),) + total.shape[1:], dtype=total.values.dtype)
        np.add.at(values, inverse, np.concatenate([total.values, g.values]))
        return RowSparseGrad(rows, values, total.shape)
    if isinstance(total, RowSparseGrad) or isinstance(g, RowSparseGrad):
        sparse, other = (total, g) if isinstance(total, RowSparseGrad) else (g, total)
        out = other.copy()
        out[sparse.rows] += sparse.values
        return out
    return total + g
