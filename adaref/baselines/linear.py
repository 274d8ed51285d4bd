"""The first-order (linear, "wide") term on one-hot fields: LR's whole model, and the
linear part of FM, Wide & Deep, DeepFM, xDeepFM and FiBiNET."""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np

from adaref import ops
from adaref.nn import Embedding, Parameter
from adaref.tensor import Tensor


class FirstOrder(Embedding):
    r"""y = b + \sum_f w_f[id_f], one weight per (field, id): w^T x + b for the one-hot x.

    .. math::

        y_{\text{linear}} = b + \langle w, x \rangle = b + \sum_{f=1}^{F} w_{f,\,\mathrm{id}_f}

    Stored as an :class:`~adaref.nn.Embedding` of width 1 (``weight`` (sum_f V_f, 1),
    field f's weights at rows ``offsets[f]:offsets[f+1]``) plus ``bias`` (1,), the model's
    global bias. Decision (initial values): every weight and the bias start at 0 (the
    loss is convex in them; adaref's ``bench baseline`` LR does the same). With
    ``oov="zero"`` the OOV row of each field stays 0 and gets no gradient, as the
    embedding's does (docs/decisions.md row 3).

    Shapes: ids (B, F) int -> (B,). FLOPs per example: F (the sum) + 1 (bias).

    >>> lin = FirstOrder([3, 2], rng=np.random.default_rng(0))
    >>> lin.weight.data[[1, 4]] = [[0.5], [2.0]]          # field 0 id 1, field 1 id 1
    >>> lin(np.array([[1, 1], [0, 0]])).data
    array([2.5, 0. ])
    """

    EQUATION = "linear term"
    PARAM_LAYOUTS = {"weight": "(sum_f V_f, 1): field f's weights at rows offsets[f]:offsets[f+1]",
                     "bias": "(1,) the global bias b"}

    def __init__(self, vocab_sizes: Sequence[int], *, rng: np.random.Generator,
                 oov: Literal["learned", "zero"] = "learned", dtype=np.float64):
        super().__init__(vocab_sizes, 1, rng=rng, oov=oov, std=0.0, dtype=dtype)
        self.bias = Parameter(np.zeros(1, dtype=dtype))                       # (1,)

    def forward(self, ids: np.ndarray) -> Tensor:
        w = super().forward(ids)                                              # (B, F, 1)
        return ops.sum(w, axis=(1, 2)) + self.bias                            # (B,)

    def flops(self) -> int:
        return self.num_fields + 1
