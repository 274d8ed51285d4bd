"""Optimisers: steps computed by hand, lazy row updates, checkpoint round trips, errors.

Hand-computed tests write the arithmetic out in comments with values chosen so that the
square roots are exact. They compare with ``rtol=1e-12`` (the code may order float
operations differently from the comment); properties that must hold bit for bit
(untouched rows, lazy = dense where they should agree, resume) use ``np.array_equal``.
"""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import brentq

from adaref.config import ConfigError
from adaref.io import load_npz, save_npz
from adaref.nn import Linear, Module, Parameter
from adaref.optim import (FTRL, OPTIMIZERS, SGD, Adam, GroupFTRL, StateDictError,
                          build_optimizer)
from adaref.tensor import RowSparseGrad

EPS = 1e-8


def close(actual, expected):
    np.testing.assert_allclose(actual, np.asarray(expected, dtype=float), rtol=1e-12, atol=1e-14)


def sparse(rows, values, shape, dtype=np.float64):
    return RowSparseGrad(np.asarray(rows, dtype=np.int64), np.asarray(values, dtype=dtype), shape)


def run(opt, p, grads):
    for g in grads:
        p.grad = g
        opt.step()


# =====================================================================================
# SGD
# =====================================================================================
def test_sgd_two_steps_by_hand():
    w = Parameter(np.array([1.0, -2.0, 0.5]))
    opt = SGD([w], lr=0.1)
    run(opt, w, [np.array([0.5, 1.0, -2.0])])
    close(w.data, [1 - 0.05, -2 - 0.1, 0.5 + 0.2])                 # w - 0.1 g
    run(opt, w, [np.array([1.0, 0.0, 1.0])])
    close(w.data, [0.95 - 0.1, -2.1, 0.7 - 0.1])
    assert opt.state_dict() == {"step": 2}


def test_sgd_momentum_two_steps_by_hand():
    w = Parameter(np.array([1.0, -2.0, 0.5]))
    opt = SGD([w], lr=0.1, momentum=0.9)
    run(opt, w, [np.array([0.5, 1.0, -2.0])])
    close(opt.state["b"]["0"], [0.5, 1.0, -2.0])                   # b1 = 0.9 * 0 + g1
    close(w.data, [0.95, -2.1, 0.7])
    run(opt, w, [np.array([1.0, 0.0, 1.0])])
    close(opt.state["b"]["0"], [0.45 + 1, 0.9, -1.8 + 1])          # b2 = 0.9 b1 + g2
    close(w.data, [0.95 - 0.145, -2.1 - 0.09, 0.7 + 0.08])         # w1 - 0.1 b2


def test_sgd_lazy_momentum_stops_untouched_rows_dense_keeps_them_moving():
    grads = [sparse([0], [[1.0, 2.0]], (2, 2)), sparse([1], [[1.0, 1.0]], (2, 2))]
    out = {}
    for mode in ("lazy", "dense"):
        w = Parameter(np.zeros((2, 2)))
        run(SGD([w], lr=1.0, momentum=0.5, sparse_update=mode), w, grads)
        out[mode] = w.data
    close(out["lazy"], [[-1.0, -2.0], [-1.0, -1.0]])               # row 0 not in batch 2
    close(out["dense"], [[-1.5, -3.0], [-1.0, -1.0]])              # row 0: b2 = 0.5 b1


# =====================================================================================
# Adam
# =====================================================================================
def test_adam_two_steps_by_hand():
    # beta1 = 1/2, beta2 = 3/4: 1 - beta1 = 1/2, 1 - beta2 = 1/4,
    # bias corrections 1 - beta1^2 = 3/4 and 1 - beta2^2 = 7/16.
    w = Parameter(np.array([1.0, -2.0, 0.5]))
    opt = Adam([w], lr=0.1, beta1=0.5, beta2=0.75, eps=EPS)
    run(opt, w, [np.array([2.0, -1.0, 0.5])])
    close(opt.state["m"]["0"], [1.0, -0.5, 0.25])                  # m1 = g1 / 2
    close(opt.state["v"]["0"], [1.0, 0.25, 0.0625])                # v1 = g1^2 / 4
    # m^ = m1 / (1/2) = g1, v^ = v1 / (1/4) = g1^2: step = lr g / (|g| + eps)
    w1 = [1 - 0.1 * 2 / (2 + EPS), -2 + 0.1 * 1 / (1 + EPS), 0.5 - 0.1 * 0.5 / (0.5 + EPS)]
    close(w.data, w1)
    run(opt, w, [np.array([2.0, 1.0, 0.5])])
    # m2 = m1/2 + g2/2 = [1.5, 0.25, 0.375];  m^ = m2 / (3/4) = [2, 1/3, 1/2]
    # v2 = 3 v1/4 + g2^2/4 = [1.75, 0.4375, 0.109375];  v^ = v2 / (7/16) = [4, 1, 1/4]
    close(opt.state["m"]["0"], [1.5, 0.25, 0.375])
    close(opt.state["v"]["0"], [1.75, 0.4375, 0.109375])
    close(w.data, [w1[0] - 0.1 * 2 / (2 + EPS),                     # sqrt(v^) = [2, 1, 1/2]
                   w1[1] - 0.1 * (1 / 3) / (1 + EPS),               # momentum: g flipped sign
                   w1[2] - 0.1 * 0.5 / (0.5 + EPS)])
    assert opt.step_count == 2


