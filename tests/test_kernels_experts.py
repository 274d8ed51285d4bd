"""The experts' kernels and fused ops.

1. Numba and NumPy twins agree: exactly where both compute in the same order
   (Hadamard and bias + activation outputs, im2col/col2im, max-pooling), within the
   stated bound for the bias-gradient sums and for attention.
2. Every fused op (adaref.experts.fused) passes the op-test factory (gradient oracle in
   float64, no mutation, float32 kept) on both backends, and so does its composed
   definition in core ops.
3. Fused equals composed (values and gradients).
"""
import functools
import gc
import weakref
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adaref import Tensor, kernels, ops
from adaref.experts import fused
from adaref.kernels import attention as katt
from adaref.kernels import conv as kconv
from adaref.kernels import hadamard as khad
from adaref.tensor import ShapeError, dense
from opcheck import op_test

KINK = 1e-3
DTYPES = [np.float64, np.float32]


def run_both(fn, *arrays):
    """fn(*copies) on each backend; returns {backend: list of the arrays after the call}."""
    out = {}
    for backend in kernels.BACKENDS:
        copies = [a.copy() for a in arrays]
        with kernels.use_backend(backend):
            fn(*copies)
        out[backend] = copies
    return out


def arrays(draw, dtype, *shapes):
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


# ============================================================================
# 1. twins agree
# ============================================================================
# n up to 600: the loops run blocks of khad.ROWS = 256 rows in parallel, so one, two and
# three blocks (the last one partial) are drawn
@given(st.data(), st.integers(1, 600), st.integers(1, 9), st.sampled_from([0, 1, 2]),
       st.sampled_from(DTYPES))
def test_hadamard_twins_agree_exactly(data, n, m, mode, dtype):
    z, u, g = arrays(data.draw, dtype, (n, m), (n, m), (n, m))
    (b,) = arrays(data.draw, dtype, (m,))
    empty = lambda *s: np.zeros(s, dtype=dtype)  # noqa: E731
    fwd = run_both(lambda out: khad.hadamard_forward(out, z, u, b, mode), empty(n, m))
    np.testing.assert_array_equal(fwd["numba"][0], fwd["numpy"][0])
    expected = u * (z + b) if mode == 2 else u * z + (b if mode == 1 else 0)
    np.testing.assert_allclose(fwd["numpy"][0], expected, rtol=1e-6)
    bwd = run_both(lambda gz, gu, gb: khad.hadamard_backward(gz, gu, gb, g, z, u, b, mode),
                   empty(n, m), empty(n, m), empty(m))
    for x, y in zip(bwd["numba"][:2], bwd["numpy"][:2]):
        np.testing.assert_array_equal(x, y)
    assert_sum_bound(bwd["numba"][2], bwd["numpy"][2], g if mode == 1 else g * u, dtype)


def assert_sum_bound(a, b, terms, dtype):
    """|a - b| <= 2 N eps sum|terms| for two sums over the N rows of ``terms``."""
    eps = np.finfo(dtype).eps
    bound = 2 * len(terms) * eps * np.abs(terms.astype(np.float64)).sum(axis=0)
    assert np.all(np.abs(a.astype(np.float64) - b) <= bound + np.finfo(dtype).tiny)


@given(st.data(), st.integers(1, 600), st.integers(1, 9), st.sampled_from([0, 1]),
       st.sampled_from(DTYPES))
def test_bias_act_twins_agree_exactly(data, n, m, act, dtype):
    z, g = arrays(data.draw, dtype, (n, m), (n, m))
    (b,) = arrays(data.draw, dtype, (m,))
    fwd = run_both(lambda out: khad.bias_act_forward(out, z, b, act), np.zeros_like(z))
    np.testing.assert_array_equal(fwd["numba"][0], fwd["numpy"][0])
    y = fwd["numpy"][0]
    bwd = run_both(lambda gz, gb: khad.bias_act_backward(gz, gb, g, y, act),
                   np.zeros_like(z), np.zeros(m, dtype))
    np.testing.assert_array_equal(bwd["numba"][0], bwd["numpy"][0])
    assert_sum_bound(bwd["numba"][1], bwd["numpy"][1], bwd["numpy"][0], dtype)
    # a linear layer's bias gradient alone (gz = g): the same row-order sum
    sums = run_both(lambda gb: khad.column_sum(gb, g), np.zeros(m, dtype))
    assert_sum_bound(sums["numba"][0], sums["numpy"][0], g, dtype)
    if act == khad.ACT_LINEAR:
        np.testing.assert_array_equal(sums["numba"][0], bwd["numba"][1])


