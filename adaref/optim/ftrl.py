"""FTRL-Proximal (McMahan et al. 2013) and its group-lasso form over embedding rows (G-FTRL).

**FTRL-Proximal**, per coordinate (McMahan et al., "Ad Click Prediction: a View from
the Trenches", KDD 2013, Algorithm 1). State: z (linear accumulator) and n (sum of
squared gradients), both shaped like the parameter::

    n_new = n + g^2
    sigma = (sqrt(n_new) - sqrt(n)) / alpha
    z     <- z + g - sigma * w
    n     <- n_new
    w     <- 0                                             if |z| <= l1
             -(z - sign(z) * l1) / ((beta + sqrt(n)) / alpha + l2)   otherwise

The new w minimises z.w + 1/2 sum_i a_i w_i^2 + l1 ||w||_1 with
a_i = (beta + sqrt(n_i)) / alpha + l2, which is the FTRL-Proximal objective
g_{1:t}.w + 1/2 sum_s sigma_s ||w - w_s||^2 + 1/2 (beta/alpha) ||w||^2
+ l1 ||w||_1 + 1/2 l2 ||w||^2 up to a constant (z collects g_{1:t} - sum_s sigma_s w_s).
Note the L2 convention: ``l2`` is McMahan's lambda_2 (objective term 1/2 l2 ||w||^2,
denominator ``+ l2``), as in the authors' GFTRL; TensorFlow's ``Ftrl`` optimiser
instead adds ``2 * l2``; Adam's ``l2`` in adaref follows Keras (loss term l2 ||w||^2).
There is no learning rate: alpha and beta set the per-coordinate rate
alpha / (beta + sqrt(n)).

**GroupFTRL** (the paper's G-FTRL, §4.1.4; docs/decisions.md row 23): the same
per-coordinate accumulators z and n and the same z update, but the L1 term is replaced
by a group lasso over each row of a 2-D table (one group = one embedding vector), with
threshold ``lam = l1 * sqrt(D)`` (``group_scale="sqrt_dim"``, the authors' code) or
``lam = l1`` (``"none"``). Per row, with z, n, a the row's (D,) vectors::

    w_row <- 0                                                      if ||z||_2 <= lam
             -(1 - lam / ||z||_2) * z / ((beta + sqrt(n)) / alpha + l2)   otherwise

(division per coordinate). Derivation: the new row minimises
z.w + 1/2 sum_d a_d w_d^2 + lam ||w||_2. Optimality is 0 in z + a*w + lam d||w||_2.
At w = 0 the subdifferential of ||w||_2 is the unit ball, so w = 0 iff ||z|| <= lam;
this holds for any a. Otherwise w_d = -z_d / (a_d + lam / ||w||). **If a_d is the same
for every d of the row** this gives ||w|| = (||z|| - lam) / a and the closed form
above, exactly (it is the proximal step of the group lasso). With per-coordinate
accumulators a_d differs within a row, and the closed form is then the authors'
(and this class's default) approximation: exact zero test, group soft-threshold of z,
then per-coordinate scaling. ``row_solution="exact"`` instead solves the optimality
condition exactly: ||w|| = r is the root of sum_d z_d^2 / (a_d r + lam)^2 = 1 (the
left side decreases and is convex in r; Newton's method from the lower bound
(||z|| - lam) / max_d a_d rises monotonically to the root), then
w_d = -z_d r / (a_d r + lam).

Decision (sparse rows): FTRL is **lazy** by nature. With a
:class:`~adaref.tensor.RowSparseGrad` only the batch's rows of z, n and w change; every
other row stays bit-identical. ``sparse_update="dense"`` densifies the gradient, so
every row is recomputed from its (z, n) each step: this is what the authors' GFTRL does
(its sparse apply densifies). For a row that has been in a batch the recomputation is
a no-op (g = 0 gives sigma = 0, z and n unchanged, the same w bit for bit), so the two
modes differ only on rows never yet seen: densely, the first step resets them to the
closed form of their initial state -- zero under ``z_init="zero"``, the init shrunk by
l1/l2 under ``"from_weights"`` -- and lazily they keep their initial weights until
their first batch. Once every row has been touched the modes agree bit for bit.

Decision (initial state, ``z_init``): n = 0 always. For z:

* ``"from_weights"`` (default): z = -(beta / alpha) * w_0. This centres the initial
  proximal term 1/2 (beta/alpha) ||w - w_0||^2 at the initial weights instead of at 0,
  so the objective is McMahan's with every proximal term centred on an iterate
  (sigma_{1:t} = 1/eta_t, starting from w_0); l1/group lasso and l2 still pull to 0.
  Without l1 and l2, the closed form of the initial state is w_0, and the first touch
  of a coordinate is an AdaGrad step from the random init:
  w = w_0 - alpha * g / (beta + |g|).
* ``"zero"``: z = 0, the standard rule (McMahan's Algorithm 1 assumes w_0 = 0;
  TensorFlow and the authors' GFTRL). With a random init the hidden term
  1/2 (beta/alpha) ||w||^2 pulls towards 0: the first touch gives (without l1, l2)
  w = (|g| w_0 - alpha g) / (beta + |g|), so the init is scaled by |g| / (beta + |g|)
  -- kept when |g| >> beta, erased when |g| << beta (rare rows with small gradients),
  whatever the data says.

Both agree when w_0 = 0. ``"from_weights"`` is the default because adaref trains from a
truncated-normal embedding init (sigma = 1/sqrt(D)) and should not let the size of a
row's first gradient decide whether that init survives. z is set from the weights the
parameter holds when the optimiser is built: build it after initialising or loading
the weights (a checkpoint restores z itself). A third rule, z chosen so that the
*regularised* closed form returns w_0, was rejected: it needs
z_0 = -(a_0 w_0 + l1 sign(w_0)), an offset that never decays and cancels the l1/l2
pull at w_0 forever, so the (group) lasso could never prune an uninformative row.

With the authors' hyper-parameters (beta/alpha = 0.005 against a threshold
lam = 1e-3 * sqrt(16) = 0.004) the group lasso is about as strong as the initial
proximal term. Under ``"zero"`` a row whose first gradient is tiny (|g| ~ 1e-5 per
coordinate, init of norm 0.9) is pruned to zero in its first batch; under
``"from_weights"`` its z starts at (beta/alpha) ||w_0|| = 0.0045, just above the
threshold, so it keeps about 16% of its norm. For |g| ~ 1e-4 the rules keep about
half and a twentieth of it, for |g| ~ 1e-3 about 94% and 83% (one G-FTRL step from
the default options; the doctest below shows the mechanics on a small table).

>>> import numpy as np
>>> from adaref.nn import Parameter
>>> table = Parameter(np.zeros((3, 2)))
>>> opt = GroupFTRL([("emb", table)], alpha=1.0, beta=1.0, l1=2.5, l2=0.0, group_scale="none")
>>> from adaref.tensor import RowSparseGrad
>>> table.grad = RowSparseGrad(np.array([0, 2]), np.array([[3.0, -4.0], [0.6, 0.8]]), (3, 2))
>>> opt.step()      # row 0: ||z|| = 5 > 2.5, w = -(1 - 2.5/5) * [3/4, -4/5]; row 2: ||z|| = 1
>>> table.data
array([[-0.375,  0.4  ],
       [ 0.   ,  0.   ],
       [ 0.   ,  0.   ]])
"""
from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np