def test_adam_keras_epsilon_form_by_hand():
    # one step, beta1 = 1/2, beta2 = 3/4, eps = 1/2 (large, to make the forms differ)
    g = np.array([2.0, -1.0, 0.5])
    out = {}
    for form in ("algorithm1", "keras"):
        w = Parameter(np.zeros(3))
        run(Adam([w], lr=0.1, beta1=0.5, beta2=0.75, eps=0.5, epsilon_form=form), w, [g])
        out[form] = w.data
    # algorithm1: lr m^ / (sqrt(v^) + eps) = 0.1 g / (|g| + 0.5)
    close(out["algorithm1"], [-0.1 * 2 / 2.5, 0.1 * 1 / 1.5, -0.1 * 0.5 / 1.0])
    # keras: lr sqrt(1/4) / (1/2) = lr; m = g/2, sqrt(v) = |g|/2: 0.1 (g/2) / (|g|/2 + 0.5)
    close(out["keras"], [-0.1 * 1 / 1.5, 0.1 * 0.5 / 1.0, -0.1 * 0.25 / 0.75])


def test_adam_coupled_l2_by_hand():
    # loss gradient 0; L2 adds 2 * l2 * w = 0.5 w = [0.5, -1, 0.25]: first step lr sign
    w = Parameter(np.array([1.0, -2.0, 0.5]))
    opt = Adam([w], lr=0.1, beta1=0.5, beta2=0.75, eps=EPS, l2=0.25)
    run(opt, w, [np.zeros(3)])
    close(opt.state["m"]["0"], [0.25, -0.5, 0.125])                # (g + 0.5 w) / 2
    close(w.data, [1 - 0.1 * 0.5 / (0.5 + EPS), -2 + 0.1 * 1 / (1 + EPS),
                   0.5 - 0.1 * 0.25 / (0.25 + EPS)])


@given(seed=st.integers(0, 2**32 - 1), l2=st.floats(1e-4, 1.0), steps=st.integers(1, 4))
def test_adam_l2_is_exactly_the_gradient_of_l2_sum_w_squared(seed, l2, steps):
    """Coupled, not AdamW: Adam(l2) on g equals Adam(0) on g + 2 l2 w, bit for bit."""
    rng = np.random.default_rng(seed)
    w0 = rng.normal(size=(3, 2))
    a, b = Parameter(w0.copy()), Parameter(w0.copy())
    opt_a, opt_b = Adam([a], lr=0.01, l2=l2), Adam([b], lr=0.01)
    for _ in range(steps):
        g = rng.normal(size=(3, 2))
        a.grad, b.grad = g, g + (2.0 * l2) * b.data
        opt_a.step()
        opt_b.step()
    assert np.array_equal(a.data, b.data)


@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float32, np.float64]),
       form=st.sampled_from(["algorithm1", "keras"]), l2=st.sampled_from([0.0, 1e-3, 0.3]),
       size=st.integers(1, 9000), steps=st.integers(1, 3))
def test_adam_fused_update_is_the_rule_to_the_last_bit_on_both_backends(seed, dtype, form, l2, size,
                                                                        steps):
    """Adam's in-place kernel (blocks of 4096 elements in parallel; sizes up to 9000 give
    one to three blocks) gives the same weights and moments as Adam.rule, bit for bit, on
    both kernel backends and on both of Numba's paths (parallel, and the serial one taken
    below ``serial_below`` elements), float32 kept float32; the gradient is not modified."""
    from adaref import kernels
    from adaref.kernels import adam as kadam

    rng = np.random.default_rng(seed)
    w0 = rng.normal(size=size).astype(dtype)
    grads = [(rng.normal(size=size) * 10.0 ** rng.integers(-6, 2)).astype(dtype) for _ in range(steps)]
    kw = dict(lr=0.01, beta1=0.8, beta2=0.99, l2=l2, epsilon_form=form)
    results = []
    for backend, serial_below in (("numpy", 0), ("numba", 0), ("numba", 10 ** 9)):
        p = Parameter(w0.copy())
        opt = Adam([("w", p)], **kw)
        with kernels.use_backend(backend), pytest.MonkeyPatch.context() as patch:
            patch.setattr(kadam.adam_update, "serial_below", serial_below)
            for g in grads:
                p.grad = g.copy()
                opt.step()
                assert np.array_equal(p.grad, g)
        results.append((p.data, opt.state["m"]["w"], opt.state["v"]["w"]))
    w, m, v = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)       # the pure rule
    opt = Adam([("w", Parameter(w0.copy()))], **kw)
    for g in grads:
        opt.step_count += 1
        w, m, v = opt.rule(w, g, m, v)
    for got in results:
        for a, b in zip(got, (w, m, v)):
            assert a.dtype == dtype
            np.testing.assert_array_equal(a, b)


@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float32, np.float64]),
       form=st.sampled_from(["algorithm1", "keras"]), l2=st.sampled_from([0.0, 1e-3]),
       vocab=st.integers(1, 700), dim=st.integers(1, 5), steps=st.integers(1, 3))
def test_adam_row_sparse_kernel_is_the_rule_on_the_gathered_rows(seed, dtype, form, l2, vocab, dim,
                                                                 steps):
    """Lazy Adam's row kernel (blocks of 256 rows in parallel; up to 700 rows) updates the
    touched rows exactly as Adam.rule on the gathered rows scattered back, on both
    backends, and leaves every other row and its moments untouched."""
    from adaref import kernels

    rng = np.random.default_rng(seed)
    w0 = rng.normal(size=(vocab, dim)).astype(dtype)
    grads = []
    for _ in range(steps):
        rows = np.flatnonzero(rng.random(vocab) < rng.random())          # sorted, unique
        values = (rng.normal(size=(len(rows), dim)) * 10.0 ** rng.integers(-6, 2)).astype(dtype)
        grads.append(sparse(rows, values, (vocab, dim), dtype))
    kw = dict(lr=0.01, beta1=0.8, beta2=0.99, l2=l2, epsilon_form=form)
    results = []
    for backend in kernels.BACKENDS:
        p = Parameter(w0.copy())
        opt = Adam([("emb", p)], **kw)
        with kernels.use_backend(backend):
            for g in grads:
                p.grad = g
                opt.step()
        results.append((p.data, opt.state["m"]["emb"], opt.state["v"]["emb"]))
    w, m, v = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)       # the rule, row by row
    opt = Adam([("emb", Parameter(w0.copy()))], **kw)
    for g in grads:
        opt.step_count += 1
        new = opt.rule(w[g.rows], g.values, m[g.rows], v[g.rows])
        for a, b in zip((w, m, v), new):
            a[g.rows] = b
    for got in results:
        for a, b in zip(got, (w, m, v)):
            assert a.dtype == dtype
            np.testing.assert_array_equal(a, b)