@given(st.data(), st.integers(1, 3), st.integers(1, 7), st.integers(1, 3), st.integers(1, 4),
       st.sampled_from(DTYPES))
def test_im2col_col2im_twins_agree_exactly_and_are_adjoint(data, nb, length, c, width, dtype):
    pad_left = data.draw(st.integers(0, width - 1))
    t_out = data.draw(st.integers(1, length + width - 1))
    x, gcols = arrays(data.draw, dtype, (nb, length, c), (nb, t_out, width * c))
    cols = run_both(lambda out: kconv.im2col(out, x, pad_left),
                    np.full((nb, t_out, width * c), np.nan, dtype))
    np.testing.assert_array_equal(cols["numba"][0], cols["numpy"][0])
    gx = run_both(lambda out: kconv.col2im(out, gcols, pad_left),
                  np.full((nb, length, c), np.nan, dtype))
    np.testing.assert_array_equal(gx["numba"][0], gx["numpy"][0])
    # adjoint: <im2col(x), gcols> == <x, col2im(gcols)>
    lhs = np.sum(cols["numpy"][0].astype(np.float64) * gcols)
    rhs = np.sum(x.astype(np.float64) * gx["numpy"][0])
    np.testing.assert_allclose(lhs, rhs, rtol=1e-5, atol=1e-5)


@given(st.data(), st.integers(1, 3), st.integers(1, 8), st.integers(1, 3), st.integers(1, 4),
       st.sampled_from(DTYPES))
def test_maxpool_twins_agree_exactly_first_wins_ties(data, nb, length, c, p, dtype):
    p = min(p, length)
    t_out = length // p
    (x,) = arrays(data.draw, dtype, (nb, length, c))
    x = np.round(x, 0)                                  # many ties
    (g,) = arrays(data.draw, dtype, (nb, t_out, c))
    fwd = run_both(lambda y, i: kconv.maxpool_forward(y, i, x, p),
                   np.zeros((nb, t_out, c), dtype), np.zeros((nb, t_out, c), np.int64))
    for a, b in zip(fwd["numba"], fwd["numpy"]):
        np.testing.assert_array_equal(a, b)
    windows = x[:, :t_out * p].reshape(nb, t_out, p, c)
    np.testing.assert_array_equal(fwd["numpy"][0], windows.max(axis=2))
    np.testing.assert_array_equal(fwd["numpy"][1], windows.argmax(axis=2))  # first of ties
    index = fwd["numpy"][1]
    bwd = run_both(lambda gx: kconv.maxpool_backward(gx, g, index, p),
                   np.full((nb, length, c), np.nan, dtype))
    np.testing.assert_array_equal(bwd["numba"][0], bwd["numpy"][0])
    np.testing.assert_allclose(bwd["numpy"][0].sum(), g.sum(), rtol=1e-5, atol=1e-5)


@given(st.data(), st.integers(1, 3), st.integers(1, 17), st.integers(1, 3), st.integers(1, 4),
       st.sampled_from(DTYPES))   # F up to 17: padded to 8, 16 (none at 8, 16) and 24 columns
