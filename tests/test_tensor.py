"""The engine: graph order, accumulation, broadcasting, grad mode, dtype and shape rules."""
import numpy as np
import pytest

import adaref
from adaref import DTypeError, RowSparseGrad, ShapeError, Tensor, ops
from adaref.tensor import unbroadcast


def test_reused_tensor_accumulates_gradient():
    x = Tensor(np.array([1.5, -2.0]), requires_grad=True)
    y = x * x + x * 3.0 + x          # dy/dx = 2x + 4
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, 2 * x.data + 4)


def test_diamond_graph_visits_shared_node_once():
    x = Tensor(np.array(2.0), requires_grad=True)
    a = x * 3.0                      # shared by both branches
    y = a * a + ops.exp(a * 0.0)     # y = 9x^2 + 1 -> 18x
    y.backward()
    assert x.grad == pytest.approx(36.0)


def test_backward_accumulates_across_calls_until_zero_grad():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * 2.0).sum().backward()
    (x * 2.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [4.0, 4.0])
    x.zero_grad()
    assert x.grad is None


def test_leaf_gradients_never_alias_each_other():
    a, b = Tensor(np.ones(2), requires_grad=True), Tensor(np.ones(2), requires_grad=True)
    (a + b).sum().backward()         # Add hands the same array to both inputs
    assert not np.shares_memory(a.grad, b.grad)


def test_in_place_accumulation_never_writes_into_a_shared_gradient():
    """Add hands one array to both its inputs; each intermediate that also gets other
    gradients must add them into its own copy, not into that shared array."""
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    u, v = x * 2.0, x * 3.0          # intermediates
    s = u + v                        # u and v first receive the same array g
    y = s * 1.0 + u * 5.0 + v * 7.0 + u * 11.0 + v * 13.0   # then more, several times each
    y.sum().backward()               # dy/dx = 2 (1 + 5 + 11) + 3 (1 + 7 + 13)
    np.testing.assert_array_equal(x.grad, [2 * 17 + 3 * 21] * 2)


def test_row_sparse_gradients_add_into_an_intermediate_in_place():
    """Row gathers of an intermediate (the dispatcher's) return only their rows; the
    engine adds them into that tensor's gradient, whatever order the parts arrive in."""
    from adaref.model.dispatcher import dispatch
    rng = np.random.default_rng(0)
    w = Tensor(rng.normal(size=(6, 2, 3)), requires_grad=True)
    x = w * 2.0                                                      # an intermediate (6, 2, 3)
    parts = [np.array([0, 2, 5]), np.array([1, 2]), np.array([5]), np.arange(6)]
    weights = [rng.normal(size=(len(r), 2, 3)) for r in parts]
    y = (x * 0.5).sum()
    for r, c in zip(parts, weights):
        y = y + (dispatch(x, r) * c).sum()
    y.backward()
    expected = np.full((6, 2, 3), 0.5)
    for r, c in zip(parts, weights):
        expected[r] += c
    np.testing.assert_allclose(w.grad, 2 * expected, rtol=1e-15, atol=0)
    leaf = Tensor(rng.normal(size=(6, 2, 3)), requires_grad=True)   # a leaf gets a dense array
    (dispatch(leaf, parts[0]) * weights[0]).sum().backward()
    assert isinstance(leaf.grad, np.ndarray) and leaf.grad.shape == (6, 2, 3)


def test_broadcast_gradient_is_summed_back_once_in_the_engine():
    x = Tensor(np.ones((3, 1)), requires_grad=True)
    b = Tensor(np.ones(4), requires_grad=True)
    (x * b).backward(np.arange(12.0).reshape(3, 4))
    np.testing.assert_array_equal(x.grad, np.arange(12.0).reshape(3, 4).sum(1, keepdims=True))
    np.testing.assert_array_equal(b.grad, np.arange(12.0).reshape(3, 4).sum(0))


def test_unbroadcast_handles_leading_and_stretched_axes():
    g = np.ones((5, 3, 4))
    assert unbroadcast(g, (3, 1)).shape == (3, 1)
    assert unbroadcast(g, ()).item() == 60
    assert unbroadcast(g, (1, 1, 4)).tolist() == [[[15.0] * 4]]


