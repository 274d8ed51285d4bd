"""The sparse dispatcher (§3.3.3, eq. 12).

    y = sum_{j in phi(x)} w_j(x) E_j(x)                                  (12)

Examples are gathered per expert (:func:`dispatch`), each expert runs **only** on the
examples routed to it, and the outputs are scattered back and summed with per-example
weights (:func:`combine`). An expert that receives no example is not run. The work
done is proportional to the number of (example, expert) pairs, B*k, not B*N.

The weights w (B, N) are zero off each example's selected set; which values they take
on it (eq. 10's gates, Switch-style full-softmax probabilities, or 1) is the gate's
``combine`` option (docs/decisions.md row 13, :mod:`adaref.model.gate`).

Both steps are :class:`~adaref.tensor.Function` s whose forward and backward passes are
the row kernels of :mod:`adaref.kernels.dispatch` (Numba, with NumPy twins).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from adaref import kernels, saved
from adaref.tensor import Function, RowSparseGrad, ShapeError, Tensor, is_grad_enabled, no_grad


def _rows2d(a: np.ndarray) -> np.ndarray:
    """(B, F, D) -> contiguous (B, F*D)."""
    return np.ascontiguousarray(a.reshape(a.shape[0], -1))


def _gather(source: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """source[rows] for a C-contiguous (B, F*D) source: (n, F*D), by the row kernel."""
    out = np.empty((len(rows), source.shape[1]), dtype=source.dtype)
    kernels.gather_rows(out, source, rows)
    return out


class DispatchRows(Function):
    """y = x[rows]: x (B, F, D), rows (n,) unique int64 -> y (n, F, D).

    When ``rows`` are all of x's rows in order (an expert every example chose, k = N) the
    output is x's array itself, not a copy; the node stays in the graph, so gradients add
    up in the same order either way.

    The copy is registered as recomputable (:mod:`adaref.saved`): the expert's ops
    that keep it for their backward pass keep how to gather it again from x instead,
    so the graph holds x once rather than the k copies of its rows (at k = 4 of 5,
    four times x per layer, and as much again of X_0 for the experts that read it).

    VJP: gx = zeros (B, F, D) with gx[rows] = g. For an intermediate x (the model's
    feature maps) it is returned as a :class:`~adaref.tensor.RowSparseGrad` holding
    only g, and the engine adds those rows into x's gradient: a layer's N dispatches do
    not each build and add a (B, F, D) array. A leaf x gets the dense array.
    """

    name = "dispatch"

    def forward(self, x, rows=None):
        self.shape, self.rows = x.shape, rows
        if len(rows) == x.shape[0] and np.array_equal(rows, np.arange(len(rows))):
            return x      # every row in order: x itself, no copy
        source = _rows2d(x)                                                      # (B, F*D)
        out = _gather(source, rows)                                              # (n, F*D)
        if is_grad_enabled():     # an op that saves the copy keeps how to gather it again
            saved.recomputable(out, lambda: _gather(source, rows))
        return out.reshape((len(rows),) + x.shape[1:])

    def backward(self, g):
        if self.parents[0]._ctx is not None:                                     # intermediate x
            return (RowSparseGrad(self.rows, g, self.shape),)
        gx = np.zeros((self.shape[0], g[0].size), dtype=g.dtype)                 # (B, F*D)
        kernels.scatter_add_unique_rows(gx, self.rows, _rows2d(g))
        return (gx.reshape(self.shape),)


class Combine(Function):
    """y[b] = base[b] + sum_j [b in rows_j] w[b, j] * y_j[position of b in rows_j].

    Inputs: w (B, N), optionally ``base`` (B, F, D) (``has_base=True``; without it the
    sum starts from zeros), and the outputs y_j (n_j, F, D) of the experts that ran,
    listed in ``experts`` (their indices j) with their ``rows`` (n_j,). Output (B, F, D).
    Starting from the residual stream X_{l-1} instead of zeros saves the layer one
    (B, F, D) temporary and one pass over it.
    VJP: g_base = g; g_{y_j} = w[rows_j, j] * g[rows_j]; g_w[rows_j, j] = <g[rows_j], y_j>
    over F*D.
    """

    name = "combine"

    def forward(self, w, *arrays, rows=(), experts=(), shape=(), has_base=False):
        base, ys = (arrays[0], arrays[1:]) if has_base else (None, arrays)
        self.w, self.ys, self.rows, self.experts, self.has_base = w, ys, rows, experts, has_base
        if base is not None:
            out = _rows2d(base).copy()                                           # (B, F*D)
        else:
            out = np.zeros((shape[0], int(np.prod(shape[1:]))), dtype=w.dtype)  # (B, F*D)
        for y, r, j in zip(ys, rows, experts):
            kernels.scatter_add_scaled(out, r, np.ascontiguousarray(w[r, j]), _rows2d(y))
        return out.reshape(shape)

    def backward(self, g):
        g2 = _rows2d(g)                                                          # (B, F*D)
        gw = np.zeros_like(self.w) if self.needs_grad[0] else None               # (B, N)
        gys = []
        for y, r, j in zip(self.ys, self.rows, self.experts):
            scale = np.ascontiguousarray(self.w[r, j])                           # (n_j,)
            gy = np.empty((len(r), g2.shape[1]), dtype=g.dtype)                  # (n_j, F*D)
            if gw is None:
                kernels.gather_rows_scaled(gy, g2, r, scale)
            else:                                      # one pass over g's rows for both
                dots = np.empty(len(r), dtype=g.dtype)                           # (n_j,)
                kernels.gather_scaled_dot(gy, dots, g2, r, scale, _rows2d(y))
                gw[r, j] = dots
            gys.append(gy.reshape(y.shape))
        return (gw, g, *gys) if self.has_base else (gw, *gys)


def dispatch(x: Tensor, rows: np.ndarray) -> Tensor:
    """The examples ``rows`` of x (B, F, D): (n, F, D). Under :func:`adaref.no_grad`,
    all of them in order (an expert every example chose, as in DenseMoE) is x itself,
    not a copy. (With a graph a node stays, so that x's gradients add up in the same
    order, but its output shares x's array: :class:`DispatchRows`.)"""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) > 1 and not (np.diff(rows) > 0).all() and len(np.unique(rows)) != len(rows):
        raise ValueError(f"dispatch: rows must be unique (each example goes to an expert once), "
                         f"got {len(rows) - len(np.unique(rows))} repeated")
    if (not is_grad_enabled() and len(rows) == x.shape[0]
            and np.array_equal(rows, np.arange(len(rows)))):
        return x
    return DispatchRows.apply(x, rows=rows)


def combine(weights: Tensor, outputs: Sequence[Tensor], rows: Sequence[np.ndarray],
            experts: Sequence[int], shape: tuple[int, ...], base: Tensor | None = None) -> Tensor:
    """Scatter the experts' outputs back to their examples, weighted, onto ``base``
    (zeros if None; see :class:`Combine`)."""
    if base is not None and base.shape != tuple(shape):
        raise ShapeError(f"combine: base has shape {base.shape}, the output is {tuple(shape)}")
    _check_rows("combine", rows, experts, shape[0])
    inputs = (weights,) + ((base,) if base is not None else ()) + tuple(outputs)
    return Combine.apply(*inputs, rows=tuple(rows), experts=tuple(experts), shape=tuple(shape),
                         has_base=base is not None)


def combine_norm(weights: Tensor, outputs: Sequence[Tensor], rows: Sequence[np.ndarray],
                 experts: Sequence[int], base: Tensor, norm) -> Tensor:
    """``norm(combine(weights, outputs, rows, experts, base.shape, base))`` in one fused
    pass (:data:`adaref.kernels.combine_norm`), for inference: it records no graph, so
    it refuses to run while gradients are enabled. ``norm`` is a
    :class:`~adaref.nn.LayerNorm` over the last axis D of base (B, F, D)."""
    if is_grad_enabled():
        raise RuntimeError("combine_norm records no graph: call it inside adaref.no_grad()")
    b, n = weights.shape
    _check_rows("combine_norm", rows, experts, b)
    pos = np.full((b, n), -1, dtype=np.int64)                                    # (B, N)
    ys = [np.empty((0, base.data[0].size), dtype=base.dtype)] * n               # (n_j, F*D)
    for y, r, j in zip(outputs, rows, experts):
        pos[r, j] = np.arange(len(r))
        ys[j] = _rows2d(y.data)
    out = np.empty((b, base.data[0].size), dtype=base.dtype)                    # (B, F*D)
    kernels.combine_norm(out, _rows2d(base.data), np.ascontiguousarray(weights.data), pos,
                         tuple(ys), norm.gain.data, norm.bias.data, norm.eps)
    return Tensor(out.reshape(base.shape))


def _check_rows(op: str, rows: Sequence[np.ndarray], experts: Sequence[int], b: int) -> None:
    """Each expert's rows must be increasing (so unique) indices in [0, b): the parallel
    scatter loops write each output row from one iteration."""
    for j, r in zip(experts, rows):
        if r.size and (r[0] < 0 or r[-1] >= b or np.any(np.diff(r) <= 0)):
            raise ValueError(f"{op}: the rows of expert {j} must be increasing (unique) "
                             f"indices in [0, {b})")


def sparse_moe(x: Tensor, x0: Tensor, mask: np.ndarray, weights: Tensor,
               experts: Sequence, base: Tensor | None = None,
               norm=None, trace=None) -> tuple[Tensor, list[np.ndarray]]:
    """Eq. 12: run each expert on its routed examples only and combine.

    Args:
        x: X_{l-1} (B, F, D); x0: X_0 (B, F, D).
        mask: (B, N) bool, True where expert j is selected for example b.
        weights: (B, N) combine weights, zero where ``mask`` is False.
        experts: N expert modules, ``expert(x_j, x0_j) -> (n_j, F, D)``; an expert whose
            ``uses_x0`` is False gets ``x0_j = None`` (its X_0 rows are not copied).
        base: added to the result in the same pass (the layer's residual X_{l-1}), or None.
        norm: a LayerNorm applied to the result (row 15), or None. Under
            :func:`adaref.no_grad` with a ``base``, combine and norm run as one fused
            pass (:func:`combine_norm`); otherwise as the two autograd ops.

    Returns the combined output (B, F, D) (plus ``base``, normalised by ``norm``) and
    the row indices routed to each expert.

    >>> import numpy as np
    >>> from adaref import Tensor
    >>> double = lambda x, x0: x * 2.0
    >>> x = Tensor(np.ones((3, 2, 2)))
    >>> mask = np.array([[True, False], [False, True], [True, True]])
    >>> y, rows = sparse_moe(x, x, mask, Tensor(mask * 0.5), [double, lambda x, x0: x])
    >>> y.data[:, 0, 0].tolist(), [r.tolist() for r in rows]
    ([1.0, 0.5, 1.5], [[0, 2], [1, 2]])
    """
    if mask.shape != (x.shape[0], len(experts)) or weights.shape != mask.shape:
        raise ShapeError(f"sparse_moe: mask {mask.shape} and weights {weights.shape} must be "
                         f"(B, N) = ({x.shape[0]}, {len(experts)})")
    rows = [np.flatnonzero(mask[:, j]) for j in range(len(experts))]
    outputs, ran, ran_rows = [], [], []
    for j, (expert, r) in enumerate(zip(experts, rows)):
        if r.size == 0:                               # no example routed here: not run
            if trace is not None:
                name = getattr(expert, "name", str(j))
                trace(f"experts.{name}.rows", r.astype(np.int64))
                trace(f"experts.{name}.output", np.zeros((0,) + x.shape[1:], dtype=x.dtype))
            continue
        x0_r = dispatch(x0, r) if getattr(expert, "uses_x0", True) else None  # only if it reads X_0
        y = expert(dispatch(x, r), x0_r)              # (n_j, F, D)
        if y.shape != (len(r),) + x.shape[1:]:
            raise ShapeError(f"sparse_moe: expert {j} returned shape {y.shape}, expected "
                             f"{(len(r),) + x.shape[1:]}")
        outputs.append(y)
        ran.append(j)
        ran_rows.append(r)
        if trace is not None:
            name = getattr(expert, "name", str(j))
            trace(f"experts.{name}.rows", r.astype(np.int64))
            trace(f"experts.{name}.output", y)
    if trace is not None:
        with no_grad():
            trace("combined", combine(weights, outputs, ran_rows, ran, x.shape))
    if norm is not None and base is not None and not is_grad_enabled():
        return combine_norm(weights, outputs, ran_rows, ran, base, norm), rows     # inference
    y = combine(weights, outputs, ran_rows, ran, x.shape, base)
    return (norm(y) if norm is not None else y), rows
