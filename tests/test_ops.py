"""Every op of adaref.ops through the one test factory (tests/opcheck.py): float64
gradient check by the oracle, no mutation, float32 kept and consistent."""
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import adaref
from adaref import Tensor, ops
from adaref.tensor import ShapeError
from opcheck import away_from_zero, broadcastable, floats, min_gap, one_shape, op_test

KINK = 1e-3  # finite differences use eps = 1e-6; stay 1000 eps away from kinks and ties


def axis_options(shapes):
    ndim = len(shapes[0])
    if ndim == 0:
        return st.fixed_dictionaries({"axis": st.none(), "keepdims": st.booleans()})
    axis = st.one_of(st.none(), st.integers(-ndim, ndim - 1),
                     st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim,
                              unique=True).map(tuple))
    return st.fixed_dictionaries({"axis": axis, "keepdims": st.booleans()})


def one_axis(shapes):
    return st.fixed_dictionaries({"axis": st.integers(-len(shapes[0]), len(shapes[0]) - 1)})


# --- elementwise binary --------------------------------------------------------
@op_test(lambda x, y: x + y, n_args=2)
def test_add(): pass


@op_test(lambda x, y: x - y, n_args=2)
def test_sub(): pass


@op_test(lambda x, y: x * y, n_args=2)
def test_mul(): pass


@op_test(lambda x, y: x / y, n_args=2, elements=[floats(), away_from_zero()])
def test_div(): pass


@op_test(lambda x, y: x ** y, n_args=2, elements=[floats(0.3, 3.0), floats(-2.0, 2.0)])
def test_pow_tensor_exponent(): pass


@op_test(lambda x, p: x ** p, elements=floats(0.3, 3.0),
         constants=lambda s, kw: st.tuples(st.sampled_from([2, 3, -1, 0.5, 1.7])))
def test_pow_constant_exponent(): pass


@op_test(lambda x: -x)
def test_neg(): pass


@st.composite
def matmul_shapes(draw):
    """(a, b) shapes: vectors, matrices and batched stacks with broadcastable batch dims."""
    n, k, m = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    batch = draw(broadcastable(2, max_dims=2))
    kind_a, kind_b = draw(st.sampled_from(["vec", "mat"])), draw(st.sampled_from(["vec", "mat"]))
    a = (k,) if kind_a == "vec" else batch[0] + (n, k)
    b = (k,) if kind_b == "vec" else batch[1] + (k, m)
    return a, b


@op_test(lambda a, b: a @ b, n_args=2, shapes=matmul_shapes())
def test_matmul(): pass


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("b_shape", [(37,), (37, 1), (3, 37, 1)])
def test_matmul_gradient_through_an_inner_size_of_one_is_blas_bit_for_bit(dtype, b_shape):
    """A matrix-vector product's input gradient g b^T has inner size 1: computed as a
    broadcast product (BLAS is slow there), it equals the matmul to the last bit."""
    rng = np.random.default_rng(5)
    a = Tensor(rng.standard_normal((3, 513, 37)).astype(dtype), requires_grad=True)
    b = Tensor(rng.standard_normal(b_shape).astype(dtype), requires_grad=True)
    y = ops.matmul(a, b)
    g = rng.standard_normal(y.shape).astype(dtype)
    y.backward(g)
    b2 = b.data[:, None] if b.ndim == 1 else b.data
    want = g.reshape(a.shape[:-1] + (1,)) @ np.swapaxes(b2, -1, -2)   # BLAS, inner size 1
    assert a.grad.dtype == dtype and np.array_equal(a.grad, want)


@st.composite
def scaled_matmul_case(draw):
    n, k, m = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return (n, k), (k, m)


def _jitter(shapes, kwargs):
    return hnp.arrays(np.float64, shapes[0], elements=floats(0.5, 1.5)).map(lambda s: (s,))


@op_test(lambda a, b, s: ops.scaled_matmul(a, b, s.astype(a.dtype)), n_args=2,
         shapes=scaled_matmul_case(), constants=_jitter)