def test_lazy_and_dense_adam_by_hand_differ_exactly_where_they_should():
    """Rows 0 and 2 in batch 1, rows 2 and 3 in batch 2 (beta1 1/2, beta2 3/4, lr 0.1)."""
    w0 = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]])
    batches = [sparse([0, 2], [[2.0, -2.0], [1.0, 1.0]], (4, 2)),
               sparse([2, 3], [[1.0, 1.0], [4.0, -4.0]], (4, 2))]
    out = {}
    for mode in ("lazy", "dense"):
        w = Parameter(w0.copy())
        opt = Adam([("emb", w)], lr=0.1, beta1=0.5, beta2=0.75, eps=EPS, sparse_update=mode)
        run(opt, w, batches[:1])
        out[mode, 1] = w.data.copy()
        run(opt, w, batches[1:])
        out[mode, 2], out[mode, "m"] = w.data.copy(), opt.state["m"]["emb"].copy()
    s = 0.1 * 1 / (1 + EPS)                                         # lr g/(|g| + eps), |g|=1
    close(out["lazy", 1], [[1 - 0.1 * 2 / (2 + EPS), 1 + 0.1 * 2 / (2 + EPS)],
                           [2, 2], [3 - s, 3 - s], [4, 4]])
    assert np.array_equal(out["lazy", 1], out["dense", 1])         # identical after step 1
    lazy = out["lazy", 2]
    # row 2, g = 1 twice: m^ = (1/4 + 1/2) / (3/4) = 1, v^ = (3/16 + 1/4) / (7/16) = 1
    close(lazy[2], [3 - s - 0.1 / (1 + EPS)] * 2)
    # row 3, first seen at global t = 2: m^ = (4/2) / (3/4) = 8/3, v^ = (16/4) / (7/16)
    # = 64/7: step = lr (8/3) / (8/sqrt 7) = lr sqrt(7)/3 (~0.88 lr, not lr)
    step3 = 0.1 * (8 / 3) / (8 / math.sqrt(7) + EPS)
    close(lazy[3], [4 - step3, 4 + step3])
    # lazy: row 0 (not in batch 2) and row 1 (never seen) bit-identical to step 1
    assert np.array_equal(lazy[:2], out["lazy", 1][:2])
    # dense: row 0 moves on momentum: m = m1/2 = [1/2, -1/2], m^ = 2/3 each;
    # v = 3 v1 / 4 = 3/4, v^ = (3/4) / (7/16) = 12/7
    dense = out["dense", 2]
    step0 = 0.1 * (2 / 3) / (math.sqrt(12 / 7) + EPS)
    close(dense[0], [out["lazy", 1][0, 0] - step0, out["lazy", 1][0, 1] + step0])
    # ... and everything else agrees bit for bit (row 1: m = v = 0, so step 0)
    assert np.array_equal(dense[1:], lazy[1:])
    assert not np.array_equal(dense[0], lazy[0])
    close(out["lazy", "m"][0], [1.0, -1.0])                        # lazy: m frozen
    close(out["dense", "m"][0], [0.5, -0.5])                       # dense: m decayed


@pytest.mark.parametrize("mode", ["lazy", "dense"])
def test_adam_bias_correction_uses_the_global_step(mode):
    """A row first in a batch at t = 1000 takes ~2.5 lr, not the lr of a per-row count."""
    w = Parameter(np.zeros((2, 1)))
    opt = Adam([w], lr=0.01, sparse_update=mode)
    opt.load_state_dict({**opt.state_dict(), "step": 999})
    w.grad = sparse([1], [[0.5]], (2, 1))
    opt.step()                                                      # t = 1000
    # m = 0.1 * 0.5, v = 0.001 * 0.25; m^ = m / (1 - 0.9^1000), v^ = v / (1 - 0.999^1000)
    step = 0.01 * (0.05 / (1 - 0.9 ** 1000)) / (math.sqrt(0.00025 / (1 - 0.999 ** 1000)) + EPS)
    close(w.data, [[0.0], [-step]])
    assert 2.5 < step / 0.01 < 2.52        # = 0.1 / sqrt(0.001 / (1 - e^-1)), about 2.51


def test_lazy_adam_l2_decays_only_touched_rows_dense_decays_all():
    w0 = np.array([[1.0, -1.0], [2.0, 0.5]])
    g = sparse([0], [[0.3, 0.3]], (2, 2))
    out = {}
    for mode in ("lazy", "dense"):
        w = Parameter(w0.copy())
        run(Adam([w], lr=0.1, l2=0.1, sparse_update=mode), w, [g])
        out[mode] = w.data
    assert np.array_equal(out["lazy"][1], w0[1])                   # untouched: no decay
    close(out["dense"][1], [2 - 0.1 * 0.4 / (0.4 + EPS),            # g = 0 + 0.2 w: lr sign
                            0.5 - 0.1 * 0.1 / (0.1 + EPS)])
    assert np.array_equal(out["lazy"][0], out["dense"][0])


