"""What an op keeps for its backward pass: an array, or a recipe that makes it again.

An op's ``forward`` saves the arrays its ``backward`` reads. Some of them are cheap
copies of arrays that are kept in any case: the rows of the feature map that the
sparse dispatcher gathers for each expert (:class:`~adaref.model.dispatcher.DispatchRows`)
are copies of the layer's input, and at k = 4 of N = 5 the five experts' copies hold
four times the layer input. Saving such an array through :func:`save` keeps a
*recipe* instead (the function that makes the array again, with the shape, strides
and offset of the view the op holds); :func:`load` in ``backward`` makes it again.
The array itself is then freed after the forward pass, and each op's backward holds
its copy only while it runs.

Only arrays registered with :func:`recomputable` are saved as recipes: the producer
promises that ``make()`` returns an array equal to the original **bit for bit** (a
gather is a copy), from arrays that nobody modifies before the backward pass; every
other array is saved as it is. So results do not change, only when memory is held.

>>> import numpy as np
>>> x = np.arange(12.0).reshape(4, 3)
>>> rows = np.array([0, 2])
>>> copy = recomputable(x[rows], lambda: x[rows])      # a registered gather
>>> kept = save(copy.T)                                # an op keeps a view of it
>>> isinstance(kept, Recipe), load(kept).tolist()
(True, [[0.0, 6.0], [1.0, 7.0], [2.0, 8.0]])
>>> save(x) is x                                       # not registered: kept as is
True
"""
from __future__ import annotations

import weakref
from typing import Callable

import numpy as np

__all__ = ["Recipe", "recomputable", "save", "load"]

# id(array) -> (weak reference to it, make); an entry leaves with its array
_registry: dict[int, tuple[weakref.ref, Callable[[], np.ndarray]]] = {}


def recomputable(a: np.ndarray, make: Callable[[], np.ndarray]) -> np.ndarray:
    """Register ``a`` (an array that owns its memory) as one that ``make()`` returns
    again, equal bit for bit and with the same shape, dtype and C-contiguous layout;
    ``make`` must not hold ``a``. Returns ``a``."""
    if a.base is not None or not a.flags.c_contiguous:
        raise ValueError("recomputable: register a C-contiguous array that owns its memory")
    key = id(a)

    def forget(_ref: weakref.ref) -> None:     # runs as ``a`` is freed, before its id is reused
        entry = _registry.get(key)
        if entry is not None and entry[0] is _ref:
            del _registry[key]

    _registry[key] = (weakref.ref(a, forget), make)
    return a


class Recipe:
    """A saved view of a registered array: :meth:`make` builds the array again and
    returns the same view of it."""

    __slots__ = ("_make", "_root", "shape", "strides", "offset", "dtype")

    def __init__(self, make, root: np.ndarray, view: np.ndarray):
        self._make, self._root = make, (root.shape, root.dtype)
        self.shape, self.strides, self.dtype = view.shape, view.strides, view.dtype
        self.offset = view.__array_interface__["data"][0] - root.__array_interface__["data"][0]

    def make(self) -> np.ndarray:
        root = self._make()
        if (root.shape, root.dtype) != self._root or not root.flags.c_contiguous:
            raise RuntimeError(f"saved.Recipe: make() returned {root.dtype} {root.shape}, "
                               f"expected a C-contiguous {self._root[1]} {self._root[0]}")
        return np.ndarray(self.shape, self.dtype, buffer=root, offset=self.offset, strides=self.strides)


def save(a: np.ndarray) -> "np.ndarray | Recipe":
    """What an op keeps for its backward pass in place of ``a``: a :class:`Recipe` when
    ``a`` is a registered array or a view of one, else ``a`` itself."""
    root = a
    while isinstance(root.base, np.ndarray):
        root = root.base
    entry = _registry.get(id(root))
    if entry is None or entry[0]() is not root:
        return a
    return Recipe(entry[1], root, a)


def load(kept: "np.ndarray | Recipe") -> np.ndarray:
    """The array :func:`save` kept: made again from its recipe, or as it was."""
    return kept.make() if isinstance(kept, Recipe) else kept