def test_deep_graph_has_no_recursion_limit():
    x = Tensor(np.array(1.0), requires_grad=True)
    y = x
    for _ in range(20_000):
        y = y * 1.0
    y.backward()
    assert x.grad == 1.0


def test_detach_and_no_grad_stop_gradients():
    x = Tensor(np.array([3.0]), requires_grad=True)
    assert not x.detach().requires_grad
    with adaref.no_grad():
        y = x * 2.0
        assert not adaref.is_grad_enabled()
    assert adaref.is_grad_enabled() and not y.requires_grad and y._ctx is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_non_scalar_backward_needs_a_gradient_of_the_right_shape():
    y = Tensor(np.ones(3), requires_grad=True) * 2.0
    with pytest.raises(ShapeError, match=r"non-scalar output of shape \(3,\)"):
        y.backward()
    with pytest.raises(ShapeError, match=r"gradient shape \(2,\) != tensor shape \(3,\)"):
        y.backward(np.ones(2))


# --- dtype rules --------------------------------------------------------------------
def test_float32_and_float64_are_kept_and_never_mixed():
    x32 = Tensor(np.ones(3, np.float32))
    x64 = Tensor(np.ones(3))
    assert (x32 * 2.5).dtype == np.float32 and (x64 * 2.5).dtype == np.float64
    assert (x32 + np.arange(3)).dtype == np.float32          # int arrays take the dtype
    assert (x32 * np.float64(2.0)).dtype == np.float32        # so do NumPy scalars
    for op in (ops.add, ops.mul, ops.matmul, lambda a, b: ops.where(np.ones(3, bool), a, b)):
        with pytest.raises(DTypeError, match="mix float32 and float64|float32 and float64"):
            op(x32, x64)
    with pytest.raises(DTypeError, match="mix"):
        x32 + np.ones(3)                                       # float64 array operand


def test_tensor_constructor_dtype_rules():
    assert Tensor([1, 2]).dtype == np.float64
    assert Tensor(np.array([True])).dtype == np.float64
    assert Tensor([1.0], dtype=np.float32).dtype == np.float32
    with pytest.raises(DTypeError, match="float16"):
        Tensor(np.ones(2, np.float16))
    with pytest.raises(DTypeError, match="complex"):
        Tensor(np.ones(2, complex))


def test_astype_casts_explicitly_and_casts_the_gradient_back():
    x = Tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
    y = x.astype(np.float64)
    assert y.dtype == np.float64
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])
    adaref.gradcheck(lambda x: ops.astype(x, np.float64) ** 2, np.array([0.5, -1.0]))
    with pytest.raises(DTypeError):
        ops.astype(x, np.int32)


# --- shape errors name the op and both shapes -------------------------------------------
@pytest.mark.parametrize("name,op", [("add", ops.add), ("sub", ops.sub), ("mul", ops.mul),
                                     ("div", ops.div), ("pow", ops.pow)])
def test_broadcast_errors_name_op_and_shapes(name, op):
    with pytest.raises(ShapeError, match=rf"{name}: cannot broadcast shapes \(2, 3\) and \(4,\)"):
        op(Tensor(np.ones((2, 3))), Tensor(np.ones(4)))


def test_other_shape_errors_are_specific():
    a = Tensor(np.ones((2, 3)))
    with pytest.raises(ShapeError, match=r"matmul: shapes \(2, 3\) and \(4, 5\) are not aligned"):
        a @ Tensor(np.ones((4, 5)))
    with pytest.raises(ShapeError, match=r"reshape: cannot reshape \(2, 3\)"):
        a.reshape(4, 2)
    with pytest.raises(ShapeError, match=r"concatenate: shapes \(2, 3\) and \(2, 4\)"):
        ops.concatenate([a, Tensor(np.ones((2, 4)))], axis=0)
    with pytest.raises(ShapeError, match=r"stack: shapes"):
        ops.stack([a, Tensor(np.ones((3, 2)))])
    with pytest.raises(ShapeError, match=r"broadcast_to: cannot broadcast \(2, 3\) to \(3,\)"):
        a.broadcast_to((3,))
    with pytest.raises(ShapeError, match="scatter_add: src shape"):
        ops.scatter_add(np.zeros((3, 2)), np.array([0, 1]), np.zeros((3, 2)))
    with pytest.raises(IndexError, match="take: index 5 is out of range"):
        ops.take(a, np.array([5]), axis=1)
    with pytest.raises(IndexError, match=r"getitem: .*\(tensor shape \(2, 3\)\)"):
        a[5]


