"""Numba kernels agree with their NumPy twins; the switch selects them."""
import os
import subprocess
import sys

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adaref import kernels, ops, Tensor


@st.composite
def scatter_case(draw):
    r, d, n = draw(st.integers(1, 6)), draw(st.integers(1, 5)), draw(st.integers(0, 30))
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    index = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, r - 1)))
    values = draw(hnp.arrays(dtype, (n, d), elements=st.floats(-1e3, 1e3, width=32)))
    return r, index, values


@given(scatter_case())
def test_scatter_add_rows_numba_equals_numpy_exactly(case):
    """Both add values[i] into out[index[i]] in the order of i: bit-identical results."""
    r, index, values = case
    outs = {}
    for backend in kernels.BACKENDS:
        out = np.zeros((r, values.shape[1]), dtype=values.dtype)
        with kernels.use_backend(backend):
            kernels.scatter_add_rows(out, index, values)
        outs[backend] = out
    np.testing.assert_array_equal(outs["numba"], outs["numpy"])
    expected = np.zeros_like(outs["numpy"], dtype=np.float64)
    for i, row in enumerate(index):
        expected[row] += values[i]
    np.testing.assert_allclose(outs["numpy"], expected, rtol=1e-6, atol=1e-3)


@given(scatter_case(), st.data())
def test_scatter_add_unique_rows_twins_agree_exactly(case, data):
    """out[index[i]] += values[i] for unique rows: one addition per element, so both
    twins give out + the rows' values exactly, and untouched rows keep their bits."""
    r, _, values = case
    n = min(len(values), r)
    index = np.array(data.draw(st.permutations(range(r)))[:n], dtype=np.int64)
    values = values[:n]
    start = data.draw(hnp.arrays(values.dtype, (r, values.shape[1]), elements=st.floats(-1e3, 1e3, width=32)))
    outs = {}
    for backend in kernels.BACKENDS:
        out = start.copy()
        with kernels.use_backend(backend):
            kernels.scatter_add_unique_rows(out, index, values)
        outs[backend] = out
    np.testing.assert_array_equal(outs["numba"], outs["numpy"])
    expected = start.copy()
    for i, row in enumerate(index):
        expected[row] = start[row] + values[i]
    np.testing.assert_array_equal(outs["numpy"], expected)


def test_embedding_backward_is_identical_on_both_backends():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, size=(256, 8))
    grads = {}
    for backend in kernels.BACKENDS:
        with kernels.use_backend(backend):
            w = Tensor(rng.normal(size=(50, 4)) * 0 + 1.0, requires_grad=True)
            (ops.embedding(w, ids) * np.arange(4.0)).sum().backward()
            grads[backend] = w.grad
    np.testing.assert_array_equal(grads["numba"].rows, grads["numpy"].rows)
    np.testing.assert_array_equal(grads["numba"].values, grads["numpy"].values)


def test_use_backend_restores_and_rejects_unknown_names():
    before = kernels.backend()
    with kernels.use_backend("numpy"):
        assert kernels.backend() == "numpy"
    assert kernels.backend() == before
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        with kernels.use_backend("cuda"):
            pass


@pytest.mark.parametrize("value,expected", [("0", "numpy"), ("1", "numba"), (None, "numba")])
def test_environment_switch(value, expected):
    env = {k: v for k, v in os.environ.items() if k != "ADAREF_NUMBA"}
    if value is not None:
        env["ADAREF_NUMBA"] = value
    out = subprocess.run([sys.executable, "-c", "from adaref import kernels; print(kernels.backend())"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected


@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=2, max_side=9),
                  elements=st.floats(-5, 5)), st.booleans())
