"""Process-wide settings that adaref's own programs apply (``python -m adaref.train``,
``python -m adaref.bench``); ``import adaref`` never does: a library must not change
its host process's allocator.

:func:`keep_freed_memory`: glibc's malloc hands large freed blocks back to the kernel
(``munmap``, heap trimming), so every fresh (B, F, D) temporary of a forward pass
(10 MB in float32 at B = 4096) comes back as new pages that the kernel faults in and
zeroes. Raising the mmap and trim thresholds makes freed blocks get reused instead;
the process keeps its peak memory (up to ``trim_threshold`` of it free) rather than
returning it. Measured on the 2-core machine, one inference batch of the paper
configuration with the controller (B = 4096, L = 4, float32): 76-88 ms without,
61-64 ms with at k = 1; 227-239 against 209-213 ms at k = 5.

Both thresholds must be set together: setting either one turns off glibc's dynamic
mmap threshold, and the trim threshold alone leaves the mmap threshold at 128 KB, which
is slower than the default (109 ms at k = 1 above).
"""
from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3    # glibc's mallopt parameters (malloc.h)
ENV = "ADAREF_KEEP_FREED_MEMORY"               # "0": leave the allocator alone

_applied: bool | None = None


def keep_freed_memory(mmap_threshold: int = 256 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Ask glibc's malloc to serve blocks below ``mmap_threshold`` bytes from its heap and
    to keep up to ``trim_threshold`` bytes of freed heap for reuse. Returns whether the
    settings are in effect: False where the C library has no ``mallopt`` (not glibc) or
    refuses them, and when the environment variable ``ADAREF_KEEP_FREED_MEMORY`` is "0".
    Applied once per process; later calls return the first result.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get(ENV, "1").strip() == "0":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 and mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1
    return _applied


def release_freed_memory() -> bool:
    """Hand the freed memory that :func:`keep_freed_memory` keeps back to the kernel
    (glibc's ``malloc_trim(0)``), when that setting is in effect; returns whether it ran.

    The trainer calls it before each evaluation: the freed memory a training step
    leaves is kept for the next step, but evaluation allocates its own arrays of other
    sizes, which would otherwise find no room in it and raise the peak resident memory
    above the training steps' (measured, peak RSS of ``python -m adaref.train`` with 4
    steps on 200,000 rows: 0.95 GB, with the release 0.89 GB). The next training
    step faults its pages in again, once per evaluation.
    """
    if not _applied:
        return False
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True


def describe() -> str:
    """One line for a benchmark header: whether :func:`keep_freed_memory` is in effect.

    >>> describe().startswith("keep freed memory")
    True
    """
    state = {None: "not requested", True: "on", False: "off"}[_applied]
    return f"keep freed memory (adaref.runtime, {ENV}): {state}"


_BLAS_SETTERS = ("openblas_set_num_threads", "openblas_set_num_threads64_", "scipy_openblas_set_num_threads64_",
                 "scipy_openblas_set_num_threads")
_BLAS_GETTERS = ("openblas_get_num_threads", "openblas_get_num_threads64_", "scipy_openblas_get_num_threads64_",
                 "scipy_openblas_get_num_threads")


def _openblas_libraries() -> list[str]:
    """Paths of the OpenBLAS libraries loaded in this process (Linux: /proc/self/maps)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            paths = {line.split()[-1] for line in fh if "openblas" in line.lower() and "/" in line}
    except OSError:
        return []
    return sorted(p for p in paths if p.startswith("/"))


def _blas_call(names: tuple[str, ...], *args) -> list[int | None]:
    out = []
    for path in _openblas_libraries():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in names:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.argtypes = [ctypes.c_int] * len(args)
                fn.restype = None if args else ctypes.c_int
                out.append(fn(*args))
                break
    return out


def blas_threads(n: int | None = None) -> int | None:
    """Set the threads of the loaded OpenBLAS to ``n`` (if given); return its thread
    count, or None when no OpenBLAS is found. A user's ``OPENBLAS_NUM_THREADS`` wins:
    with it set, nothing is changed.

    ``python -m adaref.experiments`` uses one thread: its runs are many small matmuls
    (a (rows, 32) product of one AutoInt projection), where a second BLAS thread gains
    little on 2 cores and, when another process holds a core, makes every call wait for
    it: AutoInt (2 layers of 2 heads of 16, batch 256, F = 39) took 1.7-3 s a training
    step with 2 threads on a shared 2-core machine against 57 ms with one.
    """
    if n is not None and not os.environ.get("OPENBLAS_NUM_THREADS"):
        _blas_call(_BLAS_SETTERS, int(n))
    counts = [c for c in _blas_call(_BLAS_GETTERS) if c is not None]
    return counts[0] if counts else None
