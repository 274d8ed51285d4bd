"""The interface shared by the 13 competing models of §4.1.3, their common config fields
and the config checks they use.

Every baseline is ``Model(config, vocab_sizes, *, rng, dtype)`` and maps per-field ids
(B, F), exactly what :class:`~adaref.model.AdaEnsemble` takes from :mod:`adaref.data`,
to the logit (B,) of the click probability: ``model(ids)``. The sigmoid is left to the
caller, as for AdaEnsemble's estimators (the loss is computed from the logit).

FLOPs (``flops_per_example()``) follow the convention of :mod:`adaref.experts.base`
(docs/decisions.md row 24): a multiply-add counts 2, any other arithmetic operation,
comparison or activation evaluation counts 1 (``linear`` 0), a sum of n terms counts n,
a mean of n terms n + 1; embedding lookups, reshapes and concatenations count 0. Like
:meth:`adaref.model.estimator.Estimator.flops`, the count ends with the output
sigmoid (1). Every model's docstring gives its formula.

Names of parameters: the D-dimensional embedding table is always ``embedding.weight``
and the first-order weights ``linear.weight``/``linear.bias``, so that
:func:`adaref.training.bilevel.split_parameters` puts the table in its ``embedding``
group and everything else in ``weights``; no baseline has a parameter whose name
contains ``gate`` (the ``gates`` group stays empty).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Sequence

import numpy as np

from adaref import ops
from adaref.config import Config, ConfigError
from adaref.nn import Embedding, Module
from adaref.nn.embedding import check_vocab_sizes
from adaref.nn.init import check_rng
from adaref.tensor import DTypeError, ShapeError, Tensor


@dataclass(frozen=True)
class BaselineConfig(Config):
    """Fields every baseline with a D-dimensional embedding shares (LR has only the OOV one)."""

    dim: int = 16                                          # D, embedding size of every field (§4.1.4)
    embedding_oov: Literal["learned", "zero"] = "learned"  # row 3: OOV row learned or zero, as the data set's
    embedding_std: float = 1e-4                            # N(0, std^2) initial embeddings (DeepCTR's and
    # ^ FuxiCTR's default; AdaEnsemble's 1/sqrt(D) makes FM's 741 pair terms start at logits of std ~10)

    def __post_init__(self):
        check_positive(type(self).__name__, "dim", self.dim)
        if not (isinstance(self.embedding_std, (int, float)) and 0 < self.embedding_std < float("inf")):
            raise ConfigError(f"{type(self).__name__}: embedding_std must be a positive number, "
                              f"got {self.embedding_std!r}")
        check_choice(type(self).__name__, "embedding_oov", self.embedding_oov, ("learned", "zero"))


class Baseline(Module):
    """Base class: ``forward(ids)`` checks the batch, then calls ``logit(ids)``.

    Subclasses set ``name`` (the key in :data:`adaref.baselines.MODELS`), build their
    layers in ``__init__`` after calling this constructor, and define ``logit(ids) ->
    Tensor (B,)`` and ``flops_per_example() -> int``. :meth:`embed` gives X_0 (B, F, D).
    """

    name: ClassVar[str] = "baseline"

    def __init__(self, config: Config, vocab_sizes: Sequence[int], *, rng: np.random.Generator,
                 dtype=np.float64):
        super().__init__()
        check_rng(rng, type(self).__name__)
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise DTypeError(f"{type(self).__name__}: dtype must be float32 or float64, got {dtype}")
        self.config, self.dtype = config, dtype
        self.vocab_sizes = check_vocab_sizes(vocab_sizes, type(self).__name__)
        self.num_fields = len(self.vocab_sizes)                                   # F
        self.dim = getattr(config, "dim", 1)                                      # D

    def make_embedding(self, rng: np.random.Generator) -> Embedding:
        """The (sum_f V_f, D) table of eq. 1 (AdaEnsemble's layout), N(0, embedding_std^2)."""
        return Embedding(self.vocab_sizes, self.dim, rng=rng, oov=self.config.embedding_oov,
                         std=self.config.embedding_std, dtype=self.dtype)

    def forward(self, ids: np.ndarray) -> Tensor:
        """The logit (B,) for per-field ids (B, F)."""
        ids = np.asarray(ids)
        if ids.ndim != 2 or ids.shape[1] != self.num_fields:
            raise ShapeError(f"{type(self).__name__}: ids must have shape (B, {self.num_fields}), "
                             f"got {ids.shape}")
        if ids.shape[0] == 0:
            raise ValueError(f"{type(self).__name__}: the batch is empty (ids of shape {ids.shape}); "
                             f"pass at least one example")
        z = self.logit(ids)
        assert z.shape == (ids.shape[0],), (type(self).__name__, z.shape)
        return z

    def embed(self, ids: np.ndarray) -> Tensor:
        """X_0 = E(ids) (B, F, D)."""
        return self.embedding(ids)

    def logit(self, ids: np.ndarray) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__}.logit")

    def flops_per_example(self) -> int:
        """Forward FLOPs per example (see the module docstring for the convention)."""
        raise NotImplementedError(f"{type(self).__name__}.flops_per_example")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(F={self.num_fields}, {self.config!r})"


# ---------------------------------------------------------------------------------
# Config checks
# ---------------------------------------------------------------------------------
def check_positive(owner: str, key: str, value, minimum: int = 1) -> None:
    """Refuse a non-integer (or bool) ``value`` or one below ``minimum``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{owner}: {key} must be an integer >= {minimum}, got {value!r}")


def check_units(owner: str, key: str, units, allow_empty: bool = True) -> None:
    """Refuse ``units`` that is not a tuple of positive integers (or is empty when not allowed)."""
    if not isinstance(units, tuple) or not all(isinstance(u, int) and not isinstance(u, bool)
                                               and u >= 1 for u in units):
        raise ConfigError(f"{owner}: {key} must be a tuple of positive integers, got {units!r}")
    if not units and not allow_empty:
        raise ConfigError(f"{owner}: {key} must not be empty")


def check_choice(owner: str, key: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{owner}: {key} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


# ---------------------------------------------------------------------------------
# Products by weights, written so a weight's gradient is one 2-D (or per-slot) matmul
# ---------------------------------------------------------------------------------
def linear_rows(x: Tensor, W: Tensor) -> Tensor:
    """x W over the last axis, x (..., n), W (n, m) -> (..., m), as one (rows, n) @ (n, m)
    matmul: the gradient of W is then rows^T g, never one (n, m) block per example."""
    lead = x.shape[:-1]
    y = ops.matmul(ops.reshape(x, (-1, x.shape[-1])), W)                      # (rows, m)
    return ops.reshape(y, lead + (W.shape[1],))                               # (..., m)


def slot_matmul(x: Tensor, W: Tensor) -> Tensor:
    """y[:, s] = x[:, s] @ W[s] for every slot s: x (B, S, n), W (S, n, m) -> (B, S, m).

    Computed slot-major, (S, B, n) @ (S, n, m), so W's gradient is S matmuls over the
    batch instead of a (B, S, n, m) array summed afterwards.

    >>> x, W = Tensor(np.ones((2, 3, 4))), Tensor(np.ones((3, 4, 5)))
    >>> slot_matmul(x, W).shape
    (2, 3, 5)
    """
    y = ops.matmul(ops.transpose(x, (1, 0, 2)), W)                            # (S, B, m)
    return ops.transpose(y, (1, 0, 2))                                        # (B, S, m)