def test_layer_norm_twins_agree_and_both_pass_the_oracle(x, affine):
    from hypothesis import assume

    import adaref

    assume(np.all(x.std(axis=-1) > 0.05))
    d = x.shape[-1]
    params = (1.0 + np.sin(np.arange(d)), np.cos(np.arange(d))) if affine else ()
    g = np.cos(np.arange(x.size)).reshape(x.shape)
    out = {}
    for backend in kernels.BACKENDS:
        with kernels.use_backend(backend):
            t, ps = Tensor(x, requires_grad=True), [Tensor(p, requires_grad=True) for p in params]
            y = ops.layer_norm(t, 1e-5, *ps)
            y.backward(g)
            out[backend] = (y.data, t.grad) + tuple(p.grad for p in ps)
            adaref.gradcheck(lambda *a: ops.layer_norm(a[0], 1e-5, *a[1:]), x, *params)
    for a, b in zip(out["numba"], out["numpy"]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@given(st.integers(1, 700), st.integers(1, 9), st.integers(0, 2**31 - 1),
       st.sampled_from([np.float64, np.float32]))
def test_layer_norm_backward_twins_agree_over_several_row_blocks(n, d, seed, dtype):
    """Up to 700 rows: the loop sums ggain and gbias over blocks of 256 rows (one to
    three blocks); gx, ggain and gbias agree with the NumPy twin within the module's
    bound (D eps on a row's scale for gx, N eps on the sums of |terms|)."""
    from adaref.kernels import norm as knorm

    rng = np.random.default_rng(seed)
    x, g = rng.normal(size=(n, d)).astype(dtype), rng.normal(size=(n, d)).astype(dtype)
    gain, bias = rng.normal(size=d).astype(dtype), rng.normal(size=d).astype(dtype)
    y, xhat, inv = np.empty_like(x), np.empty_like(x), np.empty((n, 1), dtype)
    knorm._layer_norm_forward_numpy(y, xhat, inv, x, gain, bias, 1e-5)
    res = {}
    for backend in kernels.BACKENDS:
        gx, gg, gb = np.empty_like(x), np.empty(d, dtype), np.empty(d, dtype)
        with kernels.use_backend(backend):
            kernels.layer_norm_backward(gx, gg, gb, g, gain, xhat, inv)
        res[backend] = gx, gg, gb
    eps = np.finfo(dtype).eps
    row_scale = inv * (np.abs(g * gain).sum(axis=1, keepdims=True) + 1)            # (n, 1)
    assert np.all(np.abs(res["numba"][0] - res["numpy"][0]) <= 4 * d * eps * row_scale)
    for k, terms in ((1, g * xhat), (2, g)):
        bound = 2 * n * eps * np.abs(terms.astype(np.float64)).sum(axis=0)
        assert np.all(np.abs(res["numba"][k].astype(np.float64) - res["numpy"][k]) <= bound)


@given(scatter_case(), st.data())
def test_gather_scaled_dot_twins_agree_within_the_stated_bound(case, data):
    """The combine's fused backward: out = scale * g[rows] identical on both twins; the
    dots (summed in different orders) within C * eps * sum |g * values| of each other and
    of a float64 sum; a NaN in a row's values makes that row's dot NaN (the loop's
    reassociation keeps NaN)."""
    r, _, g = case
    n = min(len(g), r)
    rows = np.array(data.draw(st.permutations(range(r)))[:n], dtype=np.int64)
    g = np.concatenate([g, np.ones((max(r - len(g), 0), g.shape[1]), g.dtype)])[:r]      # (B, C)
    c = g.shape[1]
    values = data.draw(hnp.arrays(g.dtype, (n, c), elements=st.floats(-1e3, 1e3, width=32)))
    scale = data.draw(hnp.arrays(g.dtype, (n,), elements=st.floats(-2, 2, width=32)))
    poison = n > 0 and data.draw(st.booleans())
    if poison:
        values[0, 0] = np.nan
    res = {}
    for backend in kernels.BACKENDS:
        out, dots = np.empty((n, c), g.dtype), np.empty(n, g.dtype)
        with kernels.use_backend(backend):
            kernels.gather_scaled_dot(out, dots, g, rows, scale, values)
        res[backend] = out, dots
    np.testing.assert_array_equal(res["numba"][0], res["numpy"][0])
    np.testing.assert_array_equal(res["numpy"][0], g[rows] * scale[:, None])
    prods = g[rows].astype(np.float64) * values                                      # (n, C)
    exact, bound = prods.sum(1), c * np.finfo(g.dtype).eps * np.abs(prods).sum(1) + 1e-300
    for backend in kernels.BACKENDS:
        dots = res[backend][1].astype(np.float64)
        if poison:
            assert np.isnan(dots[0])
            dots, ok = dots[1:], slice(1, None)
        else:
            ok = slice(None)
        assert np.all(np.abs(dots - exact[ok]) <= bound[ok] + np.abs(exact[ok]) * np.finfo(g.dtype).eps)


@pytest.mark.parametrize("backend", kernels.BACKENDS)
def test_layer_norm_propagates_nan_and_inf(backend):
    # the loop is compiled with fast-math reassociation only: NaN/Inf must still show
    x = np.arange(12.0).reshape(3, 4)
    x[1, 2], x[2, 0] = np.nan, np.inf
    with kernels.use_backend(backend):
        y = ops.layer_norm(Tensor(x), 1e-5, Tensor(np.ones(4)), Tensor(np.zeros(4))).data
    assert np.all(np.isfinite(y[0])) and np.all(np.isnan(y[1])) and not np.any(np.isfinite(y[2]))


# (variable, adaref's default, the library that reads it at load): set before that library
# loads, never over the user's value, never after it was imported
THREAD_DEFAULTS = [("OPENBLAS_THREAD_TIMEOUT", "4", "numpy"), ("OMP_WAIT_POLICY", "PASSIVE", "numba")]


@pytest.mark.parametrize("variable,default,library", THREAD_DEFAULTS)
@pytest.mark.parametrize("case", ["unset", "user value", "library first"])
def test_thread_defaults(variable, default, library, case):
    env = {k: v for k, v in os.environ.items() if k != variable}
    if case == "user value":
        env[variable] = "20"
    first = library if case == "library first" else "adaref"
    code = f"import {first}, adaref, os; print(os.environ.get({variable!r}))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == {"unset": default, "user value": "20", "library first": "None"}[case]


@pytest.mark.parametrize("backend", kernels.BACKENDS)
def test_layer_norm_without_grad_gives_the_same_output_and_saves_nothing(backend):
    from adaref import no_grad
    from adaref.ops import LayerNorm

    rng = np.random.default_rng(3)
    x, gain, bias = rng.normal(size=(4, 3, 5)), rng.normal(size=5), rng.normal(size=5)
    with kernels.use_backend(backend):
        y = ops.layer_norm(Tensor(x, requires_grad=True), 1e-5, Tensor(gain), Tensor(bias))
        with no_grad():
            z = ops.layer_norm(Tensor(x, requires_grad=True), 1e-5, Tensor(gain), Tensor(bias))
        ctx = LayerNorm([Tensor(x)])                # no input needs a gradient
        ctx.forward(x, gain, bias, eps=1e-5)
    np.testing.assert_array_equal(y.data, z.data)
    assert y._ctx.xhat is not None and ctx.xhat is None


def test_parallel_row_kernels_give_the_same_bits_on_one_thread_and_on_several():
    """The layer-norm kernels, the row gather/scatter, the fused combine-norm, the
    Hadamard / bias + activation, im2col and max-pooling kernels run rows in parallel; each row is computed by
    one iteration alone (the bias sums on one thread, in row order; layer norm's gain
    and bias sums over fixed blocks), so the thread count cannot change a bit."""
    numba = pytest.importorskip("numba")
    threads = min(4, numba.config.NUMBA_NUM_THREADS)
    if threads < 2:
        pytest.skip("Numba has a single thread here")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3001, 16)).astype(np.float32)
    gain, bias = rng.normal(size=16).astype(np.float32), rng.normal(size=16).astype(np.float32)
    rows = np.sort(rng.choice(3001, 1700, replace=False)).astype(np.int64)
    scale = rng.normal(size=1700).astype(np.float32)
    vals = rng.normal(size=(1700, 16)).astype(np.float32)

    def run():
        y, inv = np.empty_like(x), np.empty((len(x), 1), np.float32)
        xhat = np.empty_like(x)
        kernels.layer_norm_forward(y, xhat, inv, x, gain, bias, 1e-5)
        lgx, lgg, lgb = np.empty_like(x), np.empty(16, np.float32), np.empty(16, np.float32)
        kernels.layer_norm_backward(lgx, lgg, lgb, y, gain, xhat, inv)
        gathered, scaled = np.empty((1700, 16), np.float32), np.empty((1700, 16), np.float32)
        kernels.gather_rows(gathered, x, rows)
        kernels.gather_rows_scaled(scaled, x, rows, scale)
        fused_scaled, fused_dots = np.empty((1700, 16), np.float32), np.empty(1700, np.float32)
        kernels.gather_scaled_dot(fused_scaled, fused_dots, x, rows, scale, vals)
        out, unit = x.copy(), x.copy()
        kernels.scatter_add_scaled(out, rows, scale, vals)
        kernels.scatter_add_unique_rows(unit, rows, vals)
        pos = np.full((3001, 1), -1, np.int64)
        pos[rows, 0] = np.arange(1700)
        fused = np.empty((3001, 16), np.float32)
        kernels.combine_norm(fused, x, np.ones((3001, 1), np.float32), pos, (vals,), gain, bias, 1e-5)
        from adaref.kernels import hadamard as khad
        had, gz, gu, gb = (np.empty_like(x), np.empty_like(x), np.empty_like(x), np.empty(16, np.float32))
        khad.hadamard_forward(had, x, x * 0.5, gain, khad.BIAS_INSIDE)
        khad.hadamard_backward(gz, gu, gb, had, x, x * 0.5, gain, khad.BIAS_INSIDE)
        act, cs = np.empty_like(x), np.empty(16, np.float32)
        khad.bias_act_forward(act, x, bias, khad.ACT_RELU)
        khad.column_sum(cs, x)
        from adaref.kernels import conv as kconv
        x3 = x.reshape(3001, 4, 4)                                   # (B, L, C)
        cols = np.empty((3001, 4, 12), np.float32)                   # width 3, pad 1
        kconv.im2col(cols, x3, 1)
        pooled, index = np.empty((3001, 2, 4), np.float32), np.empty((3001, 2, 4), np.int8)
        kconv.maxpool_forward(pooled, index, x3, 2)
        routed = np.empty_like(x3)
        kconv.maxpool_backward(routed, pooled, index, 2)
        return (y, xhat, inv, lgx, lgg, lgb, gathered, scaled, fused_scaled, fused_dots, out, unit, fused,
                had, gz, gu, gb, act, cs, cols, pooled, index, routed)

    before = numba.get_num_threads()
    with kernels.use_backend("numba"):
        try:
            numba.set_num_threads(1)
            one = run()
            numba.set_num_threads(threads)
            many = run()
        finally:
            numba.set_num_threads(before)
    for a, b in zip(one, many):
        np.testing.assert_array_equal(a, b)