from adaref.optim.base import Optimizer, OptimizerConfig, SparseUpdate
from adaref.tensor import Tensor

ZInit = Literal["from_weights", "zero"]


@dataclasses.dataclass(frozen=True)
class FTRLConfig(OptimizerConfig):
    alpha: float = 0.05                    # rate alpha / (beta + sqrt(n)); paper: [1e-2, 1e-1]
    beta: float = 1.0                      # > 0; McMahan et al. suggest beta = 1
    l1: float = 0.0                        # lambda_1: objective term l1 ||w||_1
    l2: float = 0.0                        # lambda_2: objective term 1/2 l2 ||w||^2
    z_init: ZInit = "from_weights"         # z_0 = -(beta/alpha) w_0, or z_0 = 0
    sparse_update: SparseUpdate = "lazy"   # RowSparseGrad: touched rows only, or densify

    def _check(self) -> None:
        self._require(self.alpha > 0, "alpha", "> 0")
        self._require(self.beta > 0, "beta", "> 0")
        self._require(self.l1 >= 0, "l1", ">= 0")
        self._require(self.l2 >= 0, "l2", ">= 0")


@dataclasses.dataclass(frozen=True)
class GroupFTRLConfig(FTRLConfig):
    """G-FTRL's hyper-parameters. To reproduce the authors' optimiser exactly also set
    ``z_init="zero"`` and ``sparse_update="dense"`` (see the module docstring)."""

    alpha: float = 0.02                    # alpha, beta, l1, l2: the authors' exp1.py
    beta: float = 1e-4
    l1: float = 1e-3                       # group lasso: lam = l1 * sqrt(D) by default
    l2: float = 1e-3                       # lambda_2: objective term 1/2 l2 ||w||^2
    group_scale: Literal["sqrt_dim", "none"] = "sqrt_dim"   # lam = l1 sqrt(D), or l1
    row_solution: Literal["closed_form", "exact"] = "closed_form"  # the authors', or argmin