def test_attention_twins_agree_within_bound(data, nb, nf, nh, dh, dtype):
    """Different summation orders: the twins differ by a few ulps of the output scale
    (the stated bound is 2 max(F, dh) eps * sum|terms|; 1e-12 / 1e-5 relative here)."""
    q, k, v, go = arrays(data.draw, dtype, *[(nb, nf, nh, dh)] * 4)
    mask = np.asarray(data.draw(hnp.arrays(bool, (nb, nf))))
    mask[:, data.draw(st.integers(0, nf - 1))] = True
    empty = lambda *s: np.zeros(s, dtype=dtype)  # noqa: E731
    fwd = run_both(lambda o, a: katt.attention_forward(o, a, q, k, v, mask, 0.7),
                   empty(nb, nf, nh, dh), empty(nb, nh, nf, nf))
    bwd = run_both(lambda gq, gk, gv: katt.attention_backward(gq, gk, gv, go, q, k, v, mask, 0.7),
                   *[empty(nb, nf, nh, dh)] * 3)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    for x, y in list(zip(fwd["numba"], fwd["numpy"])) + list(zip(bwd["numba"], bwd["numpy"])):
        scale = max(1.0, float(np.abs(y).max()))
        np.testing.assert_allclose(x, y, rtol=0, atol=rtol * scale)
    for backend in kernels.BACKENDS:
        a = fwd[backend][1]
        assert np.all(a[~np.broadcast_to(mask[:, None, None, :], a.shape)] == 0)
        np.testing.assert_allclose(a.sum(axis=-1), 1, rtol=1e-5)
        with kernels.use_backend(backend):      # a=None: the same output, nothing saved
            o = empty(nb, nf, nh, dh)
            katt.attention_forward(o, None, q, k, v, mask, 0.7)
        np.testing.assert_array_equal(o, fwd[backend][0])


@given(st.data(), st.integers(1, 70), st.integers(1, 17), st.integers(1, 3), st.integers(1, 4),
       st.sampled_from(DTYPES))
def test_attention_backward_recomputes_the_forwards_probabilities_exactly(data, nb, nf, nh, dh, dtype):
    """The backward kernel keeps no probabilities from the forward: it recomputes them.
    On each backend they are bit-identical to what the forward writes into ``a``, and
    the gradients bit-identical to the VJP formula applied to that saved ``a``."""
    import numba

    q, k, v, go = arrays(data.draw, dtype, *[(nb, nf, nh, dh)] * 4)
    mask = np.asarray(data.draw(hnp.arrays(bool, (nb, nf))))
    mask[:, data.draw(st.integers(0, nf - 1))] = True
    for backend in kernels.BACKENDS:
        with kernels.use_backend(backend):
            o, a = np.empty_like(q), np.empty((nb, nh, nf, nf), dtype)
            katt.attention_forward(o, a, q, k, v, mask, 0.7)
            grads = [np.empty_like(q) for _ in range(3)]
            katt.attention_backward(*grads, go, q, k, v, mask, 0.7)
        if backend == "numpy":
            np.testing.assert_array_equal(katt._probabilities_numpy(q, k, mask, 0.7), a)
            goh = go.transpose(0, 2, 1, 3)                   # the VJP from the saved a
            qh, kh, vt = q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3), v.transpose(0, 2, 3, 1)
            ga = np.matmul(goh, vt)
            gs = a * (ga - (ga * a).sum(axis=-1, keepdims=True))
            gs *= 0.7
            expected = [np.matmul(gs, kh).transpose(0, 2, 1, 3),
                        np.matmul(gs.transpose(0, 1, 3, 2), qh).transpose(0, 2, 1, 3),
                        np.matmul(a.transpose(0, 1, 3, 2), goh).transpose(0, 2, 1, 3)]
            for got, want in zip(grads, expected):
                np.testing.assert_array_equal(got, want)
        else:                       # the routine both Numba kernels call, stored as a is
            nq = katt.padded(nf)                             # query columns, zero-padded
            st_, qt, m, inv, pow2 = (np.empty((nf, nq), dtype), np.zeros((dh, nq), dtype),
                                     np.empty(nq, dtype), np.empty(nq, dtype), np.empty(nf * nq, dtype))
            for b in {0, nb - 1}:
                for h in range(nh):
                    katt.probabilities_loop(st_, qt, m, inv, pow2, q, k, mask, 0.7, b, h)
                    np.testing.assert_array_equal(st_[:, :nf].T, a[b, h])
            if isinstance(katt.probabilities_loop, numba.core.registry.CPUDispatcher):  # JIT on
                assert not katt.probabilities_loop.targetoptions.get("fastmath")