@st.composite
def score_rows(draw):
    """(n, c) scores with ties (small integers), some -inf, and rows that are all -inf,
    hold a NaN or a +inf."""
    n, c = draw(st.integers(1, 12)), draw(st.integers(1, 7))
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    x = draw(hnp.arrays(dtype, (n, c), elements=st.one_of(
        st.integers(-3, 3).map(float), st.floats(-50, 50, width=32), st.just(-np.inf))))
    special = draw(st.sampled_from([None, np.nan, np.inf, "all -inf"]))
    if special is not None:
        i = draw(st.integers(0, n - 1))
        if special == "all -inf":
            x[i] = -np.inf
        else:
            x[i, draw(st.integers(0, c - 1))] = special
    return x


@given(score_rows(), st.data())
def test_row_softmax_and_topk_twins_agree(x, data):
    k = data.draw(st.integers(1, x.shape[1]))
    out = {}
    for backend in kernels.BACKENDS:
        y, mask = np.empty_like(x), np.empty(x.shape, bool)
        with kernels.use_backend(backend):
            bad, nan_rows = kernels.softmax_rows(y, x), kernels.topk_rows(mask, x, k)
        out[backend] = y, bad, mask, nan_rows
    finite = np.isfinite(x.max(axis=1))
    assert out["numba"][1] == out["numpy"][1] == int((~finite).sum())
    assert out["numba"][3] == out["numpy"][3] == int(np.isnan(x).any(axis=1).sum())
    ok = ~np.isnan(x).any(axis=1)
    np.testing.assert_array_equal(out["numba"][2][ok], out["numpy"][2][ok])
    assert np.all(out["numba"][2][ok].sum(axis=1) == k)
    # NumPy subtracts the max in the dtype, the loop in float64: exp turns an absolute
    # error of |x - max| * eps in its argument into that relative error
    xs = np.where(np.isfinite(x), x, 0).astype(np.float64)
    rtol = 4 * np.finfo(x.dtype).eps * (2 + np.ptp(xs))
    atol = 2 * np.finfo(x.dtype).tiny          # subnormal outputs keep fewer bits
    np.testing.assert_allclose(out["numba"][0][finite], out["numpy"][0][finite], rtol=rtol, atol=atol)
    # the definition: exp of the shifted scores over their sum, ties to the lowest index
    xf = x[finite].astype(np.float64)
    z = np.exp(xf - xf.max(axis=1, keepdims=True))
    np.testing.assert_allclose(out["numba"][0][finite], z / z.sum(axis=1, keepdims=True), rtol=rtol * 10,
                               atol=atol)
    for row, m in zip(x[ok], out["numba"][2][ok]):
        chosen = [j for j, _ in sorted(enumerate(row), key=lambda t: (-t[1], t[0]))[:k]]
        assert sorted(chosen) == np.flatnonzero(m).tolist()


def test_softmax_and_topk_on_2d_match_the_general_path_and_still_raise():
    x = np.random.default_rng(0).normal(size=(50, 5))
    x[3, 1] = -np.inf
    np.testing.assert_allclose(ops.softmax(Tensor(x)).data, ops.softmax(Tensor(x[None]), axis=-1).data[0],
                               rtol=1e-15)
    np.testing.assert_array_equal(ops.topk_mask(x, 2), ops.topk_mask(x[None], 2)[0])
    for value, word in ((np.nan, "NaN"), (np.inf, r"\+inf")):
        bad = x.copy()
        bad[7, 2] = value
        with pytest.raises(ValueError, match=f"softmax: a slice along axis 1 has {word}"):
            ops.softmax(Tensor(bad))
    with pytest.raises(ValueError, match="topk_mask: input contains NaN"):
        ops.topk_mask(np.where(np.arange(5) == 2, np.nan, x), 1)