# --- numerics of the special ops ---------------------------------------------------------
def test_sigmoid_and_softmax_are_stable_at_extremes():
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = ops.sigmoid(Tensor(np.array([-1000.0, 0.0, 1000.0]))).data
        p = ops.softmax(Tensor(np.array([1000.0, 999.0, -np.inf]))).data
        lp = ops.log_softmax(Tensor(np.array([1000.0, 999.0]))).data
    np.testing.assert_allclose(y, [0.0, 0.5, 1.0])
    assert p[2] == 0.0 and p.sum() == pytest.approx(1.0) and np.all(np.isfinite(lp))
    np.testing.assert_allclose(lp, [-np.log1p(np.exp(-1.0)), -1 - np.log1p(np.exp(-1.0))])


def test_softmax_rejects_a_fully_masked_slice():
    with pytest.raises(ValueError, match="softmax: a slice along axis 1 has only -inf"):
        ops.softmax(Tensor(np.array([[0.0, 1.0], [-np.inf, -np.inf]])), axis=1)
    with pytest.raises(ValueError, match="NaN"):
        ops.log_softmax(Tensor(np.array([np.nan, 1.0])))


def test_topk_mask_keeps_k_and_breaks_ties_by_lowest_index():
    x = np.array([[2.0, 5.0, 5.0, 1.0, 5.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(ops.topk_mask(x, 2), [[0, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(ops.topk_mask(x, 1, axis=0)[:, 1], [True, False])
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, size=(200, 5)).astype(float)   # many ties
    mask = ops.topk_mask(scores, 3)
    assert (mask.sum(axis=1) == 3).all()
    kept_min = np.where(mask, scores, np.inf).min(axis=1)
    dropped_max = np.where(mask, -np.inf, scores).max(axis=1)
    assert (kept_min >= dropped_max).all()
    # among equal values at the boundary, every kept index is below every dropped one
    for row, m in zip(scores, mask):
        boundary = row[m].min()
        kept = np.flatnonzero(m & (row == boundary))
        dropped = np.flatnonzero(~m & (row == boundary))
        assert not len(dropped) or kept.max() < dropped.min()
    with pytest.raises(ValueError, match=r"k=6 must be in \[1, 5\]"):
        ops.topk_mask(scores, 6)


def test_max_shares_the_gradient_among_ties():
    x = Tensor(np.array([3.0, 1.0, 3.0]), requires_grad=True)
    x.max().backward()
    np.testing.assert_array_equal(x.grad, [0.5, 0.0, 0.5])


def test_embedding_gradient_touches_only_the_looked_up_rows():
    w = Tensor(np.arange(12.0).reshape(6, 2), requires_grad=True)
    ids = np.array([[4, 1], [4, 4]])
    ops.embedding(w, ids).sum().backward()
    assert isinstance(w.grad, RowSparseGrad)
    np.testing.assert_array_equal(w.grad.rows, [1, 4])
    np.testing.assert_array_equal(w.grad.values, [[1.0, 1.0], [3.0, 3.0]])
    dense = w.grad.to_dense()
    assert dense.shape == (6, 2) and dense[[0, 2, 3, 5]].sum() == 0


def test_sparse_and_dense_gradients_of_one_table_add_up():
    w = Tensor(np.ones((4, 2)), requires_grad=True)
    y = ops.embedding(w, np.array([0, 0, 3])).sum() + (w * 2.0).sum()
    y.backward()
    expected = np.full((4, 2), 2.0)
    expected[0] += 2
    expected[3] += 1
    np.testing.assert_array_equal(adaref.tensor.dense(w.grad), expected)
    # two sparse contributions stay sparse
    w.zero_grad()
    (ops.embedding(w, np.array([1])).sum() + ops.embedding(w, np.array([1, 2])).sum()).backward()
    assert isinstance(w.grad, RowSparseGrad)
    np.testing.assert_array_equal(w.grad.rows, [1, 2])
    np.testing.assert_array_equal(w.grad.values[:, 0], [2.0, 1.0])


def test_a_scalar_used_many_times_accumulates_every_gradient():
    """The first gradient of a 0-d intermediate may be a NumPy scalar (unbroadcast sums
    to one); the engine's own copy must still take every later gradient."""
    x = Tensor(np.array(2.0), requires_grad=True)
    s = x * 1.0                                      # a 0-d intermediate
    v = Tensor(np.ones(3))
    y = (s * v).sum() + (s * v).sum() + (s * v).sum() + s * 4.0   # dy/ds = 3 + 3 + 3 + 4
    y.backward()
    assert float(x.grad) == 13.0


def test_the_engine_does_not_import_the_ops():
    """tensor.py and accumulation.py import no op module: ops -> tensor, one way."""
    import ast
    import pathlib

    root = pathlib.Path(adaref.__file__).parent
    for name in ("tensor.py", "accumulation.py"):
        tree = ast.parse((root / name).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not {m for m in imported if m and (m == "adaref.ops" or m.startswith("adaref.ops."))}, name
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        assert "ops" not in names, name


def test_every_sum_of_gradients_goes_through_accumulate(monkeypatch):
    """Replacing the one accumulation function changes every sum the engine forms."""
    from adaref import accumulation, tensor

    calls = []
    original = accumulation.accumulate

    def counting(total, g, in_place=False):
        calls.append(in_place)
        return original(total, g, in_place)

    monkeypatch.setattr(tensor, "accumulate", counting)
    x = adaref.Tensor(np.arange(3.0), requires_grad=True)
    h = x * 2.0                       # an intermediate used three times
    (h * h + h).sum().backward()      # h's 2nd gradient: out of place (a new array), its 3rd: in place
    (x * 1.0).sum().backward()        # the leaf's second backward call: out of place
    assert calls == [False, True, False]
    assert x.grad.tolist() == [3.0, 11.0, 19.0]     # d/dx (4x^2 + 2x) + 1 = 8x + 3


def test_backward_releases_the_graph_as_it_goes_and_a_second_pass_needs_retain_graph():
    """Once an op's backward has run, what its forward saved is dropped, so an
    intermediate array nothing else holds is freed during the pass; the gradients are
    those of a pass that keeps everything (retain_graph=True)."""
    import gc
    import weakref

    def graph():
        x = Tensor(np.linspace(-1.0, 1.0, 12).reshape(3, 4), requires_grad=True)
        h = ops.exp(x * 2.0)                     # Exp saves its output
        return x, weakref.ref(h.data), (h * h).sum()

    x, held, loss = graph()
    seen = []
    original = ops.Exp.backward

    def spy(self, g):                            # during the pass: Mul(h, h) is done and released
        gc.collect()
        seen.append(held() is not None)          # Exp still needs its output
        return original(self, g)
    ops.Exp.backward = spy
    try:
        loss.backward()
    finally:
        ops.Exp.backward = original
    gc.collect()
    assert seen == [True] and held() is None     # freed once Exp's backward has run
    assert loss._ctx.released and loss._ctx.parents == ()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        loss.backward()

    x2, _, loss2 = graph()
    loss2.backward(retain_graph=True)
    np.testing.assert_array_equal(x2.grad, x.grad)
    loss2.backward()                             # the graph was kept: gradients add up
    np.testing.assert_array_equal(x2.grad, 2 * x.grad)


def test_the_graph_does_not_hold_an_intermediate_that_no_op_saved():
    """Ops refer to their intermediate inputs without the data (tensor._Node): an array
    is kept by the graph only where an op saved it for its backward pass."""
    import gc
    import weakref

    from adaref.tensor import _Node

    x = Tensor(np.linspace(-1.0, 1.0, 6), requires_grad=True)
    h = x * 2.0                       # read by Sum, which keeps only the shape
    loss = ops.exp(h).sum() + h.sum()  # Exp keeps its own output, not h
    held = weakref.ref(h.data)
    read = loss._ctx.parents[1]._ctx.parents[0]           # h, as h.sum() refers to it
    assert isinstance(read, _Node) and read._ctx is h._ctx and read.shape == h.shape
    del h
    gc.collect()
    assert held() is None
    loss.backward()
    np.testing.assert_allclose(x.grad, 2 * np.exp(2 * x.data) + 2)