@pytest.mark.parametrize("backend", kernels.BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding,act", [((1, 1), "relu"), ((0, 0), "linear")])
def test_conv_and_pool_keep_no_windows_and_the_smallest_index(backend, dtype, padding, act):
    """Conv1dAct keeps x, not its (B, T, K*C) windows: the backward builds them again
    (im2col copies), so values and gradients are those of the saved-windows formula to
    the last bit. MaxPool1d keeps each window's winner in one byte, and the convolution
    only where its output is positive, so the output itself is freed once pooled."""
    rng = np.random.default_rng(5)
    nb, length, c, width, o, p = 33, 39, 4, 3, 5, 2
    x0, W0, b0 = (rng.standard_normal(s).astype(dtype) for s in [(nb, length, c), (width, c, o), (o,)])
    with kernels.use_backend(backend):
        x, W, b = (Tensor(a, requires_grad=True) for a in (x0, W0, b0))
        h = fused.conv1d_act(x, W, b, padding, act)
        y = fused.maxpool1d(h, p)
        windows = nb * (length + sum(padding) - width + 1) * width * c
        for ctx in (h._ctx, y._ctx):
            assert all(v.size < windows for v in vars(ctx).values() if isinstance(v, np.ndarray))
        assert y._ctx.index.dtype == np.uint8
        h_values, held = h.data.copy(), weakref.ref(h.data)
        del h                       # the convolution keeps where y > 0, the pooling the winners
        gc.collect()
        assert held() is None
        g = rng.standard_normal(y.shape).astype(dtype)
        y.backward(g)
        # the saved-windows formula, with the kernels directly
        t_out = length + sum(padding) - width + 1
        cols = np.empty((nb, t_out, width * c), dtype=dtype)
        khad_act = fused.FUSED_ACTIVATIONS[act]
        kconv.im2col(cols, x0, padding[0])
        z = cols.reshape(nb * t_out, width * c) @ W0.reshape(width * c, o)
        khad.bias_act_forward(z, z, b0, khad_act)
        pooled, index = np.empty(y.shape, dtype), np.empty(y.shape, np.int64)
        kconv.maxpool_forward(pooled, index, z.reshape(nb, t_out, o), p)
        gh = np.empty((nb, t_out, o), dtype)
        kconv.maxpool_backward(gh, g, index, p)
        gz, gb = np.empty((nb * t_out, o), dtype), np.empty(o, dtype)
        khad.bias_act_backward(gz, gb, gh.reshape(nb * t_out, o), z, khad_act)
        gcols = (gz @ W0.reshape(width * c, o).T).reshape(cols.shape)
        gx = np.empty_like(x0)
        kconv.col2im(gx, gcols, padding[0])
        gW = (cols.reshape(nb * t_out, width * c).T @ gz).reshape(W0.shape)
    for got, want in [(h_values, z.reshape(h_values.shape)), (y.data, pooled), (x.grad, gx), (W.grad, gW),
                      (b.grad, gb)]:
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("backend", kernels.BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["linear", "relu"])
def test_projected_attention_is_the_unfused_chain_to_the_last_bit_and_keeps_no_qkv(backend, dtype, act):
    """Three linear_act, reshape and attention, as the MHSA expert ran them before: the
    same output and the same gradient for x and every weight, bit for bit (x's three
    gradients added as the engine adds them), in a full and in a pruned pass; the op
    keeps x, not q, k and v."""
    rng = np.random.default_rng(11)
    nb, nf, d, heads, dh = 37, 39, 16, 2, 8
    arrays0 = [rng.standard_normal(s).astype(dtype) for s in
               [(nb, nf, d)] + [(d, heads * dh), (heads * dh,)] * 3]
    go = rng.standard_normal((nb, nf, heads, dh)).astype(dtype)

    def unfused(x, Wq, bq, Wk, bk, Wv, bv):
        q, k, v = (ops.reshape(fused.linear_act(x, W, b, act), (nb, nf, heads, dh))
                   for W, b in ((Wq, bq), (Wk, bk), (Wv, bv)))
        return fused.attention(q, k, v)

    def projected(x, Wq, bq, Wk, bk, Wv, bv):
        return fused.projected_attention(x, Wq, bq, Wk, bk, Wv, bv, heads, act)

    for inputs in (None, [0], [1, 4]):             # full pass; pruned to x; to Wq and bk
        results = []
        for fn in (projected, unfused):
            base = Tensor(arrays0[0], requires_grad=True)
            x = base * 1.0                          # an intermediate, as the expert's input is
            ts = [x] + [Tensor(a, requires_grad=True) for a in arrays0[1:]]
            with kernels.use_backend(backend):
                o = fn(*ts)
                if fn is projected:
                    kept = [v for v in vars(o._ctx).values() if isinstance(v, np.ndarray)]
                    assert sum(v.size for v in kept) <= arrays0[0].size + nb * nf
                leaves = [base] + ts[1:]
                o.backward(go, inputs=None if inputs is None else [leaves[i] for i in inputs])
            results.append([o.data] + [t.grad for t in leaves])
        for got, want in zip(*results):
            assert (got is None) == (want is None)
            if got is not None:
                assert got.dtype == dtype
                np.testing.assert_array_equal(got, want)


def test_exp_nonpositive_within_two_ulp_and_exact_zero_below_its_range():
    import numba

    from adaref.kernels.expm import exp_nonpositive

    run = numba.njit(lambda t, buf: exp_nonpositive(t, buf, len(t)))
    x = -np.concatenate([np.linspace(0, 40, 20001), np.geomspace(1e-300, 708, 5001)])
    t = x.copy()
    run(t, np.empty(len(t)))
    ulps = np.abs(t - np.exp(x)) / (np.exp(x) * np.finfo(np.float64).eps)
    assert ulps.max() <= 2
    special = np.array([-np.inf, -708.5, -1000.0, np.nan, -0.0])
    run(special, np.empty(5))
    assert special[:3].tolist() == [0.0, 0.0, 0.0] and np.isnan(special[3]) and special[4] == 1.0


def test_exp_nonpositive_float32_within_two_ulp_of_the_exact_exp():
    """The float32 routine (float32 arithmetic, degree 7) against the exact exp of each
    float32 input, in float32 ulps at the result, over [-87, 0] densely and
    geometrically down to the smallest subnormal; 0 below -87; the Python body (JIT
    off) gives the same bits as the compiled one."""
    import numba

    from adaref.kernels.expm import exp_nonpositive

    run = numba.njit(lambda t, buf: exp_nonpositive(t, buf, len(t)))
    x = (-np.concatenate([np.linspace(0, 87, 200001), np.geomspace(1e-45, 87, 50001)])).astype(np.float32)
    t = x.copy()
    run(t, np.empty_like(t))
    assert t.dtype == np.float32
    exact = np.exp(x.astype(np.float64))
    ulps = np.abs(t - exact) / np.spacing(exact.astype(np.float32)).astype(np.float64)
    assert ulps.max() <= 2
    special = np.array([-np.inf, -87.01, -1000.0, np.nan, -0.0], np.float32)
    run(special, np.empty_like(special))
    assert special[:3].tolist() == [0.0, 0.0, 0.0] and np.isnan(special[3]) and special[4] == 1.0
    some = x[::997].copy()
    exp_nonpositive(some, np.empty_like(some), len(some))            # the Python body
    np.testing.assert_array_equal(some, t[::997])


# ============================================================================
# 2. every fused op, and its composed definition, through the op-test factory
# ============================================================================
def on(backend, fn):
    """fn run under a backend (the oracle calls it many times, each inside the switch)."""
    def run(*args, **kwargs):
        with kernels.use_backend(backend):
            return fn(*args, **kwargs)
    return run


@st.composite
def linear_shapes(draw, with_u=False):
    lead = draw(hnp.array_shapes(min_dims=1, max_dims=2, max_side=3))
    k, m = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    shapes = (lead + (k,), (k, m)) + ((lead + (m,),) if with_u else ()) + ((m,),)
    return shapes


def near_relu_kink(a, W, b, act="linear"):
    return act == "relu" and np.min(np.abs(a @ W + b)) < KINK


def conv_kwargs(shapes):
    length, width = shapes[0][1], shapes[1][0]
    return st.tuples(st.integers(0, 2), st.integers(0, 2)).filter(
        lambda p: length + sum(p) >= width).flatmap(
        lambda p: st.fixed_dictionaries({"padding": st.just(p),
                                         "act": st.sampled_from(["linear", "relu"])}))


@st.composite
def conv_shapes(draw):
    nb, length, c = draw(st.integers(1, 2)), draw(st.integers(1, 5)), draw(st.integers(1, 3))
    width, o = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return (nb, length, c), (width, c, o), (o,)


def conv_near_kink(x, W, b, padding, act):
    if act != "relu":
        return False
    y = fused.conv1d_act_composed(Tensor(x), Tensor(W), Tensor(b), padding, "linear").data
    return np.min(np.abs(y)) < KINK


@st.composite
def attention_shapes(draw):
    s = (draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(1, 2)),
         draw(st.integers(1, 3)))
    return s, s, s


