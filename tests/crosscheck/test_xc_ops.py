"""Every op of adaref.ops against torch.autograd (float64): forward values and the VJP
for a random upstream gradient, same inputs on both sides."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import adaref
from adaref import ops
from adaref.tensor import RowSparseGrad, dense

RTOL, ATOL = 1e-10, 1e-12
MAX_SEEN: dict[str, float] = {}


def _close(name, a, t, rtol=RTOL, atol=ATOL):
    a, t = np.asarray(a, dtype=np.float64), np.asarray(t, dtype=np.float64)
    assert a.shape == t.shape, (name, a.shape, t.shape)
    np.testing.assert_allclose(a, t, rtol=rtol, atol=atol, err_msg=name)
    finite = np.isfinite(t)
    if finite.any():
        MAX_SEEN[name] = max(MAX_SEEN.get(name, 0.0), float(np.max(np.abs(a[finite] - t[finite]))))


def vs_torch(name, ada_fn, torch_fn, *inputs, rng, grad_mask=None, rtol=RTOL):
    """Run both on copies of ``inputs`` (float arrays differentiated, others constant),
    compare outputs, then backprop one random upstream gradient and compare gradients."""
    diff = [isinstance(x, np.ndarray) and x.dtype.kind == "f" for x in inputs]
    ta = [adaref.Tensor(x.copy(), requires_grad=True) if d else x for x, d in zip(inputs, diff)]
    tt = [torch.tensor(x.copy(), requires_grad=True) if d else x for x, d in zip(inputs, diff)]
    ya, yt = ada_fn(*ta), torch_fn(*tt)
    _close(f"{name} forward", ya.data, yt.detach().numpy(), rtol=rtol)
    u = rng.standard_normal(ya.shape)
    if grad_mask is not None:
        u = u * grad_mask
    ya.backward(u)
    yt.backward(torch.from_numpy(u.copy()).to(yt.dtype))
    for i, (a, t, d) in enumerate(zip(ta, tt, diff)):
        if d:
            _close(f"{name} grad[{i}]", dense(a.grad), t.grad.numpy(), rtol=rtol)
    return ta, tt


# --- elementwise binary with broadcasting -----------------------------------------
BROADCAST = [((3, 1, 4), (2, 4)), ((4,), (2, 3, 4)), ((2, 3, 4), ()), ((1, 3, 1), (2, 1, 5))]


@pytest.mark.parametrize("shapes", BROADCAST)
@pytest.mark.parametrize("name,fa,ft", [
    ("add", ops.add, torch.add), ("sub", ops.sub, torch.sub), ("mul", ops.mul, torch.mul),
    ("div", ops.div, torch.div), ("pow", ops.pow, torch.pow)])
def test_binary_broadcast(name, fa, ft, shapes, rng):
    a = rng.uniform(0.5, 2.0, shapes[0])      # positive base: pow's gradient for b is real
    b = rng.uniform(-2.0, 2.0, shapes[1])
    if name == "div":
        b = np.sign(b) * (np.abs(b) + 0.3)
    vs_torch(name, fa, ft, a, b, rng=rng)


def test_pow_negative_base_integer_exponent(rng):
    a = rng.uniform(-2, 2, (3, 4))
    vs_torch("pow int", lambda x: ops.pow(x, 3.0), lambda x: torch.pow(x, 3.0), a, rng=rng)


@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 2)), ((4,), (4, 3)),
                                   ((2, 3, 4), (4,)), ((4,), (4,))])
def test_matmul(sa, sb, rng):
    vs_torch("matmul", ops.matmul, torch.matmul, rng.standard_normal(sa),
             rng.standard_normal(sb), rng=rng)


# --- unary and activations --------------------------------------------------------
UNARY = [
    ("neg", ops.neg, torch.neg, (-3, 3)),
    ("exp", ops.exp, torch.exp, (-3, 3)),
    ("log", ops.log, torch.log, (0.1, 3)),
    ("sqrt", ops.sqrt, torch.sqrt, (0.1, 3)),
    ("abs", ops.abs, torch.abs, (-3, 3)),
    ("sigmoid", ops.sigmoid, torch.sigmoid, (-40, 40)),
    ("tanh", ops.tanh, torch.tanh, (-3, 3)),
    ("relu", ops.relu, torch.relu, (-3, 3)),
    ("gelu", ops.gelu, lambda x: F.gelu(x), (-5, 5)),
    ("gelu_tanh", lambda x: ops.gelu(x, approximate=True),
     lambda x: F.gelu(x, approximate="tanh"), (-5, 5)),
]


@pytest.mark.parametrize("name,fa,ft,rng_range", UNARY, ids=[u[0] for u in UNARY])
def test_unary(name, fa, ft, rng_range, rng):
    x = rng.uniform(*rng_range, (3, 5))
    if name in ("abs", "relu"):
        x[0, :2] = 0.0                         # the kink: both take subgradient 0
    vs_torch(name, fa, ft, x, rng=rng)


def test_sigmoid_extreme_values(rng):
    x = np.array([-800.0, -40.0, 0.0, 40.0, 800.0])
    vs_torch("sigmoid extreme", ops.sigmoid, torch.sigmoid, x, rng=rng)


@pytest.mark.parametrize("lo,hi", [(-0.5, 0.5), (None, 0.0), (-1.0, None)])
def test_clip_including_boundaries(lo, hi, rng):
    x = rng.uniform(-2, 2, (4, 5))
    x[0, 0], x[0, 1] = (lo if lo is not None else -3.0), (hi if hi is not None else 3.0)
    vs_torch("clip", lambda t: ops.clip(t, lo, hi), lambda t: torch.clamp(t, lo, hi), x, rng=rng)


def test_where_broadcast(rng):
    cond = rng.random((3, 1, 4)) > 0.5
    a, b = rng.standard_normal((2, 4)), rng.standard_normal((3, 2, 1))
    vs_torch("where", lambda x, y: ops.where(cond, x, y),
             lambda x, y: torch.where(torch.from_numpy(cond), x, y), a, b, rng=rng)


# --- reductions -------------------------------------------------------------------
@pytest.mark.parametrize("axis,keepdims", [(None, False), (0, False), (-1, True), ((0, 2), False),
                                           ((1, 2), True)])
@pytest.mark.parametrize("name", ["sum", "mean", "max"])
def test_reductions(name, axis, keepdims, rng):
    x = rng.standard_normal((3, 4, 5))
    fa = getattr(ops, name)
    dims = tuple(range(3)) if axis is None else axis

    def ft(t):
        if name == "max":
            return torch.amax(t, dim=dims, keepdim=keepdims)
        return getattr(torch, name)(t, dim=dims, keepdim=keepdims)
    vs_torch(name, lambda t: fa(t, axis, keepdims), ft, x, rng=rng)


def test_max_ties_share_gradient_equally_like_torch_amax(rng):
    """adaref shares the gradient equally among tied maxima; torch.amax does the same,
    whereas torch.max(dim) routes all of it to one index (checked below)."""
    x = np.array([[1.0, 3.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0], [0.0, -1.0, 0.0, 0.0]])
    ta, tt = vs_torch("max ties", lambda t: ops.max(t, axis=1),
                      lambda t: torch.amax(t, dim=1), x, rng=rng)
    g = dense(ta[0].grad)
    assert np.count_nonzero(g[1]) == 4 and np.allclose(g[1], g[1, 0])
    # full reduction: torch.amax over all dims also shares among the global ties
    vs_torch("max ties (all)", lambda t: ops.max(t), lambda t: torch.amax(t), x, rng=rng)
    # torch.max(dim=...) is the one-winner convention
    t = torch.tensor(x, requires_grad=True)
    torch.max(t, dim=1).values.sum().backward()
    assert np.count_nonzero(t.grad.numpy()[1]) == 1


# --- shape ops --------------------------------------------------------------------
def test_reshape_transpose_broadcast_to(rng):
    x = rng.standard_normal((2, 3, 4))
    vs_torch("reshape", lambda t: ops.reshape(t, (4, -1)), lambda t: t.reshape(4, -1), x, rng=rng)
    vs_torch("transpose", lambda t: ops.transpose(t, (2, 0, 1)), lambda t: t.permute(2, 0, 1),
             x, rng=rng)
    vs_torch("transpose rev", lambda t: ops.transpose(t), lambda t: t.permute(2, 1, 0), x, rng=rng)
    y = rng.standard_normal((3, 1))
    vs_torch("broadcast_to", lambda t: ops.broadcast_to(t, (2, 3, 4)),
             lambda t: t.broadcast_to(2, 3, 4), y, rng=rng)


def test_concatenate_stack(rng):
    a, b, c = rng.standard_normal((2, 3)), rng.standard_normal((2, 1)), rng.standard_normal((2, 4))
    vs_torch("concatenate", lambda *t: ops.concatenate(t, axis=1), lambda *t: torch.cat(t, 1),
             a, b, c, rng=rng)
    d, e = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    vs_torch("stack", lambda *t: ops.stack(t, axis=1), lambda *t: torch.stack(t, 1), d, e, rng=rng)
    vs_torch("stack -1", lambda *t: ops.stack(t, axis=-1), lambda *t: torch.stack(t, -1), d, e,
             rng=rng)


def test_astype_roundtrip(rng):
    x = rng.standard_normal((3, 4))
    vs_torch("astype", lambda t: ops.astype(ops.astype(t, np.float32) * 2.0, np.float64),
             lambda t: (t.to(torch.float32) * 2.0).to(torch.float64), x, rng=rng)


# --- indexing ---------------------------------------------------------------------
def test_getitem_basic_and_advanced_with_repeats(rng):
    x = rng.standard_normal((4, 5, 3))
    vs_torch("getitem basic", lambda t: t[1:, ::2, 0], lambda t: t[1:, ::2, 0], x, rng=rng)
    idx = np.array([0, 2, 2, 3, 0])
    vs_torch("getitem adv", lambda t: t[idx, 1:], lambda t: t[torch.from_numpy(idx), 1:], x, rng=rng)
    i0, i1 = np.array([[0, 1], [3, 3]]), np.array([[4, 4], [0, 4]])
    vs_torch("getitem adv2", lambda t: t[i0, i1], lambda t: t[torch.from_numpy(i0), torch.from_numpy(i1)],
             x, rng=rng)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_take(axis, rng):
    x = rng.standard_normal((4, 5, 6))
    n = x.shape[axis]
    idx = rng.integers(0, n, (2, 3))
    idx[0, 0] = idx[1, 2]                       # a repeat: gradients accumulate

    def ft(t):
        ax = axis % 3
        flat = t.index_select(ax, torch.from_numpy(idx.reshape(-1)))
        return flat.reshape(t.shape[:ax] + idx.shape + t.shape[ax + 1:])
    vs_torch("take", lambda t: ops.take(t, idx, axis), ft, x, rng=rng)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_gather(axis, rng):
    x = rng.standard_normal((3, 4, 5))
    idx = rng.integers(0, x.shape[axis], x.shape)
    vs_torch("gather", lambda t: ops.gather(t, idx, axis),
             lambda t: torch.gather(t, axis, torch.from_numpy(idx)), x, rng=rng)


@pytest.mark.parametrize("axis", [0, 1])
def test_scatter_add(axis, rng):
    base = rng.standard_normal((4, 3))
    index = np.array([0, 2, 0, 3, 3, 0]) if axis == 0 else np.array([1, 1, 2, 0])
    shape = list(base.shape)
    shape[axis] = len(index)
    src = rng.standard_normal(shape)
    vs_torch("scatter_add", lambda b, s: ops.scatter_add(b, index, s, axis),
             lambda b, s: b.index_add(axis, torch.from_numpy(index), s), base, src, rng=rng)


# --- neural-network ops -----------------------------------------------------------
@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_with_minus_inf_mask(name, axis, rng):
    x = rng.standard_normal((4, 5)) * 3
    x[rng.random(x.shape) < 0.4] = -np.inf
    x[0, :] = -np.inf
    x[0, 2] = 1.0                                  # row 0: one finite entry
    x[:, 1] = np.where(np.isinf(x[:, 1]), 0.5, x[:, 1])   # every column has a finite entry
    fa = getattr(ops, name)
    ft = getattr(torch, name)
    ta = adaref.Tensor(x.copy(), requires_grad=True)
    tt = torch.tensor(x.copy(), requires_grad=True)
    ya, yt = fa(ta, axis=axis), ft(tt, dim=axis)
    _close(f"{name} forward", ya.data, yt.detach().numpy())
    # Upstream gradient: random on finite outputs; for log_softmax also on -inf outputs
    # (its derivative there is the identity, in both).
    u = rng.standard_normal(x.shape)
    ya.backward(u)
    yt.backward(torch.from_numpy(u))
    _close(f"{name} grad", ta.grad, tt.grad.numpy())
    if name == "softmax":
        assert np.all(ta.grad[np.isinf(x)] == 0)


@pytest.mark.parametrize("eps", [1e-5, 1e-3])
def test_layer_norm(eps, rng):
    x = rng.standard_normal((3, 4, 6)) * 2 + 1
    vs_torch("layer_norm", lambda t: ops.layer_norm(t, eps),
             lambda t: F.layer_norm(t, (6,), eps=eps), x, rng=rng)


@pytest.mark.parametrize("sparse", [False, True])
def test_embedding_sparse_gradient_densified(sparse, rng):
    w = rng.standard_normal((7, 3))
    ids = np.array([[1, 4, 1], [6, 1, 0]])
    ta = adaref.Tensor(w.copy(), requires_grad=True)
    tt = torch.tensor(w.copy(), requires_grad=True)
    ya = ops.embedding(ta, ids)
    yt = F.embedding(torch.from_numpy(ids), tt, sparse=sparse)
    _close("embedding forward", ya.data, yt.detach().numpy())
    u = rng.standard_normal(ya.shape)
    ya.backward(u)
    yt.backward(torch.from_numpy(u))
    assert isinstance(ta.grad, RowSparseGrad)
    assert sorted(ta.grad.rows.tolist()) == [0, 1, 4, 6]
    tg = tt.grad.coalesce().to_dense() if sparse else tt.grad
    _close("embedding grad", ta.grad.to_dense(), tg.numpy())


def test_topk_mask_vs_stable_sort_and_torch_topk(rng):
    from adaref.crosscheck.torch_port import topk_mask
    x = np.round(rng.standard_normal((50, 5)), 1)          # many ties
    x[0] = 2.0
    for k in range(1, 6):
        mine = topk_mask(torch.from_numpy(x), k).numpy()
        assert np.array_equal(ops.topk_mask(x, k), mine)
    # torch.topk selects the same *values*, but its choice among tied values is
    # unspecified (documented); compare the kept values only.
    for k in range(1, 6):
        idx = torch.topk(torch.from_numpy(x), k, dim=-1).indices.numpy()
        kept_t = np.sort(np.take_along_axis(x, idx, 1), 1)
        kept_a = np.sort(np.where(ops.topk_mask(x, k), x, np.nan), 1)[:, :k]
        assert np.array_equal(kept_t, kept_a)


# --- indexing edge cases ------------------------------------------------------------
def test_negative_indices_take_gather_scatter(rng):
    x = rng.standard_normal((4, 5))
    idx = np.array([-1, 0, -5, 4, -1])
    wrap = torch.from_numpy(idx % 5)
    vs_torch("take neg", lambda t: ops.take(t, idx, 1), lambda t: t.index_select(1, wrap), x, rng=rng)
    gi = rng.integers(-4, 4, (4, 5))
    vs_torch("gather neg", lambda t: ops.gather(t, gi, 0),
             lambda t: torch.gather(t, 0, torch.from_numpy(gi % 4)), x, rng=rng)
    src = rng.standard_normal((4, 5))
    vs_torch("scatter_add neg", lambda b, s: ops.scatter_add(b, idx, s, 1),
             lambda b, s: b.index_add(1, wrap, s), x, src, rng=rng)


def test_getitem_boolean_mask_and_negative_steps(rng):
    x = rng.standard_normal((4, 5))
    m = rng.random((4, 5)) > 0.5
    vs_torch("getitem bool", lambda t: t[m], lambda t: t[torch.from_numpy(m)], x, rng=rng)
    vs_torch("getitem neg", lambda t: t[-1, 1:-1], lambda t: t[-1, 1:-1], x, rng=rng)


# --- the engine: accumulation of several uses / several backward calls ---------------
def test_embedding_used_twice_and_densely_in_one_graph(rng):
    w = rng.standard_normal((6, 3))
    i1, i2 = np.array([0, 2, 2]), np.array([[5, 2], [0, 0]])

    def fa(t):
        return (ops.embedding(t, i1).sum(axis=0) * 2.0 + ops.embedding(t, i2).sum(axis=(0, 1))
                + (t * t).sum(axis=0))

    def ft(t):
        return (F.embedding(torch.from_numpy(i1), t, sparse=True).sum(0) * 2.0
                + F.embedding(torch.from_numpy(i2), t).sum((0, 1)) + (t * t).sum(0))
    vs_torch("embedding x2 + dense", fa, ft, w, rng=rng)


def test_two_sparse_backward_calls_accumulate(rng):
    w = rng.standard_normal((6, 3))
    ta, tt = adaref.Tensor(w.copy(), requires_grad=True), torch.tensor(w.copy(), requires_grad=True)
    for ids in (np.array([1, 3]), np.array([3, 4, 4])):
        u = rng.standard_normal((len(ids), 3))
        ops.embedding(ta, ids).backward(u)
        F.embedding(torch.from_numpy(ids), tt).backward(torch.from_numpy(u))
    _close("sparse+sparse accumulate", dense(ta.grad), tt.grad.numpy())


def test_dense_then_sparse_backward_calls_accumulate(rng):
    w = rng.standard_normal((6, 3))
    ta, tt = adaref.Tensor(w.copy(), requires_grad=True), torch.tensor(w.copy(), requires_grad=True)
    (ta * ta).sum().backward()                                   # dense gradient first
    (tt * tt).sum().backward()
    ids = np.array([1, 1, 4])
    ops.embedding(ta, ids).sum().backward()                      # then a row-sparse one
    F.embedding(torch.from_numpy(ids), tt).sum().backward()
    _close("dense+sparse accumulate", dense(ta.grad), tt.grad.numpy())


def test_report_max_differences():
    """Not a check: prints the largest absolute difference seen per op (run with -s)."""
    for k in sorted(MAX_SEEN):
        print(f"{k:32s} {MAX_SEEN[k]:.2e}")