def test_scaled_matmul(): pass


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scaled_matmul_equals_its_composed_definition_bit_for_bit_and_keeps_no_product(dtype):
    """(a * s) @ b, the gates' jitter times their first layer: the same values and
    gradients as matmul(a * s, b) to the last bit; the graph keeps a and s, not a * s."""
    rng = np.random.default_rng(3)
    a0, b0 = rng.standard_normal((257, 39)).astype(dtype), rng.standard_normal((39, 7)).astype(dtype)
    s = rng.uniform(0.99, 1.01, size=a0.shape).astype(dtype)
    g = rng.standard_normal((257, 7)).astype(dtype)
    results = []
    for fn in (lambda a, b: ops.scaled_matmul(a, b, s), lambda a, b: ops.matmul(a * s, b)):
        a, b = Tensor(a0, requires_grad=True), Tensor(b0, requires_grad=True)
        y = fn(a, b)
        y.backward(g)
        results.append((y.data, a.grad, b.grad))
    for fused, composed in zip(*results):
        assert fused.dtype == dtype and np.array_equal(fused, composed)
    y = ops.scaled_matmul(Tensor(a0, requires_grad=True), Tensor(b0, requires_grad=True), s)
    kept = [v for v in vars(y._ctx).values() if isinstance(v, np.ndarray) and v.shape == a0.shape]
    assert len(kept) == 2 and any(v is s for v in kept)
    with pytest.raises(ShapeError, match="scale has shape"):
        ops.scaled_matmul(Tensor(a0), Tensor(b0), s[:3])
    with pytest.raises(adaref.DTypeError, match="scale is"):
        ops.scaled_matmul(Tensor(a0), Tensor(b0), s.astype(np.float16))


# --- unary and activations --------------------------------------------------------
@op_test(ops.exp)
def test_exp(): pass


@op_test(ops.log, elements=floats(0.1, 5.0))
def test_log(): pass


@op_test(ops.sqrt, elements=floats(0.1, 5.0))
def test_sqrt(): pass


@op_test(ops.abs, elements=away_from_zero(KINK))
def test_abs(): pass


@op_test(ops.sigmoid, elements=floats(-30.0, 30.0))
def test_sigmoid(): pass


@op_test(ops.tanh)
def test_tanh(): pass


@op_test(ops.relu, elements=away_from_zero(KINK))
def test_relu(): pass


@op_test(ops.gelu, kwargs=lambda s: st.fixed_dictionaries({"approximate": st.booleans()}))
def test_gelu(): pass


# --- reductions ---------------------------------------------------------------------
@op_test(ops.sum, shapes=one_shape(min_dims=0), kwargs=axis_options)
def test_sum(): pass


@op_test(ops.mean, shapes=one_shape(min_dims=0), kwargs=axis_options)
def test_mean(): pass


def _max_tie(x, axis=None, keepdims=False):
    """True if a maximum over the reduced axes is within KINK of the runner-up."""
    axes = ops._axes(axis, x.ndim)
    if not axes:
        return False
    moved = np.moveaxis(x, axes, range(len(axes)))
    flat = moved.reshape(int(np.prod([x.shape[a] for a in axes])), -1)   # (reduced, rest)
    if flat.shape[0] < 2:
        return False
    top2 = -np.sort(-flat, axis=0)[:2]
    return bool(np.any(top2[0] - top2[1] < KINK))


@op_test(ops.max, shapes=one_shape(min_dims=0), kwargs=axis_options, avoid=_max_tie)
def test_max(): pass


# --- shape ops ------------------------------------------------------------------------
@st.composite
def reshape_target(draw, shapes):
    size = int(np.prod(shapes[0]))
    divisors = [d for d in range(1, size + 1) if size % d == 0]
    first = draw(st.sampled_from(divisors))
    return {"shape": draw(st.sampled_from([(size,), (first, size // first), (first, -1),
                                           (1, size, 1)]))}


@op_test(ops.reshape, shapes=one_shape(min_dims=0), kwargs=reshape_target)
def test_reshape(): pass


@op_test(ops.transpose, shapes=one_shape(),
         kwargs=lambda s: st.fixed_dictionaries(
             {"axes": st.one_of(st.none(), st.permutations(range(len(s[0]))).map(tuple))}))
def test_transpose(): pass


@op_test(ops.broadcast_to, shapes=broadcastable(1, max_dims=2),
         kwargs=lambda s: st.fixed_dictionaries({"shape": hnp.broadcastable_shapes(
             s[0], min_dims=len(s[0]), max_dims=4, max_side=3).map(
             lambda t: tuple(np.broadcast_shapes(t, s[0])))}))
def test_broadcast_to(): pass


@st.composite
def same_but_axis(draw, n):
    base = list(draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=3)))
    axis = draw(st.integers(0, len(base) - 1))
    out = []
    for _ in range(n):
        s = list(base)
        s[axis] = draw(st.integers(1, 3))
        out.append(tuple(s))
    return tuple(out)