def attention_mask(shapes, kwargs):
    nb, nf = shapes[0][:2]
    return hnp.arrays(bool, (nb, nf)).map(lambda m: (m | (np.arange(nf) == 0),))


@st.composite
def projected_attention_shapes(draw):
    nb, nf, d = draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    heads, dh = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    w, b = (d, heads * dh), (heads * dh,)
    return (nb, nf, d), w, b, w, b, w, b


def projected_attention_kwargs(shapes):
    heads = st.sampled_from([h for h in (1, 2) if shapes[1][1] % h == 0])
    return st.fixed_dictionaries({"heads": heads, "act": st.sampled_from(["linear", "relu"])})


def projected_attention_mask(shapes, kwargs):
    return attention_mask(shapes, kwargs)


def projected_near_relu_kink(x, Wq, bq, Wk, bk, Wv, bv, mask, heads, act):
    return any(near_relu_kink(x, W, b, act) for W, b in ((Wq, bq), (Wk, bk), (Wv, bv)))


@st.composite
def pool_shapes(draw):
    return ((draw(st.integers(1, 2)), draw(st.integers(1, 6)), draw(st.integers(1, 3))),)


def pool_kwargs(shapes):
    return st.fixed_dictionaries({"p": st.integers(1, shapes[0][1])})