# =====================================================================================
# FTRL-Proximal
# =====================================================================================
def test_ftrl_two_steps_by_hand():
    # alpha = beta = 1, l1 = 1/2, l2 = 0, w0 = 0; gradients with exact square roots
    w = Parameter(np.zeros(3))
    opt = FTRL([w], alpha=1.0, beta=1.0, l1=0.5, l2=0.0)
    run(opt, w, [np.array([1.0, -3.0, 0.6])])
    # n1 = [1, 9, 0.36], sigma = sqrt(n1) = [1, 3, 0.6], z1 = g1 - sigma * 0 = g1
    close(opt.state["n"]["0"], [1.0, 9.0, 0.36])
    close(opt.state["z"]["0"], [1.0, -3.0, 0.6])
    # |z1| > 0.5 everywhere: w = -(z - 0.5 sign z) / (1 + sqrt(n))
    close(w.data, [-0.5 / 2, 2.5 / 4, -0.1 / 1.6])                 # [-0.25, 0.625, -0.0625]
    run(opt, w, [np.array([0.0, 4.0, 0.8])])
    # n2 = [1, 25, 1], sigma = [1-1, 5-3, 1-0.6] = [0, 2, 0.4]
    # z2 = z1 + g2 - sigma w1 = [1, -3 + 4 - 1.25, 0.6 + 0.8 + 0.025] = [1, -0.25, 1.425]
    close(opt.state["z"]["0"], [1.0, -0.25, 1.425])
    # |z2| = [1, 0.25, 1.425] vs 0.5: coordinate 1 is set to exactly 0
    close(w.data, [-0.5 / 2, 0.0, -(1.425 - 0.5) / 2])
    assert w.data[1] == 0.0


def test_ftrl_l2_enters_the_denominator_as_mcmahan_lambda2():
    w = Parameter(np.zeros(2))
    run(FTRL([w], alpha=0.5, beta=1.0, l1=0.0, l2=3.0), w, [np.array([3.0, -1.0])])
    # z = g, n = g^2: w = -z / ((1 + |g|) / 0.5 + 3) = -[3 / 11, -1 / 7]
    close(w.data, [-3 / 11, 1 / 7])


def test_ftrl_initial_state_rules_by_hand():
    """From the random init w0 = [1, -2, 0.5] (alpha = beta = 1, no l1, l2)."""
    g = np.array([1.0, -3.0, 0.6])                                  # sqrt(n1) = [1, 3, 0.6]
    out = {}
    for rule in ("from_weights", "zero"):
        w = Parameter(np.array([1.0, -2.0, 0.5]))
        opt = FTRL([w], alpha=1.0, beta=1.0, z_init=rule)
        out[rule, "z0"] = opt.state["z"]["0"].copy()
        run(opt, w, [g])
        out[rule] = w.data
    # from_weights: z0 = -(beta/alpha) w0 = [-1, 2, -0.5]; its closed form -z0 / (beta/alpha)
    # is w0. z1 = z0 + g - sqrt(n1) w0 = [-1 + 1 - 1, 2 - 3 + 6, -0.5 + 0.6 - 0.3]
    close(out["from_weights", "z0"], [-1.0, 2.0, -0.5])
    close(out["from_weights"], [1 / 2, -5 / 4, 0.2 / 1.6])
    # ... which is an AdaGrad step from w0: w0 - alpha g / (beta + |g|)
    close(out["from_weights"], [1 - 1 / 2, -2 + 3 / 4, 0.5 - 0.6 / 1.6])
    # zero: z1 = g - sqrt(n1) w0 = [0, 3, 0.3]; w = (|g| w0 - alpha g) / (beta + |g|)
    close(out["zero", "z0"], [0.0, 0.0, 0.0])
    close(out["zero"], [0.0, -3 / 4, -0.3 / 1.6])
    close(out["zero"], [(1 - 1) / 2, (-6 + 3) / 4, (0.3 - 0.6) / 1.6])


@given(seed=st.integers(0, 2**32 - 1), beta=st.floats(1e-4, 2.0))
def test_ftrl_from_weights_state_reproduces_the_init_without_regularisation(seed, beta):
    w0 = np.random.default_rng(seed).normal(size=(4, 3))
    opt = FTRL([Parameter(w0)], alpha=0.1, beta=beta)
    a = np.full_like(w0, beta / 0.1)                               # n = 0: a = beta / alpha
    np.testing.assert_allclose(opt.solve(opt.state["z"]["0"], a), w0, rtol=1e-14)


# =====================================================================================
# G-FTRL
# =====================================================================================
def test_gftrl_defaults_are_the_authors():
    c = GroupFTRL([Parameter(np.zeros((2, 16)))]).config
    assert (c.alpha, c.beta, c.l1, c.l2, c.group_scale) == (0.02, 1e-4, 1e-3, 1e-3, "sqrt_dim")


def test_gftrl_two_steps_by_hand_untouched_row_bit_identical():
    # alpha = beta = 1, l2 = 0, lam = l1 = 2.5 (group_scale "none"); row 1 never touched
    w0 = np.array([[0.0, 0.0], [7.0, -7.0], [0.0, 0.0]])
    w = Parameter(w0.copy())
    opt = GroupFTRL([("emb", w)], alpha=1.0, beta=1.0, l1=2.5, l2=0.0, group_scale="none")
    run(opt, w, [sparse([0, 2], [[3.0, -4.0], [0.6, 0.8]], (3, 2))])
    # row 0: n = [9, 16], z = g = [3, -4], ||z|| = 5 > 2.5, a = 1 + sqrt(n) = [4, 5]
    #        w = -(1 - 2.5/5) z / a = -0.5 [3/4, -4/5]
    # row 2: z = [0.6, 0.8], ||z|| = 1 <= 2.5: w = 0
    close(w.data, [[-0.375, 0.4], [7.0, -7.0], [0.0, 0.0]])
    run(opt, w, [sparse([0], [[4.0, 3.0]], (3, 2))])
    # row 0: n = [25, 25], sigma = [5 - 3, 5 - 4] = [2, 1]
    #        z = [3 + 4 - 2 (-0.375), -4 + 3 - 1 (0.4)] = [7.75, -1.4], a = 1 + 5 = 6
    close(opt.state["n"]["emb"][0], [25.0, 25.0])
    close(opt.state["z"]["emb"][0], [7.75, -1.4])
    norm = math.sqrt(7.75 ** 2 + 1.4 ** 2)
    close(w.data[0], [-(1 - 2.5 / norm) * 7.75 / 6, (1 - 2.5 / norm) * 1.4 / 6])
    assert np.array_equal(w.data[1:], [[7.0, -7.0], [0.0, 0.0]])
    # the untouched row's state is its initial state: z = -(beta/alpha) w0, n = 0
    assert np.array_equal(opt.state["z"]["emb"][1], [-7.0, 7.0])
    assert np.array_equal(opt.state["n"]["emb"][1], [0.0, 0.0])