class FTRL(Optimizer):
    """Per-coordinate FTRL-Proximal; state slots ``z`` and ``n`` (see the module docstring)."""

    config_class = FTRLConfig

    def slots(self) -> tuple[str, ...]:
        return ("z", "n")

    def init_slot(self, slot: str, w: np.ndarray) -> np.ndarray:
        c = self.config
        if slot == "z" and c.z_init == "from_weights":
            return (-(c.beta / c.alpha)) * w
        return np.zeros_like(w)

    def rule(self, w: np.ndarray, g: np.ndarray, z: np.ndarray,
             n: np.ndarray) -> tuple[np.ndarray, ...]:
        c = self.config
        n_new = n + g * g
        sigma = (np.sqrt(n_new) - np.sqrt(n)) / c.alpha
        z = z + g - sigma * w
        a = (c.beta + np.sqrt(n_new)) / c.alpha + c.l2           # per-coordinate 1/eta + l2
        return self.solve(z, a), z, n_new

    def solve(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """argmin_w z.w + 1/2 sum a w^2 + l1 ||w||_1, per coordinate (soft threshold)."""
        l1 = self.config.l1
        w = -(z - np.sign(z) * l1) / a
        return np.where(np.abs(z) <= l1, np.zeros_like(w), w)


class GroupFTRL(FTRL):
    """G-FTRL: FTRL-Proximal with a group lasso over the rows of a 2-D table (V, D)."""

    config_class = GroupFTRLConfig

    def check_parameter(self, name: str, p: Tensor) -> None:
        if p.ndim != 2:
            raise ValueError(f"GroupFTRL: parameter {name!r} has shape {p.shape}; the group "
                             f"lasso acts on the rows of a 2-D (V, D) table")

    def threshold(self, dim: int) -> float:
        """lam, the row threshold: l1 * sqrt(D), or l1 with ``group_scale="none"``."""
        c = self.config
        return c.l1 * math.sqrt(dim) if c.group_scale == "sqrt_dim" else c.l1

    def solve(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """argmin_w z.w + 1/2 sum a w^2 + lam ||w||_2 for each row of z, a (R, D)."""
        lam = self.threshold(z.shape[-1])
        norm = np.sqrt(np.sum(z * z, axis=-1, keepdims=True))      # (R, 1)
        keep = norm > lam                                           # (R, 1)
        safe = np.where(keep, norm, np.ones_like(norm))             # no 0/0 on pruned rows
        if self.config.row_solution == "exact" and lam > 0:
            r = _row_norm_root(z, a, lam, keep)                     # (R, 1) = ||w_row||
            w = -z * (r / (a * r + lam))
        else:
            w = z * ((lam / safe - 1.0) / a)    # = -(1 - lam/||z||) z / a, the authors' order
        return np.where(keep, w, np.zeros_like(w))


def _row_norm_root(z: np.ndarray, a: np.ndarray, lam: float, keep: np.ndarray) -> np.ndarray:
    """r >= 0 with f(r) = sum_d z_d^2 / (a_d r + lam)^2 - 1 = 0 per row (R, 1); 0 if not keep.

    f is decreasing and convex in r. Newton's method started left of the root
    increases monotonically to it; r_0 = (||z|| - lam) / max_d a_d is left of it
    (there a_d r_0 + lam <= ||z||, so f(r_0) >= 0) and keeps a r + lam away from 0.
    """
    norm = np.sqrt(np.sum(z * z, axis=-1, keepdims=True))              # (R, 1)
    r = np.where(keep, (norm - lam) / np.max(a, axis=-1, keepdims=True), np.zeros_like(norm))
    tiny = 4 * np.finfo(z.dtype).eps
    for _ in range(100):
        q = a * r + lam                                                 # (R, D) > 0
        u = (z / q) ** 2                                                # (R, D)
        f = np.sum(u, axis=-1, keepdims=True) - 1.0                     # (R, 1)
        df = -2.0 * np.sum(u * a / q, axis=-1, keepdims=True)           # (R, 1) < 0
        step = np.divide(f, df, out=np.zeros_like(f), where=keep)      # pruned rows (z = 0 too): none
        r_new = np.where(keep, np.maximum(r, r - step), r)
        if np.all(r_new - r <= tiny * r_new):                           # no more progress
            return r_new
        r = r_new
    return r
