"""The adapter protocol: how another implementation of AdaEnsemble is plugged into the
property suite (``python -m adaref.crosscheck test MODULE:FACTORY``).

A *factory* builds a port from what adaref gives it::

    port = factory(config, vocab_sizes, weights, dtype)

* ``config``: an :class:`adaref.model.ModelConfig` (``config.to_dict()`` is its JSON);
* ``vocab_sizes``: the F per-field vocabulary sizes (ids of field f are in
  ``[0, vocab_sizes[f])``, id 0 the OOV row);
* ``weights``: ``{adaref parameter name: array}`` in **adaref's layout** (``python -m
  adaref.crosscheck spec`` lists names, shapes and layouts; a port converts them to its
  own, e.g. with :func:`adaref.crosscheck.mapping.torch_mapping`);
* ``dtype``: ``numpy.float64`` or ``numpy.float32``.

The port answers:

* ``port.forward(ids, labels, *, k, form, lambdas) -> {name: array}``: one forward pass
  in evaluation semantics (no jitter) on ids (B, F) int64 and labels (B,) in {0, 1},
  with k experts per example and the depth ``form`` (``soft``, ``expected``,
  ``straight_through``, ``hard`` or, without the controller, ``full``), returning the named intermediates of
  :data:`adaref.model.trace.NAMES` that adaref records for the same case (every one: a
  name left out, or one adaref does not record, is a failure of the suite; to check a
  partial dump, use ``compare --only``). ``lambdas`` = (lambda_1, lambda_2, z) of eq. 18
  for the ``loss.*`` names.
* optionally ``port.gradients(ids, labels, *, k, form, lambdas) -> {name: array}``: the
  gradient of eq. 18's total, as ``grad.<adaref parameter name>`` in adaref's layout and
  ``grad.embedding`` (with respect to X_0).

:class:`adaref.crosscheck.reference.AdarefPort` is adaref itself in this protocol, and
:mod:`adaref.crosscheck.torch_port` an independent PyTorch implementation (the example
adapter; ``pip install adaref[torch]``).
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class Port(Protocol):
    def forward(self, ids: np.ndarray, labels: np.ndarray, *, k: int, form: str,
                lambdas: tuple[float, float, float]) -> dict[str, np.ndarray]: ...


Factory = Callable[[Any, Sequence[int], dict, Any], Port]


def load_factory(spec: str) -> Factory:
    """``"package.module:function"`` -> the callable; a clear ValueError otherwise."""
    import importlib

    if spec.count(":") != 1:
        raise ValueError(f"factory {spec!r}: expected MODULE:FACTORY, e.g. "
                         "adaref.crosscheck.torch_port:build")
    module_name, attr = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:      # ImportError, and whatever the module raises while importing
        raise ValueError(f"factory {spec!r}: cannot import {module_name}: {type(e).__name__}: {e}") from None
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise ValueError(f"factory {spec!r}: {module_name} has no callable {attr!r}")
    return factory