def pool_ties(x, p):
    nb, length, c = x.shape
    w = np.sort(x[:, :length // p * p].reshape(nb, -1, p, c), axis=2)
    return p > 1 and np.min(np.diff(w, axis=2)) < KINK


OPS = {
    "linear_act": dict(
        fused=lambda a, W, b, act: fused.linear_act(a, W, b, act),
        composed=lambda a, W, b, act: fused.linear_act_composed(a, W, b, act),
        n_args=3, shapes=linear_shapes(),
        kwargs=lambda s: st.fixed_dictionaries({"act": st.sampled_from(["linear", "relu"])}),
        avoid=near_relu_kink),
    "hadamard_linear": dict(
        fused=lambda a, W, u, b, bias: fused.hadamard_linear(a, W, u, b, bias),
        composed=lambda a, W, u, b, bias: fused.hadamard_linear_composed(a, W, u, b, bias),
        n_args=4, shapes=linear_shapes(with_u=True),
        kwargs=lambda s: st.fixed_dictionaries({"bias": st.sampled_from(["outside", "inside"])})),
    "hadamard_linear_no_bias": dict(
        fused=lambda a, W, u: fused.hadamard_linear(a, W, u),
        composed=lambda a, W, u: fused.hadamard_linear_composed(a, W, u),
        n_args=3, shapes=linear_shapes(with_u=True).map(lambda s: s[:3])),
    "attention": dict(
        fused=lambda q, k, v, mask: fused.attention(q, k, v, mask),
        composed=lambda q, k, v, mask: fused.attention_composed(q, k, v, mask),
        n_args=3, shapes=attention_shapes(), constants=attention_mask),
    "projected_attention": dict(
        fused=lambda x, Wq, bq, Wk, bk, Wv, bv, mask, heads, act: fused.projected_attention(
            x, Wq, bq, Wk, bk, Wv, bv, heads, act, mask),
        composed=lambda x, Wq, bq, Wk, bk, Wv, bv, mask, heads, act: fused.projected_attention_composed(
            x, Wq, bq, Wk, bk, Wv, bv, heads, act, mask),
        n_args=7, shapes=projected_attention_shapes(), kwargs=projected_attention_kwargs,
        constants=projected_attention_mask, avoid=projected_near_relu_kink),
    "conv1d_act": dict(
        fused=lambda x, W, b, padding, act: fused.conv1d_act(x, W, b, padding, act),
        composed=lambda x, W, b, padding, act: fused.conv1d_act_composed(x, W, b, padding, act),
        n_args=3, shapes=conv_shapes(), kwargs=conv_kwargs, avoid=conv_near_kink),
    "maxpool1d": dict(
        fused=lambda x, p: fused.maxpool1d(x, p),
        composed=lambda x, p: fused.maxpool1d_composed(x, p),
        n_args=1, shapes=pool_shapes(), kwargs=pool_kwargs, avoid=pool_ties),
}


def _make_op_test(op, variant, backend):
    spec = OPS[op]
    fn = spec[variant] if variant == "composed" else on(backend, spec["fused"])

    @op_test(fn, n_args=spec["n_args"], shapes=spec["shapes"], kwargs=spec.get("kwargs"),
             constants=spec.get("constants"), avoid=spec.get("avoid"))
    def test(): pass
    if backend is None:
        return test

    @functools.wraps(test)
    def on_backend():          # the backward passes too, not only the forward
        with kernels.use_backend(backend):
            test()
    return on_backend


for _op in OPS:
    for _backend in kernels.BACKENDS:
        globals()[f"test_fused_{_op}_{_backend}"] = _make_op_test(_op, "fused", _backend)
    globals()[f"test_composed_{_op}"] = _make_op_test(_op, "composed", None)


# ============================================================================
# 3. fused equals composed
# ============================================================================
@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("backend", kernels.BACKENDS)
@given(data=st.data())
def test_fused_equals_composed(op, backend, data):
    """Same values and same gradients (to float64 rounding) for drawn shapes and inputs."""
    spec = OPS[op]
    shapes = data.draw(spec["shapes"])
    kw = data.draw(spec["kwargs"](shapes)) if "kwargs" in spec else {}
    consts = tuple(data.draw(spec["constants"](shapes, kw))) if "constants" in spec else ()
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1)))
    xs = [rng.standard_normal(s) for s in shapes]
    results = []
    for fn in (spec["fused"], spec["composed"]):
        ts = [Tensor(x, requires_grad=True) for x in xs]
        with kernels.use_backend(backend):                  # forward and backward
            out = fn(*ts, *consts, **kw)
            out.backward(np.cos(np.arange(out.size)).reshape(out.shape))
        results.append([out.data] + [dense(t.grad) for t in ts])
    for f, c in zip(*results):
        np.testing.assert_allclose(f, c, rtol=1e-12, atol=1e-12 * max(1.0, np.abs(c).max()))