@pytest.mark.parametrize("scale, expected", [("none", -1 / 7), ("sqrt_dim", 0.0)])
def test_gftrl_threshold_scales_with_sqrt_dim(scale, expected):
    # D = 4, l1 = 1: lam = 1 ("none") or 1 * sqrt(4) = 2 ("sqrt_dim")
    # g = 0.75 each: z = g, ||z|| = 1.5, a = 1 + 0.75 = 1.75
    # kept iff 1.5 > lam: w = -(1 - 1/1.5) 0.75 / 1.75 = -(1/3)(3/7) = -1/7
    w = Parameter(np.zeros((1, 4)))
    run(GroupFTRL([w], alpha=1.0, beta=1.0, l1=1.0, l2=0.0, group_scale=scale), w,
        [np.full((1, 4), 0.75)])
    close(w.data, np.full((1, 4), expected))


def _objective(w, z, a, lam):
    return z @ w + 0.5 * np.sum(a * w * w) + lam * np.linalg.norm(w)


@given(seed=st.integers(0, 2**32 - 1), dim=st.integers(1, 6), lam=st.floats(0.0, 3.0),
       a=st.floats(0.1, 10.0))
def test_gftrl_closed_form_is_the_exact_prox_when_a_row_shares_one_rate(seed, dim, lam, a):
    z = np.random.default_rng(seed).normal(scale=2.0, size=(1, dim))
    opt = GroupFTRL([Parameter(np.zeros((1, dim)))], l1=lam, group_scale="none")
    w = opt.solve(z, np.full_like(z, a))[0]
    if np.linalg.norm(z) <= lam:                                  # 0 in z + lam * unit ball
        assert np.all(w == 0)
    else:                                                         # z + a w + lam w/||w|| = 0
        np.testing.assert_allclose(z[0] + a * w + lam * w / np.linalg.norm(w), 0, atol=1e-12)
        exact = GroupFTRL([Parameter(np.zeros((1, dim)))], l1=lam, group_scale="none",
                          row_solution="exact").solve(z, np.full_like(z, a))[0]
        np.testing.assert_allclose(exact, w, rtol=1e-12, atol=1e-14)


def test_gftrl_closed_form_is_only_approximate_when_rates_differ_within_a_row():
    z, a, lam = np.array([[3.0, -4.0]]), np.array([[4.0, 5.0]]), 2.5    # row 0 of step 1
    closed = GroupFTRL([Parameter(np.zeros((1, 2)))], l1=lam, group_scale="none")
    exact = GroupFTRL([Parameter(np.zeros((1, 2)))], l1=lam, group_scale="none",
                      row_solution="exact")
    w_c, w_e = closed.solve(z, a)[0], exact.solve(z, a)[0]
    # exact: r = ||w|| solves sum z^2 / (a r + lam)^2 = 1; w = -z r / (a r + lam)
    r = brentq(lambda r: np.sum(z[0] ** 2 / (a[0] * r + lam) ** 2) - 1.0, 0.0, 10.0, xtol=1e-15)
    close(w_e, -z[0] * r / (a[0] * r + lam))
    np.testing.assert_allclose(z[0] + a[0] * w_e + lam * w_e / np.linalg.norm(w_e), 0, atol=1e-12)
    assert _objective(w_e, z[0], a[0], lam) < _objective(w_c, z[0], a[0], lam) - 1e-6
    close(w_c, [-0.375, 0.4])                                     # the closed form, as upstream


