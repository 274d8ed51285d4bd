"""Numba kernels for the hot loops, each with a pure-NumPy twin.

One switch selects the implementation everywhere:

* the environment variable ``ADAREF_NUMBA=0`` (read at import) selects the NumPy
  twins; any other value, or none, selects Numba;
* :func:`use_backend` switches for a block of code (tests run both paths).

A kernel is a :class:`Kernel` pairing a NumPy function with a plain-Python loop
function that Numba compiles (``numba.njit(cache=True)``) on first use. The loop
function is ordinary Python, so it also runs (slowly) under ``NUMBA_DISABLE_JIT=1``.
Kernels write into an output array passed in (no output allocated inside the loop; at
most a small scratch, such as layer norm's per-block sums), and both
twins must agree: exactly in float64 when they add in the same order, otherwise
within a bound stated in the kernel's docstring (``tests/test_kernels.py``).

Numba's on-disk cache is keyed on the file that defines each loop, not on the helpers
it calls from other files: after editing a shared helper (``expm.py``, used by the
attention and softmax kernels) delete ``adaref/kernels/__pycache__/*.nbi`` and
``*.nbc``, or the callers keep their old machine code. (A fresh install compiles
everything; so does CI.)

>>> import numpy as np
>>> from adaref import kernels
>>> out = np.zeros((2, 1))
>>> with kernels.use_backend("numpy"):
...     kernels.scatter_add_rows(out, np.array([1, 0, 1]), np.array([[1.0], [2.0], [3.0]]))
>>> out.ravel().tolist()
[2.0, 4.0]
"""
from __future__ import annotations

import os
import types
from contextlib import contextmanager
from typing import Callable, Iterator

BACKENDS = ("numba", "numpy")
_backend = "numpy" if os.environ.get("ADAREF_NUMBA", "1").strip() == "0" else "numba"


def backend() -> str:
    """The active implementation: ``"numba"`` or ``"numpy"``."""
    return _backend


@contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run a block with the given backend, restoring the previous one afterwards."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"use_backend: unknown backend {name!r}; choose one of {BACKENDS}")
    previous, _backend = _backend, name
    try:
        yield
    finally:
        _backend = previous


class Kernel:
    """A NumPy twin and a Numba-compiled loop with one signature and one meaning."""

    def __init__(self, name: str, numpy_impl: Callable, loop_impl: Callable, parallel: bool = False,
                 reassoc: bool = False, serial_below: int = 0):
        self.name, self.numpy_impl, self.loop_impl = name, numpy_impl, loop_impl
        self.parallel = parallel   # loop_impl uses numba.prange over independent chunks
        # A parallel kernel whose first argument (the array it writes) has fewer elements
        # than this runs a serial compilation of the same loop: waking the threads costs
        # 60-90 us a call (they sleep at once, OMP_WAIT_POLICY=PASSIVE), more than the
        # work of a small array. Same blocks in the same order, so the same bits.
        self.serial_below = serial_below if parallel else 0
        # reassoc: LLVM may reorder the loop's sums (vectorised reductions). Only this
        # fast-math flag, never the ones that assume no NaN/Inf: a NaN still propagates.
        # Results stay deterministic on one machine; the twins' stated bound covers it.
        self.fastmath = {"reassoc"} if reassoc else False
        self._compiled: Callable | None = None
        self._serial: Callable | None = None
        self.__doc__ = numpy_impl.__doc__

    def numba_impl(self, *args):
        if self.serial_below and args[0].size < self.serial_below:
            if self._serial is None:
                self._serial = self._jit(_renamed(self.loop_impl, "_serial"), parallel=False)
            return self._serial(*args)
        if self._compiled is None:
            self._compiled = self._jit(self.loop_impl, parallel=self.parallel)
        return self._compiled(*args)

    def _jit(self, fn: Callable, parallel: bool) -> Callable:
        import numba

        return numba.njit(cache=True, nogil=True, parallel=parallel, fastmath=self.fastmath)(fn)

    def __call__(self, *args):
        impl = self.numba_impl if _backend == "numba" else self.numpy_impl
        return impl(*args)

    def __repr__(self) -> str:
        return f"Kernel({self.name!r}, backend={_backend!r})"


def _renamed(fn: Callable, suffix: str) -> Callable:
    """The same function under another qualified name: Numba's on-disk cache files are
    named after it, so a serial and a parallel compilation of one loop do not overwrite
    each other's entries."""
    twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + suffix,
                              fn.__defaults__, fn.__closure__)
    twin.__qualname__, twin.__module__ = fn.__qualname__ + suffix, fn.__module__
    return twin


from adaref.kernels.scatter import scatter_add_rows, scatter_add_unique_rows  # noqa: E402,F401
from adaref.kernels.dispatch import (gather_rows, gather_rows_scaled, gather_scaled_dot,  # noqa: E402,F401
                                     scatter_add_scaled)
from adaref.kernels.norm import layer_norm_backward, layer_norm_forward  # noqa: E402,F401
from adaref.kernels.rows import softmax_rows, topk_rows  # noqa: E402,F401
from adaref.kernels.combine_norm import combine_norm  # noqa: E402,F401
