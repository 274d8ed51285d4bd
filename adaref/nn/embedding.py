"""The embedding layer of §3.1: one D-dimensional vector per field value (eq. 1)."""
from __future__ import annotations

from numbers import Integral
from typing import Literal, Sequence

import numpy as np

from adaref import ops
from adaref.nn.init import check_rng, truncated_normal
from adaref.nn.module import Module, Parameter
from adaref.tensor import ShapeError, Tensor


def check_vocab_sizes(vocab_sizes: Sequence[int], owner: str) -> list[int]:
    """``vocab_sizes`` (F,) as a list of Python ints. Refuses, naming ``owner``, a value
    that is not a sequence or an entry that is not an integer (a float such as 2.7 or
    3.0, a bool): TypeError; an empty list or an entry < 1: ValueError. NumPy integers
    are accepted.

    >>> check_vocab_sizes([3, np.int64(5)], "Embedding")
    [3, 5]
    >>> check_vocab_sizes([2.7, 3], "Embedding")
    Traceback (most recent call last):
    ...
    TypeError: Embedding: vocab_sizes must be positive integers, got 2.7 (float) at index 0 of [2.7, 3]
    """
    if isinstance(vocab_sizes, (str, bytes)) or not isinstance(vocab_sizes, (Sequence, np.ndarray)):
        raise TypeError(f"{owner}: vocab_sizes must be a sequence of positive integers (one per "
                        f"field), got {vocab_sizes!r}")
    sizes = list(vocab_sizes)
    if not sizes:
        raise ValueError(f"{owner}: vocab_sizes is empty; the model needs at least one field")
    for f, v in enumerate(sizes):
        if not isinstance(v, Integral) or isinstance(v, (bool, np.bool_)):
            raise TypeError(f"{owner}: vocab_sizes must be positive integers, got {v!r} "
                            f"({type(v).__name__}) at index {f} of {sizes}")
        if v < 1:
            raise ValueError(f"{owner}: vocab_sizes must be positive integers, got {v!r} "
                             f"at index {f} of {sizes}")
    return [int(v) for v in sizes]


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

    Decision (OOV row, docs/decisions.md row 3): ``oov="learned"`` (the ``paper`` preset)
    learns row 0 of each field like any other row; ``oov="zero"`` (``upstream``) makes
    it embed to the zero vector and receive no gradient.

    The gradient of ``weight`` is a RowSparseGrad holding only the rows in the batch.
    Initialisation: N(0, std^2) truncated at 2 std, std = 1/sqrt(D) by default.

    >>> emb = Embedding([3, 5], dim=4, rng=np.random.default_rng(0))
    >>> emb(np.array([[0, 4], [2, 1]])).shape
    (2, 2, 4)
    """

    EQUATION = "eq. 1"
    PARAM_LAYOUTS = {"weight": "(sum_f V_f, D): field f's table at rows offsets[f]:offsets[f+1], "
                               "row offsets[f] + id; id 0 is the OOV row"}

    def __init__(self, vocab_sizes: Sequence[int], dim: int, *, rng: np.random.Generator,
                 oov: Literal["learned", "zero"] = "learned", std: float | None = None,
                 dtype=np.float64):
        super().__init__()
        if oov not in ("learned", "zero"):
            raise ValueError(f"Embedding: oov must be 'learned' or 'zero', got {oov!r}")
        check_rng(rng, "Embedding")
        self.vocab_sizes = np.array(check_vocab_sizes(vocab_sizes, "Embedding"), dtype=np.int64)  # (F,)
        self.offsets = np.concatenate([[0], np.cumsum(self.vocab_sizes)])   # (F + 1,)
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
