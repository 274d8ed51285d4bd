"""adaref: the NumPy reference implementation of AdaEnsemble.

The public core: :class:`Tensor` with reverse-mode autograd, :func:`no_grad`, the op
functions in :mod:`adaref.ops` (also re-exported here), and the gradient-check
oracle :func:`gradcheck` / :func:`check_vjp`; :func:`load_run` loads a trained run
to score new data (:mod:`adaref.serving`).
"""
import os as _os
import sys as _sys

# Idle OpenBLAS threads spin for about 2^28 cycles (~0.1 s) after each matmul before
# they sleep. Here that steals a core from the Numba kernels (attention, layer norm,
# dispatch) that run between two matmuls: the parallel attention kernel ran at half
# speed. 2^4 cycles lets them sleep at once (+19% inference, +8% training throughput
# in `python -m adaref.bench model`). A default only: a value the user set wins, and
# nothing changes when NumPy (and so OpenBLAS) was imported before adaref.
_DEFAULTS_SET = []   # the variables below that adaref set (not the user): a child process
                     # that must run with the libraries' own defaults drops them


def _set_default(name: str, value: str) -> None:
    if name not in _os.environ:
        _os.environ[name] = value
        _DEFAULTS_SET.append(name)


if "numpy" not in _sys.modules:
    _set_default("OPENBLAS_THREAD_TIMEOUT", "4")
# The same for the OpenMP threads of Numba's parallel kernels (attention, layer norm,
# row gather/scatter): by default libgomp spins them for 300,000 rounds after each
# kernel, stealing a core from the next matmul. PASSIVE lets them sleep at once (the
# paper configuration at k = 5 without the controller: about 10,500 inference examples/s
# against 6,900-7,500 with libgomp's default). A default only, and only before Numba
# (and so libgomp) is loaded.
if "numba" not in _sys.modules:
    _set_default("OMP_WAIT_POLICY", "PASSIVE")

from adaref.tensor import (DTypeError, Function, RowSparseGrad, ShapeError, Tensor,
                           is_grad_enabled, no_grad)
from adaref.ops import (abs, add, astype, broadcast_to, clip, concatenate, div, embedding,
                        exp, gather, gelu, getitem, layer_norm, log, log_softmax, matmul, max,
                        mean, mul, neg, pow, relu, reshape, scatter_add, sigmoid, softmax, sqrt,
                        stack, sub, sum, take, tanh, topk_mask, transpose, where)

__version__ = "0.1.0"
from adaref.gradcheck import GradcheckError, check_vjp, gradcheck, gradcheck_module  # noqa: E402


def __getattr__(name: str):
    """``adaref.load_run`` (:mod:`adaref.serving`) and ``adaref.metrics``, imported on first
    use: they bring in the model, data and training packages and SciPy's statistics, which
    ``import adaref`` alone does not need."""
    if name in ("load_run", "Run"):
        from adaref import serving
        return getattr(serving, name)
    if name == "metrics":
        import importlib
        return importlib.import_module("adaref.metrics")
    raise AttributeError(f"module 'adaref' has no attribute {name!r}")
