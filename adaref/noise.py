"""Uniform noise, the same numbers as NumPy draws them, drawn faster.

``uniform(rng, low, high, shape, dtype)`` returns, bit for bit, what
``rng.uniform(low, high, size=shape).astype(dtype)`` returns, and leaves ``rng`` in the
same state. NumPy computes each value as ``low + (high - low) * u`` in float64, from one
double ``u = rng.random()`` per value, in C order. Two things make the copy faster:

* the doubles are drawn a cache-sized chunk at a time into a reused buffer and cast
  straight into the output, so no float64 array of the whole shape is made;
* with NumPy's default bit generator (PCG64, also PCG64DXSM), which can jump ahead by
  any number of draws (``advance``), the output is cut into parts drawn on threads of
  their own, each from a copy of the generator advanced to its part's first value (NumPy
  draws without holding the GIL). Each value still comes from the same position of the
  same stream, so the result does not depend on the number of threads or their timing.
  Other bit generators draw on one thread.

Used for eq. 7's jitter (:func:`adaref.model.gate.draw_jitter`): a (4096, 624) draw, one
per gate and training step, took 6.3 ms as NumPy's one call (a float64 array, then a
cast), 3.7-4 ms here on two cores.

>>> import numpy as np
>>> a = uniform(np.random.default_rng(0), 0.99, 1.01, (3, 500_000), np.float32)
>>> rng = np.random.default_rng(0)
>>> b = rng.uniform(0.99, 1.01, size=(3, 500_000)).astype(np.float32)
>>> a.dtype, bool((a == b).all())
(dtype('float32'), True)
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

CHUNK = 1 << 16            # doubles per draw into the buffer (512 KiB: stays in cache)
PARALLEL_MIN = 1 << 19     # values per thread below which one thread draws everything
_JUMPABLE = (np.random.PCG64, np.random.PCG64DXSM)
_pool: ThreadPoolExecutor | None = None
_threads = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                       else os.cpu_count() or 1))             # the cores this process may use


def uniform(rng: np.random.Generator, low: float, high: float, shape: tuple[int, ...],
            dtype) -> np.ndarray:
    """``rng.uniform(low, high, size=shape).astype(dtype)``, the same bits and the same
    state of ``rng`` afterwards (see the module docstring)."""
    out = np.empty(shape, dtype=dtype)
    flat = out.reshape(-1)                                               # a view: out is new
    n, span = flat.size, float(high) - float(low)
    bitgen = rng.bit_generator
    parts = min(_threads, n // PARALLEL_MIN)
    if parts < 2 or type(bitgen) not in _JUMPABLE:
        _fill(rng, flat, float(low), span)
        return out
    state = bitgen.state
    bounds = [n * i // parts for i in range(parts + 1)]
    jobs = [_executor().submit(_fill_from, type(bitgen), state, start, flat[start:stop],
                               float(low), span)
            for start, stop in zip(bounds[:-1], bounds[1:])]
    for job in jobs:
        job.result()
    bitgen.advance(n)                # where drawing n doubles leaves the stream ...
    after = bitgen.state             # ... but advance() also drops a buffered 32-bit half,
    after["has_uint32"], after["uinteger"] = state["has_uint32"], state["uinteger"]
    bitgen.state = after             # which drawing doubles keeps
    return out


def _fill(rng: np.random.Generator, flat: np.ndarray, low: float, span: float) -> None:
    """flat[i] = low + span * u_i for the next flat.size doubles u_i of rng, in order."""
    buf = np.empty(max(1, min(flat.size, CHUNK)))                        # (chunk,) float64
    for start in range(0, flat.size, buf.size):
        u = buf[:min(buf.size, flat.size - start)]
        rng.random(out=u)
        u *= span
        u += low
        flat[start:start + u.size] = u                                   # cast to flat's dtype


def _fill_from(kind, state: dict, start: int, flat: np.ndarray, low: float, span: float) -> None:
    """:func:`_fill` from a copy of a generator in ``state``, ``start`` doubles later."""
    bitgen = kind(0)
    bitgen.state = state
    bitgen.advance(start)
    _fill(np.random.Generator(bitgen), flat, low, span)


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=_threads, thread_name_prefix="adaref-noise")
    return _pool


def _forget_pool() -> None:
    """In a forked child the pool's threads do not exist: start a new pool there."""
    global _pool
    _pool = None


os.register_at_fork(after_in_child=_forget_pool)