@given(seed=st.integers(0, 2**32 - 1), dim=st.integers(1, 5), lam=st.floats(0.01, 2.0))
def test_gftrl_exact_row_solution_satisfies_optimality(seed, dim, lam):
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=2.0, size=(6, dim))
    a = rng.uniform(0.05, 20.0, size=(6, dim))
    opt = GroupFTRL([Parameter(np.zeros((6, dim)))], l1=lam, group_scale="none",
                    row_solution="exact")
    w = opt.solve(z, a)
    for zr, ar, wr in zip(z, a, w):
        if np.linalg.norm(zr) <= lam:
            assert np.all(wr == 0)
        else:
            resid = zr + ar * wr + lam * wr / np.linalg.norm(wr)
            np.testing.assert_allclose(resid, 0, atol=1e-10 * (1 + np.linalg.norm(zr)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gftrl_exact_row_solution_is_stable_at_extreme_thresholds(dtype):
    z, a = np.array([[3.0, -4.0]], dtype), np.array([[4.0, 5.0]], dtype)    # ||z|| = 5

    def exact(lam):
        return GroupFTRL([Parameter(np.zeros((1, 2), dtype))], l1=lam, group_scale="none",
                         row_solution="exact").solve(z, a)

    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(exact(1e-300), -z / a, rtol=tol)   # lam -> 0: w = -z / a
    near = exact(5.0 * (1 - 1e-6))                                # just above the threshold
    assert near.dtype == dtype and np.all(np.isfinite(near)) and 0 < np.linalg.norm(near) < 1e-5
    assert np.all(exact(5.0) == 0)


def test_gftrl_dense_update_zeroes_never_seen_rows_like_the_authors_lazy_keeps_them():
    w0 = np.array([[0.3, -0.2], [0.1, 0.4]])
    g = sparse([0], [[0.5, 0.5]], (2, 2))
    out = {}
    for mode in ("lazy", "dense"):
        w = Parameter(w0.copy())
        run(GroupFTRL([w], z_init="zero", sparse_update=mode), w, [g])
        out[mode] = w.data
    assert np.array_equal(out["lazy"][1], w0[1])
    assert np.array_equal(out["dense"][1], [0.0, 0.0])           # z = 0: ||z|| <= lam
    assert np.array_equal(out["lazy"][0], out["dense"][0])


def upstream_gftrl_step(var, n, z, grad, alpha, beta, lambda1, lambda2):
    """The authors' GFTRL update (moe.py, ``_resource_apply_dense``) transcribed to NumPy."""
    grad2 = grad * grad
    sigma = (np.sqrt(n + grad2) - np.sqrt(n)) / alpha
    n = n + grad2
    z = z + grad - sigma * var
    z_norm = np.linalg.norm(z, axis=1, keepdims=True)
    thr = lambda1 * np.sqrt(var.shape[1])
    with np.errstate(divide="ignore", invalid="ignore"):         # rows with z = 0, as in TF
        shrunk = z * ((thr / z_norm - 1.0) / ((beta + np.sqrt(n)) / alpha + lambda2))
    var = np.where(z_norm <= thr, 0.0, shrunk)
    return var, n, z


@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 4))
def test_gftrl_with_zero_init_and_dense_update_reproduces_the_authors_optimiser(seed, steps):
    rng = np.random.default_rng(seed)
    w0 = rng.normal(scale=0.25, size=(8, 4))
    w = Parameter(w0.copy())
    opt = GroupFTRL([w], z_init="zero", sparse_update="dense", l1=1e-2)
    var, n, z = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)
    for g in row_batches(rng, 8, 4, steps, np.float64):
        w.grad = g
        opt.step()
        var, n, z = upstream_gftrl_step(var, n, z, g.to_dense(), 0.02, 1e-4, 1e-2, 1e-3)
        np.testing.assert_allclose(w.data, var, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(opt.state["z"]["0"], z, rtol=1e-12, atol=1e-15)


def test_gftrl_on_a_real_embedding_backward_changes_only_looked_up_rows():
    from adaref.nn import Embedding
    emb = Embedding([4, 3], dim=2, rng=np.random.default_rng(0))    # table (7, 2)
    w0 = emb.weight.data.copy()
    opt = GroupFTRL(emb.named_parameters(), alpha=0.5, beta=1.0, l1=1e-3)
    emb(np.array([[1, 2], [3, 2]])).sum().backward()                # rows 1, 3 and 4 + 2
    assert isinstance(emb.weight.grad, RowSparseGrad)
    opt.step()
    touched = np.array([1, 3, 6])
    untouched = np.setdiff1d(np.arange(7), touched)
    assert np.array_equal(emb.weight.data[untouched], w0[untouched])
    assert not np.any(np.all(emb.weight.data[touched] == w0[touched], axis=1))


# =====================================================================================
# Properties shared by all optimisers
# =====================================================================================
CONFIGS = {"sgd": {"lr": 0.1, "momentum": 0.9}, "adam": {"lr": 0.01, "l2": 1e-3},
           "ftrl": {"alpha": 0.1, "l1": 1e-3, "l2": 1e-3}, "gftrl": {"l1": 1e-2},
           "sgd_plain": {"lr": 0.1}}


def make(name, params, **extra):
    kind = "sgd" if name == "sgd_plain" else name
    return build_optimizer(kind, params, {**CONFIGS[name], **extra})


def row_batches(rng, vocab, dim, steps, dtype):
    """Random RowSparseGrads: a random subset of rows per step."""
    out = []
    for _ in range(steps):
        rows = np.flatnonzero(rng.random(vocab) < 0.4)
        out.append(sparse(rows, rng.normal(size=(len(rows), dim)).astype(dtype), (vocab, dim), dtype))
    return out


names = st.sampled_from(sorted(CONFIGS))
dtypes = st.sampled_from([np.float32, np.float64])


@given(name=names, seed=st.integers(0, 2**32 - 1), vocab=st.integers(1, 8),
       dim=st.integers(1, 4), dtype=dtypes)
def test_first_sparse_step_equals_dense_on_touched_rows_and_leaves_others_bit_identical(
        name, seed, vocab, dim, dtype):
    rng = np.random.default_rng(seed)
    w0 = rng.normal(size=(vocab, dim)).astype(dtype)
    (g,) = row_batches(rng, vocab, dim, 1, dtype)
    lazy, dense = Parameter(w0.copy()), Parameter(w0.copy())
    opt_l, opt_d = make(name, [lazy]), make(name, [dense])
    lazy.grad, dense.grad = g, g.to_dense()
    opt_l.step()
    opt_d.step()
    untouched = np.setdiff1d(np.arange(vocab), g.rows)
    assert np.array_equal(lazy.data[untouched], w0[untouched])
    for slot in opt_l.slots():
        assert np.array_equal(opt_l.state[slot]["0"][untouched],
                              make(name, [Parameter(w0.copy())]).state[slot]["0"][untouched])
    assert np.array_equal(lazy.data[g.rows], dense.data[g.rows])


@given(name=st.sampled_from(["ftrl", "gftrl", "sgd_plain"]), seed=st.integers(0, 2**32 - 1),
       steps=st.integers(1, 4))
def test_ftrl_and_plain_sgd_lazy_equals_dense_once_every_row_was_touched(name, seed, steps):
    """Row-local, step-count-free rules: recomputing a seen row with g = 0 is a no-op."""
    rng = np.random.default_rng(seed)
    w0 = rng.normal(size=(6, 3))
    lazy, dense = Parameter(w0.copy()), Parameter(w0.copy())
    opt_l, opt_d = make(name, [lazy]), make(name, [dense], sparse_update="dense")
    first = sparse(np.arange(6), rng.normal(size=(6, 3)), (6, 3))   # every row once
    for g in [first] + row_batches(rng, 6, 3, steps, np.float64):
        lazy.grad = dense.grad = g
        opt_l.step()
        opt_d.step()
        assert np.array_equal(lazy.data, dense.data)
        assert all(np.array_equal(opt_l.state[s]["0"], opt_d.state[s]["0"]) for s in opt_l.slots())


@given(name=names, dtype=dtypes, sparse_grad=st.booleans())
def test_float32_stays_float32_and_float64_stays_float64(name, dtype, sparse_grad):
    w = Parameter(np.ones((3, 2), dtype=dtype))
    opt = make(name, [w])
    g = sparse([1], np.ones((1, 2)), (3, 2), dtype)
    for _ in range(2):
        w.grad = g if sparse_grad else g.to_dense()
        opt.step()
    assert w.data.dtype == dtype
    assert all(np.asarray(v).dtype == dtype for k, v in opt.state_dict().items() if k != "step")


class Tiny(Module):
    def __init__(self, seed):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.emb = Parameter(rng.normal(size=(7, 3)))
        self.lin = Linear(3, 2, rng=rng)


def _grads(model, seed, step, gftrl):
    rng = np.random.default_rng([seed, step])
    model.emb.grad = row_batches(rng, 7, 3, 1, np.float64)[0]
    model.lin.weight.grad = rng.normal(size=model.lin.weight.shape)
    if not gftrl:
        model.lin.bias.grad = rng.normal(size=model.lin.bias.shape) if step % 3 else None


def _params(model, name):
    named = list(model.named_parameters())
    return [(n, p) for n, p in named if p.ndim == 2] if name == "gftrl" else named


@given(name=names, seed=st.integers(0, 2**32 - 1), before=st.integers(0, 3),
       after=st.integers(1, 3))
def test_checkpoint_through_npz_resumes_bit_for_bit(name, seed, before, after, tmp_path_factory):
    model = Tiny(seed)
    opt = make(name, _params(model, name))
    for t in range(before):
        _grads(model, seed, t, name == "gftrl")
        opt.step()
    path = tmp_path_factory.mktemp("ckpt") / "state.npz"
    save_npz(path, {**{f"model.{k}": v for k, v in model.state_dict().items()},
                    **{f"optim.{k}": np.asarray(v) for k, v in opt.state_dict().items()}})
    for t in range(before, before + after):
        _grads(model, seed, t, name == "gftrl")
        opt.step()

    arrays, _ = load_npz(path)
    fresh = Tiny(seed + 1)                                        # different init, then load
    fresh.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model.")})
    opt2 = make(name, _params(fresh, name))
    opt2.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("optim.")})
    assert opt2.step_count == before
    for t in range(before, before + after):
        _grads(fresh, seed, t, name == "gftrl")
        opt2.step()
    for (k, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert a.tobytes() == b.tobytes(), k
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1.keys() == s2.keys()
    assert all(np.asarray(s1[k]).tobytes() == np.asarray(s2[k]).tobytes() for k in s1)


def test_state_dict_keys_are_slot_dot_parameter_name():
    model = Tiny(0)
    keys = set(Adam(model.named_parameters()).state_dict())
    assert keys == {"step", "m.emb", "v.emb", "m.lin.weight", "v.lin.weight",
                    "m.lin.bias", "v.lin.bias"}
    assert set(FTRL([Parameter(np.zeros(2))]).state_dict()) == {"step", "z.0", "n.0"}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_grad_none_is_skipped(name):
    a, b = Parameter(np.ones((2, 2))), Parameter(np.full((2, 2), 2.0))
    opt = make(name, [("a", a), ("b", b)])
    before = opt.state_dict()
    a.grad, b.grad = np.ones((2, 2)), None
    opt.step()
    after = opt.state_dict()
    assert np.array_equal(b.data, np.full((2, 2), 2.0))
    assert all(np.array_equal(after[k], before[k]) for k in after if k.endswith(".b"))
    assert not np.array_equal(a.data, np.ones((2, 2)))
    assert after["step"] == 1


def test_step_is_in_place_and_zero_grad_clears():
    w = Parameter(np.ones((2, 2)))
    buffer, view = w.data, w.data[0]
    opt = Adam([w], lr=0.1)
    w.grad = np.ones((2, 2))
    opt.step()
    assert w.data is buffer and np.allclose(view, 0.9)
    opt.zero_grad()
    assert w.grad is None


# =====================================================================================
# Refusals
# =====================================================================================
def _trained_adam():
    model = Tiny(0)
    opt = Adam(model.named_parameters())
    return opt, opt.state_dict()


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("m.lin.weight"), "missing key(s) m.lin.weight"),
    (lambda s: s.update({"m.extra": np.zeros(2)}), "unexpected key(s) m.extra"),
    (lambda s: s.update({"v.emb": np.zeros((7, 4))}), "key v.emb has shape (7, 4)"),
    (lambda s: s.update({"v.emb": np.zeros((7, 3), np.float32)}), "key v.emb has dtype float32"),
    (lambda s: s.update({"step": 1.5}), "key step must be a non-negative integer"),
    (lambda s: s.update({"step": -1}), "key step must be a non-negative integer"),
])
def test_mismatched_state_is_refused_naming_the_key(edit, message):
    opt, state = _trained_adam()
    original = {k: np.array(v, copy=True) for k, v in opt.state_dict().items()}
    state["m.emb"] = np.ones((7, 3))                  # a valid change that must not land
    edit(state)
    with pytest.raises(StateDictError) as err:
        opt.load_state_dict(state)
    assert message in str(err.value)
    assert all(np.array_equal(opt.state_dict()[k], original[k]) for k in original)


