"""The embedding layer of §3.1: one D-dimensional vector per field value (eq. 1)."""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np

from adaref import ops
from adaref.nn.init import truncated_normal
from adaref.nn.module import Module, Parameter
from adaref.tensor import ShapeError, Tensor


class Embedding(Module):
    """X_0 = [e_1, ..., e_F]^T with e_i = x_i V_i (eq. 1).

    Input: ids (B, F) int, **per-field** ids with field f's ids in [0, vocab_sizes[f]),
    as the data pipeline writes them; id 0 of every field is its out-of-vocabulary row
    (rare, unseen and missing values). Output: X_0 (B, F, D).

    Decision (storage): the F tables V_1..V_F are stored as **one** Parameter ``weight``
    of shape (sum_f V_f, D), field f's table being rows ``offsets[f] : offsets[f+1]``.
    This is mathematically the paper's one-table-per-field (no row is shared between
    fields) and costs one gather instead of F; :meth:`field_table` returns V_f for
    comparison with implementations that keep F tables.

    Decision (OOV row, paper-decisions row 3): ``oov="learned"`` (the ``paper`` preset)
    learns row 0 of each field like any other row; ``oov="zero"`` (``upstream``) makes
    it embed to the zero vector and receive no gradient.

    The gradient of ``weight`` is a RowSparseGrad holding only the rows in the batch.
    Initialisation: N(0, std^2) truncated at 2 std, std = 1/sqrt(D) by default.

    >>> emb = Embedding([3, 5], dim=4, rng=np.random.default_rng(0))
    >>> emb(np.array([[0, 4], [2, 1]])).shape
    (2, 2, 4)
    """

    def __init__(self, vocab_sizes: Sequence[int], dim: int, *, rng: np.random.Generator,
                 oov: Literal["learned", "zero"] = "learned", std: float | None = None,
                 dtype=np.float64):
        super().__init__()
        if oov not in ("learned", "zero"):
            raise ValueError(f"Embedding: oov must be 'learned' or 'zero', got {oov!r}")
        sizes = np.asarray(vocab_sizes, dtype=np.int64)
        if sizes.ndim != 1 or len(sizes) == 0 or (sizes < 1).any():
            raise ValueError(f"Embedding: vocab_sizes must be positive integers, got {list(vocab_sizes)}")
        self.vocab_sizes = sizes
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])        # (F + 1,)
        self.dim, self.oov = dim, oov
        std = 1.0 / np.sqrt(dim) if std is None else std
        table = truncated_normal(rng, (int(self.offsets[-1]), dim), std, dtype)
        if oov == "zero":
            table[self.offsets[:-1]] = 0.0
        self.weight = Parameter(table)

    @property
    def num_fields(self) -> int:
        return len(self.vocab_sizes)

    def field_table(self, f: int) -> np.ndarray:
        """V_f, field f's (vocab_sizes[f], D) table (a view of ``weight``)."""
        return self.weight.data[self.offsets[f]:self.offsets[f + 1]]

    def forward(self, ids: np.ndarray) -> Tensor:
        ids = np.asarray(ids)
        if ids.ndim != 2 or ids.shape[1] != self.num_fields:
            raise ShapeError(f"Embedding: ids must have shape (B, {self.num_fields}), got {ids.shape}")
        if ids.dtype.kind not in "iu":
            raise TypeError(f"Embedding: ids must be integers, got {ids.dtype}")
        bad = (ids < 0) | (ids >= self.vocab_sizes)
        if bad.any():
            b, f = np.argwhere(bad)[0]
            raise IndexError(f"Embedding: id {ids[b, f]} at row {b}, field {f} is outside "
                             f"[0, {self.vocab_sizes[f]})")
        x0 = ops.embedding(self.weight, ids + self.offsets[:-1])        # (B, F, D)
        if self.oov == "zero":
            x0 = x0 * (ids != 0)[..., None].astype(x0.dtype)            # (B, F, 1) constant
        return x0
