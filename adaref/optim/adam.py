"""Adam (Kingma & Ba 2015, arXiv:1412.6980, Algorithm 1) with coupled L2 regularisation.

Update at step t (the optimiser's step count), per element::

    g   <- g + 2 * l2 * w                    (coupled L2, only if l2 > 0)
    m   <- beta1 * m + (1 - beta1) * g
    v   <- beta2 * v + (1 - beta2) * g^2
    m^  =  m / (1 - beta1^t)
    v^  =  v / (1 - beta2^t)
    w   <- w - lr * m^ / (sqrt(v^) + eps)                     epsilon_form="algorithm1"
    w   <- w - lr * sqrt(1 - beta2^t) / (1 - beta1^t)
                  * m / (sqrt(v) + eps)                        epsilon_form="keras"

Decision (L2, paper §4.1.4): the regulariser is **coupled**, added to the loss as
TensorFlow/Keras ``kernel_regularizer=tf.keras.regularizers.l2(l2)`` does: the loss
gains ``l2 * sum(w^2)``, so the gradient gains ``2 * l2 * w`` *before* the moments, and
the decay is then rescaled by Adam's per-element step size. It is **not** AdamW's
decoupled decay ``w <- w - lr * wd * w``. ``l2`` is the paper's lambda (searched in
[1e-4, 1e-3]); PyTorch's ``Adam(weight_decay=wd)`` is ``l2 = wd / 2``. It applies to
every parameter given to this optimiser: to exempt some (e.g. biases), give them to a
second Adam with ``l2 = 0``. (docs/decisions.md row 23: the authors' code uses no L2.)

Decision (epsilon): ``"algorithm1"`` (default) is Kingma & Ba's Algorithm 1;
``"keras"`` is the "efficient" form of their §2 that TensorFlow/Keras Adam computes
(the authors' optimiser), where eps meets the uncorrected sqrt(v). They differ only
where sqrt(v^) is comparable to eps.

Decision (embedding rows): with a :class:`~adaref.tensor.RowSparseGrad` the default is
the **lazy** (sparse) update, as TensorFlow Addons' ``LazyAdam``: only the batch's rows
of m, v and w change; the others are bit-identical, their moments frozen until the row
is next in a batch. ``sparse_update="dense"`` densifies the gradient instead: exactly
Algorithm 1 on the dense gradient (zero rows and all), at the cost of touching the
whole table every step. Consequences of lazy:

1. A row absent for k steps keeps its m and v; densely they would have decayed by
   beta1^k and beta2^k. When the row returns, its old gradients weigh in fully.
2. Momentum does not move a row after its last batch, and L2 decays a row only while
   it is in the batch (densely, every row moves and decays every step).
3. The bias correction uses the optimiser's *global* step t (as TensorFlow does; both
   modes), not the number n_r of batches that held the row. A row's moments are then
   under-corrected by (1 - beta^{n_r}) / (1 - beta^t): a row first seen at a large t
   gets m^ ~ (1 - beta1) g and v^ ~ (1 - beta2) g^2, a first step of about
   lr (1 - beta1) / sqrt(1 - beta2) = 3.16 lr with the defaults, where a per-row count
   would give lr. (Dense Adam gives the same for a row whose gradient was zero until
   then; the steps approach lr as the row is seen more often.)

>>> import numpy as np
>>> from adaref.nn import Parameter
>>> w = Parameter(np.array([1.0, -1.0]))
>>> opt = Adam([w], lr=0.1)
>>> w.grad = np.array([3.0, -0.5])
>>> opt.step()                      # first step: m^ = g, v^ = g^2, so w moves lr * sign(g)
>>> np.round(w.data, 6)
array([ 0.9, -0.9])
"""
from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np

from adaref.kernels import adam as K
from adaref.optim.base import Optimizer, OptimizerConfig, SparseUpdate