def test_state_that_is_not_a_mapping_is_refused():
    opt, _ = _trained_adam()
    with pytest.raises(StateDictError, match="expected a mapping"):
        opt.load_state_dict([("step", 0)])


def test_state_of_another_optimiser_is_refused():
    model = Tiny(0)
    with pytest.raises(StateDictError, match="missing key"):
        FTRL(model.named_parameters()).load_state_dict(Adam(model.named_parameters()).state_dict())


@pytest.mark.parametrize("grad, error, message", [
    (np.ones((3, 2)), ValueError, "has shape (2, 3) but its gradient has shape (3, 2)"),
    (np.ones((2, 3), np.float32), TypeError, "is float64 but its gradient is float32"),
    (np.array([[1, np.nan, 0], [0, 0, 0]]), FloatingPointError, "NaN or infinity"),
    (np.array([[np.inf, -np.inf, 0], [0, 0, 0]]), FloatingPointError, "NaN or infinity"),
    (np.array([[np.inf, 1e308, 0], [0, 0, 0]]), FloatingPointError, "NaN or infinity"),
    ([[1.0] * 3] * 2, TypeError, "must be an ndarray or a RowSparseGrad"),
    (sparse([1, 0], np.ones((2, 3)), (2, 3)), ValueError, "unique, sorted and in [0, 2)"),
    (sparse([1, 1], np.ones((2, 3)), (2, 3)), ValueError, "unique, sorted"),
    (sparse([2], np.ones((1, 3)), (2, 3)), ValueError, "in [0, 2)"),
    (sparse([0], np.ones((1, 2)), (2, 3)), ValueError, "values have shape (1, 2)"),
    (sparse([0], np.ones((1, 3)), (3, 3)), ValueError, "row-sparse gradient has shape (3, 3)"),
])
def test_bad_gradients_are_refused_before_anything_changes(grad, error, message):
    good, bad = Parameter(np.ones((2, 3))), Parameter(np.ones((2, 3)))
    opt = Adam([("good", good), ("bad", bad)])
    good.grad, bad.grad = np.ones((2, 3)), grad
    with pytest.raises(error) as err:
        opt.step()
    assert message in str(err.value) and "'bad'" in str(err.value)
    assert np.array_equal(good.data, np.ones((2, 3))) and opt.step_count == 0