def _concat_axis(shapes):
    # the axis along which shapes may differ; any axis if they are all equal
    diff = [d for d in range(len(shapes[0])) if len({s[d] for s in shapes}) > 1]
    return st.fixed_dictionaries({"axis": st.just(diff[0]) if diff else
                                  st.integers(-len(shapes[0]), len(shapes[0]) - 1)})


@op_test(lambda *xs, axis: ops.concatenate(xs, axis=axis), n_args=3, shapes=same_but_axis(3),
         kwargs=_concat_axis)
def test_concatenate(): pass


@op_test(lambda *xs, axis: ops.stack(xs, axis=axis), n_args=3,
         shapes=hnp.array_shapes(min_dims=0, max_dims=3, max_side=3).map(lambda s: (s, s, s)),
         kwargs=lambda s: st.fixed_dictionaries({"axis": st.integers(-len(s[0]) - 1, len(s[0]))}))
def test_stack(): pass


# --- indexing ---------------------------------------------------------------------------
@st.composite
def index_key(draw, shapes, kw):
    """A basic or advanced key: slices with steps, ints, and integer arrays with repeats."""
    shape = shapes[0]
    key = []
    for n in shape:
        kind = draw(st.sampled_from(["slice", "int", "array"]))
        if kind == "slice":
            start = draw(st.integers(-n, n - 1))
            key.append(slice(start, None, draw(st.sampled_from([1, 2, -1]))))
        elif kind == "int":
            key.append(draw(st.integers(-n, n - 1)))
        else:
            key.append(np.array(draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=5))))
    arrays = [k for k in key if isinstance(k, np.ndarray)]
    if len(arrays) > 1:  # advanced indices must broadcast together: use one length
        length = len(arrays[0])
        key = [k[:length] if isinstance(k, np.ndarray) and len(k) >= length else
               (np.resize(k, length) if isinstance(k, np.ndarray) else k) for k in key]
    return (tuple(key),)


@op_test(lambda x, key: x[key], shapes=one_shape(), constants=index_key)
def test_getitem(): pass


@st.composite
def take_args(draw, shapes, kw):
    n = shapes[0][kw["axis"]]
    idx = draw(hnp.arrays(np.int64, hnp.array_shapes(min_dims=0, max_dims=2, max_side=4),
                          elements=st.integers(-n, n - 1)))
    return (idx,)


@op_test(lambda x, idx, axis: ops.take(x, idx, axis), shapes=one_shape(), kwargs=one_axis,
         constants=take_args)
def test_take(): pass


@st.composite
def gather_args(draw, shapes, kw):
    shape = list(shapes[0])
    axis = kw["axis"] % len(shape)
    n = shape[axis]
    shape[axis] = draw(st.integers(1, 4))
    return (draw(hnp.arrays(np.int64, tuple(shape), elements=st.integers(0, n - 1))),)


@op_test(lambda x, idx, axis: ops.gather(x, idx, axis), shapes=one_shape(), kwargs=one_axis,
         constants=gather_args)
def test_gather(): pass


@st.composite
def scatter_case(draw):
    """(base, src) shapes that differ at most along one axis (src has M slices there)."""
    base = draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=4))
    axis = draw(st.integers(0, len(base) - 1))
    return base, base[:axis] + (draw(st.integers(1, 5)),) + base[axis + 1:]


def _scatter_consts(shapes, kw):
    base, src = shapes
    axis = next(d for d in range(len(base)) if base[:d] + base[d + 1:] == src[:d] + src[d + 1:])
    m = src[axis]
    return st.tuples(hnp.arrays(np.int64, (m,), elements=st.integers(0, base[axis] - 1)),
                     st.just(axis))


@op_test(lambda base, src, idx, axis: ops.scatter_add(base, idx, src, axis), n_args=2,
         shapes=scatter_case(), constants=_scatter_consts)
def test_scatter_add(): pass


# --- neural-network ops -------------------------------------------------------------------
@op_test(ops.softmax, shapes=one_shape(), kwargs=one_axis, elements=floats(-10.0, 10.0))
def test_softmax(): pass


@op_test(ops.log_softmax, shapes=one_shape(), kwargs=one_axis, elements=floats(-10.0, 10.0))
def test_log_softmax(): pass


@st.composite
def k_of_last(draw, shapes, kw):
    return (draw(st.integers(1, shapes[0][-1])),)


def _topk_tie(x, k):
    """True if the k-th and (k+1)-th largest scores are within KINK (TopK would flip)."""
    if k == x.shape[-1]:
        return False
    desc = -np.sort(-x, axis=-1)
    return bool(np.any(desc[..., k - 1] - desc[..., k] < KINK))


