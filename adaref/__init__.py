"""adaref: the NumPy reference implementation of AdaEnsemble.

The public core: :class:`Tensor` with reverse-mode autograd, :func:`no_grad`, the op
functions in :mod:`adaref.ops` (also re-exported here), and the gradient-check
oracle :func:`gradcheck` / :func:`check_vjp`.
"""
from adaref.tensor import (DTypeError, Function, RowSparseGrad, ShapeError, Tensor,
                           is_grad_enabled, no_grad)
from adaref.ops import (abs, add, astype, broadcast_to, clip, concatenate, div, embedding,
                        exp, gather, gelu, getitem, layer_norm, log, log_softmax, matmul, max,
                        mean, mul, neg, pow, relu, reshape, scatter_add, sigmoid, softmax, sqrt,
                        stack, sub, sum, take, tanh, topk_mask, transpose, where)

__version__ = "0.1.0"
from adaref.gradcheck import GradcheckError, check_vjp, gradcheck, gradcheck_module  # noqa: E402