def test_large_finite_gradients_whose_sum_overflows_are_accepted():
    """The finite check sums first; a sum that overflows must not refuse finite values."""
    p = Parameter(np.ones((2, 3), np.float32))
    opt = SGD([("w", p)], lr=1e-40)
    p.grad = np.full((2, 3), 3e38, np.float32)
    with np.errstate(over="ignore"):
        assert not np.isfinite(p.grad.sum())
    opt.step()
    assert opt.step_count == 1 and np.isfinite(p.data).all()


def test_construction_errors_are_clear():
    p = Parameter(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="GroupFTRL: parameter 'bias' has shape"):
        GroupFTRL([("bias", Parameter(np.zeros(3)))])
    with pytest.raises(ValueError, match="same object"):
        SGD([("a", p), ("b", p)])
    with pytest.raises(ValueError, match="two parameters are named 'a'"):
        SGD([("a", p), ("a", Parameter(np.zeros(2)))])
    with pytest.raises(TypeError, match="not a mix"):
        SGD([("a", p), Parameter(np.zeros(2))])
    with pytest.raises(TypeError, match="is a ndarray, not a Parameter"):
        SGD([np.zeros(2)])
    with pytest.raises(ValueError, match="empty parameter list"):
        Adam([])
    with pytest.raises(TypeError, match="not both"):
        Adam([p], config={"lr": 0.1}, lr=0.1)


@pytest.mark.parametrize("name, config, message", [
    ("adamw", {}, "unknown optimiser 'adamw' (known: sgd, adam, ftrl, gftrl)"),
    ("adam", {"weight_decay": 0.1}, "AdamConfig: unknown key 'weight_decay'"),
    ("adam", {"lr": "fast"}, "AdamConfig: key 'lr' expects float"),
    ("adam", {"beta2": 1.0}, "AdamConfig: beta2 must be in [0, 1), got 1.0"),
    ("adam", {"eps": 0}, "AdamConfig: eps must be > 0"),
    ("adam", {"sparse_update": "sparse"}, "AdamConfig: key 'sparse_update' expects"),
    ("sgd", {"lr": -1}, "SGDConfig: lr must be > 0"),
    ("ftrl", {"beta": 0.0}, "FTRLConfig: beta must be > 0"),
    ("ftrl", {"z_init": "random"}, "FTRLConfig: key 'z_init' expects"),
    ("gftrl", {"group_scale": "dim"}, "GroupFTRLConfig: key 'group_scale' expects"),
    ("gftrl", {"l1": -1e-3}, "GroupFTRLConfig: l1 must be >= 0"),
])
def test_registry_rejects_unknown_names_keys_and_values(name, config, message):
    with pytest.raises(ConfigError) as err:
        build_optimizer(name, [Parameter(np.zeros((2, 2)))], config)
    assert message in str(err.value)


def test_registry_builds_every_optimiser_with_its_config():
    assert sorted(OPTIMIZERS) == ["adam", "ftrl", "gftrl", "sgd"]
    for name, cls in OPTIMIZERS.items():
        opt = build_optimizer(name, [Parameter(np.zeros((2, 2)))])
        assert type(opt) is cls and opt.config == cls.config_class()
    opt = build_optimizer("gftrl", [Parameter(np.zeros((2, 2)))], {"alpha": 0.05})
    assert opt.config.alpha == 0.05 and opt.config.beta == 1e-4


def test_gftrl_exact_rows_with_zero_z_raise_no_floating_point_warning():
    """Rows never touched under z_init="zero" have z = 0: pruned, with no Newton step
    (it would divide by a zero derivative), so a strict warnings filter passes."""
    import warnings
    p = Parameter(np.random.default_rng(0).normal(size=(4, 16)) * 0.25)
    opt = GroupFTRL([("e", p)], z_init="zero", sparse_update="dense", row_solution="exact")
    p.grad = RowSparseGrad(np.array([1]), np.ones((1, 16)), (4, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()
    norms = np.abs(p.data).sum(axis=1)
    assert norms[[0, 2, 3]].tolist() == [0.0, 0.0, 0.0] and norms[1] > 0