@dataclasses.dataclass(frozen=True)
class AdamConfig(OptimizerConfig):
    lr: float = 1e-3                       # step size (paper: tuned in [1e-4, 1e-3])
    beta1: float = 0.9                     # decay of the first moment m
    beta2: float = 0.999                   # decay of the second moment v
    eps: float = 1e-8                      # Kingma & Ba's epsilon (Keras default is 1e-7)
    l2: float = 0.0                        # coupled L2: loss += l2 * sum(w^2), g += 2 l2 w
    epsilon_form: Literal["algorithm1", "keras"] = "algorithm1"
    sparse_update: SparseUpdate = "lazy"   # RowSparseGrad: lazy (touched rows) or dense

    def _check(self) -> None:
        self._require(self.lr > 0, "lr", "> 0")
        self._require(0 <= self.beta1 < 1, "beta1", "in [0, 1)")
        self._require(0 <= self.beta2 < 1, "beta2", "in [0, 1)")
        self._require(self.eps > 0, "eps", "> 0")
        self._require(self.l2 >= 0, "l2", ">= 0")


class Adam(Optimizer):
    """Adam with coupled L2 and lazy row updates; state slots ``m`` and ``v``."""

    config_class = AdamConfig

    def slots(self) -> tuple[str, ...]:
        return ("m", "v")

    def rule(self, w: np.ndarray, g: np.ndarray, m: np.ndarray,
             v: np.ndarray) -> tuple[np.ndarray, ...]:
        c, t = self.config, self.step_count
        if c.l2:
            g = g + (2.0 * c.l2) * w
        m = c.beta1 * m + (1.0 - c.beta1) * g
        v = c.beta2 * v + (1.0 - c.beta2) * (g * g)
        bc1, bc2 = 1.0 - c.beta1 ** t, 1.0 - c.beta2 ** t      # Python floats: no upcast
        if c.epsilon_form == "algorithm1":
            w = w - c.lr * (m / bc1) / (np.sqrt(v / bc2) + c.eps)
        else:
            w = w - (c.lr * math.sqrt(bc2) / bc1) * m / (np.sqrt(v) + c.eps)
        return w, m, v

    def update_in_place(self, w: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray) -> None:
        """:meth:`rule` on a whole parameter in one pass (:data:`adaref.kernels.adam.adam_update`),
        the same bits as the rule; a non-contiguous array falls back to the rule."""
        arrays = (w, g, m, v)
        if not all(a.flags.c_contiguous and a.dtype == w.dtype for a in arrays):
            return super().update_in_place(w, g, m, v)
        K.adam_update(*(a.reshape(-1) for a in arrays), *self._kernel_constants(w.dtype))

    def update_rows_in_place(self, w: np.ndarray, rows: np.ndarray, g: np.ndarray, m: np.ndarray,
                             v: np.ndarray) -> None:
        """:meth:`rule` on the rows of a row-sparse gradient in one pass over them
        (:data:`adaref.kernels.adam.adam_update_rows`), the same bits as the rule."""
        arrays = (w, g, m, v)
        if not (all(a.flags.c_contiguous and a.dtype == w.dtype and a.ndim == 2 for a in arrays)
                and rows.dtype == np.int64):
            return super().update_rows_in_place(w, rows, g, m, v)
        K.adam_update_rows(w, g, m, v, rows, *self._kernel_constants(w.dtype))

    def _kernel_constants(self, dtype) -> tuple[np.ndarray, int]:
        """The kernels' constants c (10,) and form."""
        c, t = self.config, self.step_count
        bc1, bc2 = 1.0 - c.beta1 ** t, 1.0 - c.beta2 ** t
        # in the order LR, B1, ONE_MINUS_B1, ..., KERAS_STEP of adaref.kernels.adam, cast to
        # the parameter's dtype as NumPy casts the rule's Python floats
        consts = np.array([c.lr, c.beta1, 1.0 - c.beta1, c.beta2, 1.0 - c.beta2, c.eps, 2.0 * c.l2,
                           bc1, bc2, c.lr * math.sqrt(bc2) / bc1], dtype=dtype)
        return consts, 0 if c.epsilon_form == "algorithm1" else 1