def masked_softmax(x, k):
    """Eq. 10-11: softmax over the top-k scores, the rest set to -inf."""
    return ops.softmax(ops.where(ops.topk_mask(x, k), x, -np.inf), axis=-1)


def masked_log_softmax(x, k):
    mask = ops.topk_mask(x, k)
    return ops.where(mask, ops.log_softmax(ops.where(mask, x, -np.inf), axis=-1), 0.0)


@op_test(masked_softmax, shapes=one_shape(), constants=k_of_last, avoid=_topk_tie)
def test_softmax_topk_mask(): pass


@op_test(masked_log_softmax, shapes=one_shape(), constants=k_of_last, avoid=_topk_tie)
def test_log_softmax_topk_mask(): pass


@op_test(ops.layer_norm, shapes=one_shape(min_side=2), elements=floats(-3.0, 3.0),
         avoid=lambda x: bool(np.any(x.std(axis=-1) < 0.05)))
def test_layer_norm(): pass


@st.composite
def _norm_shapes(draw):
    x = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=2, max_side=4))
    return (x, x[-1:], x[-1:])


@op_test(lambda x, gain, bias: ops.layer_norm(x, 1e-5, gain, bias), n_args=3, shapes=_norm_shapes(),
         elements=floats(-3.0, 3.0), avoid=lambda x, gain, bias: bool(np.any(x.std(axis=-1) < 0.05)))
def test_layer_norm_affine(): pass


def test_layer_norm_affine_is_the_plain_norm_times_gain_plus_bias():
    rng = np.random.default_rng(0)
    x, gain, bias = rng.normal(size=(3, 4, 5)), rng.normal(size=5), rng.normal(size=5)
    fused = ops.layer_norm(Tensor(x), 1e-5, Tensor(gain), Tensor(bias)).data
    np.testing.assert_allclose(fused, ops.layer_norm(Tensor(x), 1e-5).data * gain + bias, rtol=1e-14, atol=1e-14)
    with pytest.raises(ValueError, match="both gain and bias"):
        ops.layer_norm(Tensor(x), 1e-5, Tensor(gain))
    with pytest.raises(ShapeError, match=r"layer_norm: gain \(4,\)"):
        ops.layer_norm(Tensor(x), 1e-5, Tensor(np.ones(4)), Tensor(np.ones(4)))


@st.composite
def ids_for(draw, shapes, kw):
    v = shapes[0][0]
    return (draw(hnp.arrays(np.int64, hnp.array_shapes(min_dims=1, max_dims=2, max_side=4),
                            elements=st.integers(0, v - 1))),)


@op_test(ops.embedding, shapes=one_shape(min_dims=2, max_dims=2), constants=ids_for)
def test_embedding(): pass


@given(data=st.data(), vocab=st.integers(1, 3000))
def test_embedding_gradient_rows_are_numpys_unique_on_both_paths(data, vocab):
    """The embedding's VJP finds its rows by a mark per row when the table is at most 16
    times the batch and by a sort otherwise: both give np.unique's rows and inverse."""
    from adaref.ops.neural import _unique_inverse

    ids = data.draw(hnp.arrays(np.int64, st.integers(0, 400), elements=st.integers(0, vocab - 1)))
    rows, inverse = _unique_inverse(ids, vocab)
    want_rows, want_inverse = np.unique(ids, return_inverse=True)
    assert np.array_equal(rows, want_rows) and np.array_equal(inverse, want_inverse.reshape(-1))
    assert np.array_equal(rows[inverse], ids)


# --- selection -------------------------------------------------------------------------------
@op_test(lambda x, lo, hi: ops.clip(x, lo, hi),
         constants=lambda s, kw: st.tuples(st.sampled_from([-1.0, None]), st.sampled_from([1.5, None])),
         avoid=lambda x, lo, hi: bool(np.any(np.abs(x - (lo or -9)) < KINK) or
                                      np.any(np.abs(x - (hi or 9)) < KINK)))
def test_clip(): pass


@op_test(lambda a, b, cond: ops.where(cond, a, b), n_args=2,
         constants=lambda s, kw: st.tuples(hnp.arrays(bool, np.broadcast_shapes(*s))))
def test_where(): pass


def test_relu_keeps_dtype_and_propagates_nan():
    y = ops.relu(Tensor(np.array([-1.0, np.nan, 0.0, 2.0], dtype=np.float32))).data
    assert y.dtype == np.float32 and np.isnan(y[1]) and y[[0, 2, 3]].tolist() == [0.0, 0.0, 2.0]
