"""``python -m adaref.experiments``: see :mod:`adaref.experiments.cli`."""
import sys

import adaref  # noqa: F401  (before NumPy: the thread settings of adaref/__init__.py)

from adaref.experiments.cli import main

if __name__ == "__main__":
    from adaref.runtime import blas_threads, keep_freed_memory

    keep_freed_memory()
    blas_threads(1)          # many small matmuls: one BLAS thread (adaref.runtime.blas_threads)
    sys.exit(main())