# ============================================================================
# errors
# ============================================================================
def test_fused_ops_name_bad_shapes():
    t = lambda *s: Tensor(np.zeros(s))  # noqa: E731
    with pytest.raises(ShapeError, match=r"linear_act: a \(2, 3\) and W \(4, 5\)"):
        fused.linear_act(t(2, 3), t(4, 5), t(5))
    with pytest.raises(ShapeError, match=r"hadamard_linear: u has shape \(2, 4\)"):
        fused.hadamard_linear(t(2, 3), t(3, 5), t(2, 4))
    with pytest.raises(ShapeError, match="attention: q, k, v must share one shape"):
        fused.attention(t(1, 2, 1, 3), t(1, 2, 1, 3), t(1, 3, 1, 3))
    with pytest.raises(ValueError, match="example 0 has every key masked"):
        fused.attention(t(1, 2, 1, 3), t(1, 2, 1, 3), t(1, 2, 1, 3), np.zeros((1, 2), bool))
    with pytest.raises(ShapeError, match="shorter than the kernel width 4"):
        fused.conv1d_act(t(1, 2, 1), t(4, 1, 2), t(2), (0, 1))
    with pytest.raises(ShapeError, match=r"maxpool1d: .*x \(1, 2, 1\), p=3"):
        fused.maxpool1d(t(1, 2, 1), 3)
    with pytest.raises(ValueError, match="fused activation must be one of linear, relu"):
        fused.linear_act(t(2, 3), t(3, 5), t(5), "gelu")
