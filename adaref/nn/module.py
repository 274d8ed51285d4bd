"""``Parameter`` and ``Module``: named, savable collections of trainable tensors.

A Module's parameters are found by walking its attributes in definition order:
Parameters are leaves, Modules (including :class:`ModuleList` and :class:`ModuleDict`)
are recursed into. Names are dotted paths such as ``layers.0.experts.cross.W``.

>>> import numpy as np
>>> from adaref.nn import Linear, Module, ModuleList
>>> class Tiny(Module):
...     def __init__(self, rng):
...         super().__init__()
...         self.layers = ModuleList([Linear(3, 2, rng=rng), Linear(2, 1, rng=rng)])
>>> [name for name, _ in Tiny(np.random.default_rng(0)).named_parameters()]
['layers.0.weight', 'layers.0.bias', 'layers.1.weight', 'layers.1.bias']
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from adaref.io import load_npz, save_npz
from adaref.tensor import Tensor


class StateDictError(ValueError):
    """A state dict that does not fit the module; the message names the tensor."""


def check_state_array(owner: str, name: str, value, like: np.ndarray | Tensor, expects: str) -> None:
    """Refuse a saved array whose shape or dtype differs from ``like``'s, or that holds a
    NaN or an infinity, naming it.

    Shared by :meth:`Module.load_state_dict` and the optimisers' ``load_state_dict``.
    """
    value = np.asarray(value)
    if value.shape != like.shape:
        raise StateDictError(f"{owner}: {name} has shape {value.shape}, {expects} {like.shape}")
    if value.dtype != like.dtype:
        raise StateDictError(f"{owner}: {name} has dtype {value.dtype}, {expects} {like.dtype}")
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        bad = ~np.isfinite(value)
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise StateDictError(f"{owner}: {name} holds {int(bad.sum())} NaN or infinite value(s), "
                             f"the first at index {first}: {value[first]}")


def check_state_keys(owner: str, expected: Iterable[str], state: Mapping, noun: str) -> None:
    """Refuse a state dict with a missing or an unexpected entry, naming every one
    (``noun``: "tensor(s)" or "key(s)"). Shared like :func:`check_state_array`."""
    expected = list(expected)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in set(expected)]
    if missing:
        raise StateDictError(f"{owner}: missing {noun} {', '.join(missing)}")
    if unexpected:
        raise StateDictError(f"{owner}: unexpected {noun} {', '.join(map(str, unexpected))}")


class Parameter(Tensor):
    """A Tensor that a Module owns and an optimiser updates (``requires_grad`` always)."""

    __slots__ = ()

    def __init__(self, data: Any, dtype: Any = None):
        super().__init__(data, requires_grad=True, dtype=dtype)


class Module:
    """Base class of every layer and model.

    Subclasses assign Parameters and sub-Modules as attributes in ``__init__`` and
    define ``forward``; calling the module calls ``forward``. ``training`` (default
    True) switches train-only behaviour such as gate jitter; see :meth:`eval`.
    """

    training: bool = True

    #: The paper's equation this module computes ("eq. 7"), for :func:`adaref.crosscheck.spec`;
    #: a parameter's equation is that of the nearest module up its path that sets one.
    EQUATION: str = ""
    #: Local parameter name -> its layout (axis order, flatten order); every parameter of
    #: a module must be listed (the spec test checks it).
    PARAM_LAYOUTS: dict[str, str] = {}

    def __init__(self) -> None:
        self.training = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.forward")

    # --- structure --------------------------------------------------------------
    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """(dotted name, Parameter) pairs, depth first in attribute order, each once."""
        seen: set[int] = set()
        for name, p in self._walk(prefix):
            if id(p) not in seen:
                seen.add(id(p))
                yield name, p

    def _walk(self, prefix: str) -> Iterator[tuple[str, Parameter]]:
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
            elif isinstance(value, Module):
                yield from value._walk(f"{prefix}{name}.")

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True) -> "Module":
        """Set training mode here and in every sub-module; returns self."""
        self.training = mode
        for _, child in self.named_children():
            child.train(mode)
        return self

    def eval(self) -> "Module":
        """Evaluation mode (no jitter or other training-only noise); returns self."""
        return self.train(False)

    def num_parameters(self) -> int:
        return int(sum(p.size for p in self.parameters()))

    # --- state ------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter's array, by dotted name."""
        return {name: p.data.copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays into the parameters (in place, so optimisers keep their references).

        Every parameter must be present with its exact shape and dtype, and no other
        key may be present; otherwise :class:`StateDictError` names the tensor.
        """
        params = dict(self.named_parameters())
        check_state_keys("load_state_dict", params, state, "tensor(s)")
        for name, p in params.items():
            check_state_array("load_state_dict", f"tensor {name}", state[name], p, "the module expects")
        for name, p in params.items():
            np.copyto(p.data, state[name])

    def save(self, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> None:
        """Write the weights (and ``meta``, e.g. the config) to ``path`` as ``.npz``, atomically."""
        save_npz(path, self.state_dict(), meta)

    def load(self, path: str | os.PathLike) -> dict[str, Any]:
        """Load weights written by :meth:`save` into this module; returns the saved meta.
        An array that is not one of this module's, or larger, is refused before it is read."""
        arrays, meta = load_npz(path, limits={k: p.data.nbytes for k, p in self.named_parameters()})
        try:
            self.load_state_dict(arrays)
        except StateDictError as e:
            raise StateDictError(f"{path}: {e}") from None
        return meta


class ModuleList(Module):
    """Sub-modules named ``0``, ``1``, ... (e.g. ``layers.2.gate``)."""

    def __init__(self, modules: Iterable[Module] = ()):
        super().__init__()
        for i, m in enumerate(modules):
            setattr(self, str(i), m)

    def __getitem__(self, i: int) -> Module:
        return getattr(self, str(range(len(self))[i]))

    def __len__(self) -> int:
        return sum(1 for _ in self.named_children())

    def __iter__(self) -> Iterator[Module]:
        return (m for _, m in self.named_children())

    def append(self, module: Module) -> None:
        setattr(self, str(len(self)), module)


class ModuleDict(Module):
    """Sub-modules by name, in insertion order (e.g. ``experts.cross``)."""

    def __init__(self, modules: dict[str, Module] | None = None):
        super().__init__()
        for name, m in (modules or {}).items():
            if not name.isidentifier():
                raise ValueError(f"ModuleDict: name {name!r} must be a Python identifier")
            setattr(self, name, m)

    def __getitem__(self, name: str) -> Module:
        child = dict(self.named_children()).get(name)
        if child is None:
            raise KeyError(f"ModuleDict: no module {name!r} (have: {', '.join(self.keys())})")
        return child

    def keys(self) -> list[str]:
        return [n for n, _ in self.named_children()]

    def items(self) -> list[tuple[str, Module]]:
        return list(self.named_children())

    def __len__(self) -> int:
        return len(self.keys())

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())
