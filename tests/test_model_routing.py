"""Gate (eqs. 7-11), k schedule, sparse dispatcher (eq. 12) and load regularisers (13-16)."""
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import adaref
from adaref import Tensor, kernels, ops
from adaref.model.config import GateConfig, KScheduleConfig
from adaref.model.dispatcher import sparse_moe
from adaref.model.gate import NoisyCosineGate
from adaref.model.regularizers import balance_loss, distribution_loss, load_fractions, z_loss
from adaref.model.schedule import KSchedule
from adaref.nn import Linear, Module


class ToyExpert(Module):
    """A small stand-in expert: y = tanh(x W) * x0 over the last axis."""

    def __init__(self, d, rng):
        super().__init__()
        self.lin = Linear(d, d, rng=rng)

    def forward(self, x, x0):
        return ops.tanh(self.lin(x)) * x0


def _setup(seed, b, f, d, n):
    rng = np.random.default_rng(seed)
    experts = [ToyExpert(d, rng) for _ in range(n)]
    x, x0 = rng.normal(size=(b, f, d)), rng.normal(size=(b, f, d))
    return rng, experts, x, x0


@given(seed=st.integers(0, 10**6), b=st.integers(1, 9), n=st.integers(1, 5), data=st.data())
def test_sparse_dispatch_equals_dense_computation(seed, b, n, data):
    """Eq. 12 computed sparsely equals every expert on every example times weights that
    are zero off the top-k, to float64 rounding, on both kernel backends."""
    rng, experts, x, x0 = _setup(seed, b, 3, 2, n)
    k = data.draw(st.integers(1, n))
    scores = rng.normal(size=(b, n))
    mask = ops.topk_mask(scores, k)
    weights = np.where(mask, rng.uniform(0.1, 1.0, size=(b, n)), 0.0)
    dense = sum(weights[:, j, None, None] * experts[j](Tensor(x), Tensor(x0)).data for j in range(n))
    for backend in kernels.BACKENDS:
        with kernels.use_backend(backend):
            y, rows = sparse_moe(Tensor(x), Tensor(x0), mask, Tensor(weights), experts)
        np.testing.assert_allclose(y.data, dense, rtol=1e-13, atol=1e-14)
        assert [r.tolist() for r in rows] == [np.flatnonzero(mask[:, j]).tolist() for j in range(n)]


@given(seed=st.integers(0, 10**6), backend=st.sampled_from(kernels.BACKENDS))
def test_dispatch_onto_a_base_adds_the_base_and_passes_its_gradient(seed, backend):
    """sparse_moe(..., base=x) is x + sparse_moe(...) (the layer's residual, one pass),
    with the same gradients, including g_base = g, on both kernel backends."""
    rng, experts, x, x0 = _setup(seed, 6, 2, 3, 3)
    mask = ops.topk_mask(rng.normal(size=(6, 3)), 2)
    mask[0] = False                                  # an example no expert receives
    w0 = np.where(mask, rng.uniform(0.2, 1.0, size=(6, 3)), 0.0)
    with kernels.use_backend(backend):
        y, _ = sparse_moe(Tensor(x), Tensor(x0), mask, Tensor(w0), experts, base=Tensor(x))
        plain, _ = sparse_moe(Tensor(x), Tensor(x0), mask, Tensor(w0), experts)
        np.testing.assert_allclose(y.data, x + plain.data, rtol=1e-14, atol=1e-14)
        np.testing.assert_array_equal(y.data[0], x[0])
        adaref.gradcheck(lambda x, x0, w, base: sparse_moe(x, x0, mask, w * Tensor(mask.astype(float)),
                                                             experts, base=base)[0], x, x0, w0, x * 0.5)


def test_combine_refuses_a_wrong_base_and_repeated_rows():
    from adaref.model.dispatcher import combine
    from adaref.tensor import ShapeError

    w, y = Tensor(np.ones((4, 2))), Tensor(np.ones((2, 3, 2)))
    with pytest.raises(ShapeError, match=r"base has shape \(3, 3, 2\), the output is \(4, 3, 2\)"):
        combine(w, [y], [np.array([0, 2])], [0], (4, 3, 2), base=Tensor(np.zeros((3, 3, 2))))
    for rows in (np.array([2, 2]), np.array([2, 1]), np.array([3, 4])):
        with pytest.raises(ValueError, match="rows of expert 0 must be increasing"):
            combine(w, [y], [rows], [0], (4, 3, 2))


def test_each_expert_sees_only_its_rows_and_unused_experts_do_not_run():
    rng, experts, x, x0 = _setup(0, 6, 2, 3, 3)
    seen = []

    class Spy(Module):
        def forward(self, x, x0):
            seen.append(x.shape[0])
            return x * 1.0

    mask = np.zeros((6, 3), bool)
    mask[[0, 2, 5], 0] = True
    mask[[1], 1] = True
    y, _ = sparse_moe(Tensor(x), Tensor(x0), mask, Tensor(mask.astype(float)), [Spy(), Spy(), Spy()])
    assert seen == [3, 1]                      # expert 2 received nothing and was not run
    np.testing.assert_array_equal(y.data[[3, 4]], 0.0)


@given(seed=st.integers(0, 10**6), backend=st.sampled_from(kernels.BACKENDS))
def test_dispatcher_gradients(seed, backend):
    rng, experts, x, x0 = _setup(seed, 5, 2, 2, 3)
    mask = ops.topk_mask(rng.normal(size=(5, 3)), 2)
    w0 = np.where(mask, rng.uniform(0.2, 1.0, size=(5, 3)), 0.0)

    class Holder(Module):
        def __init__(self):
            super().__init__()
            from adaref.nn import ModuleList
            self.experts = ModuleList(experts)

    with kernels.use_backend(backend):
        adaref.gradcheck(lambda x, x0, w: sparse_moe(x, x0, mask, w * Tensor(mask.astype(float)),
                                                       experts)[0], x, x0, w0)
        adaref.gradcheck_module(lambda: sparse_moe(Tensor(x), Tensor(x0), mask, Tensor(w0), experts)[0],
                                Holder())


def test_dispatching_every_row_in_order_copies_nothing_under_no_grad():
    """DenseMoE (k = N) at inference: an expert that every example chose reads X itself;
    with a graph the gather node stays (it fixes the order gradients add up in)."""
    from adaref.model.dispatcher import dispatch
    x = Tensor(np.random.default_rng(0).normal(size=(4, 2, 3)), requires_grad=True)
    with adaref.no_grad():
        assert dispatch(x, np.arange(4)) is x
        assert dispatch(x, np.array([1, 0, 2, 3])) is not x                    # not in order
        np.testing.assert_array_equal(dispatch(x, np.array([1, 0, 2, 3])).data, x.data[[1, 0, 2, 3]])
    y = dispatch(x, np.arange(4))
    assert y is not x and y.requires_grad
    np.testing.assert_array_equal(y.data, x.data)


def test_numba_and_numpy_dispatch_agree():
    rng, experts, x, x0 = _setup(3, 64, 4, 3, 5)
    mask = ops.topk_mask(rng.normal(size=(64, 5)), 3)
    out = {}
    for backend in kernels.BACKENDS:
        with kernels.use_backend(backend):
            w = Tensor(np.where(mask, 0.5, 0.0), requires_grad=True)
            xt = Tensor(x, requires_grad=True)
            y, _ = sparse_moe(xt, Tensor(x0), mask, w, experts, base=xt)   # + the residual
            y.backward(np.cos(np.arange(y.size)).reshape(y.shape))
            out[backend] = (y.data, xt.grad, w.grad)
    np.testing.assert_array_equal(out["numba"][0], out["numpy"][0])
    np.testing.assert_array_equal(out["numba"][1], out["numpy"][1])
    np.testing.assert_allclose(out["numba"][2], out["numpy"][2], rtol=1e-14, atol=1e-14)


@given(seed=st.integers(0, 10**6), b=st.integers(1, 40), n=st.integers(1, 5), f=st.integers(1, 4),
       d=st.integers(1, 6), dtype=st.sampled_from([np.float32, np.float64]), data=st.data())
def test_fused_inference_combine_norm_equals_combine_then_norm(seed, b, n, f, d, dtype, data):
    """Under no_grad the layer's Norm(x + eq. 12) is one fused pass; it equals the two
    autograd ops (combine onto the base, then LayerNorm) on both backends, including
    examples no expert receives and experts that receive nothing, to the LayerNorm
    kernel's rounding bound."""
    from adaref.nn import LayerNorm

    rng = np.random.default_rng(seed)
    experts = [ToyExpert(d, rng) for _ in range(n)]
    for e in experts:
        e.lin.weight.data, e.lin.bias.data = (e.lin.weight.data.astype(dtype), e.lin.bias.data.astype(dtype))
    x, x0 = rng.normal(size=(b, f, d)).astype(dtype), rng.normal(size=(b, f, d)).astype(dtype)
    mask = ops.topk_mask(rng.normal(size=(b, n)), data.draw(st.integers(1, n)))
    mask[rng.uniform(size=b) < 0.2] = False                       # examples no expert receives
    if n > 1:
        mask[:, data.draw(st.integers(0, n - 1))] = False        # an expert that receives nothing
    w = np.where(mask, rng.uniform(0.1, 1.0, size=(b, n)), 0.0).astype(dtype)
    norm = LayerNorm(d, dtype=dtype)
    norm.gain.data[:], norm.bias.data[:] = rng.normal(size=d), rng.normal(size=d)
    pre, _ = sparse_moe(Tensor(x), Tensor(x0), mask, Tensor(w), experts, base=Tensor(x))   # (b, f, d)
    # rounding in the sums (~d eps relative to the field's values) is amplified by the
    # normalisation's 1 / std: the bound for each field's d outputs
    amplify = np.abs(pre.data).max(axis=-1, keepdims=True) / np.sqrt(pre.data.var(axis=-1, keepdims=True)
                                                                      + norm.eps)
    bound = 64 * d * np.finfo(dtype).eps * (np.abs(norm.gain.data).max() * (amplify + 1)
                                            + np.abs(norm.bias.data).max())
    for backend in kernels.BACKENDS:
        with kernels.use_backend(backend):
            plain, _ = sparse_moe(Tensor(x), Tensor(x0), mask, Tensor(w), experts, base=Tensor(x), norm=norm)
            with adaref.no_grad():
                fused, _ = sparse_moe(Tensor(x), Tensor(x0), mask, Tensor(w), experts, base=Tensor(x),
                                      norm=norm)
        assert plain.requires_grad and not fused.requires_grad and fused.dtype == dtype
        if backend == "numpy":                   # the NumPy twin is the composition itself
            np.testing.assert_array_equal(fused.data, plain.data)
        assert np.all(np.abs(fused.data - plain.data) <= bound), backend


def test_combine_norm_refuses_a_graph_and_repeated_rows():
    from adaref.model.dispatcher import combine_norm
    from adaref.nn import LayerNorm

    w, y, base = Tensor(np.ones((4, 1))), Tensor(np.ones((2, 3, 2))), Tensor(np.zeros((4, 3, 2)))
    with pytest.raises(RuntimeError, match="no_grad"):
        combine_norm(w, [y], [np.array([0, 2])], [0], base, LayerNorm(2))
    with adaref.no_grad(), pytest.raises(ValueError, match="rows of expert 0 must be increasing"):
        combine_norm(w, [y], [np.array([2, 2])], [0], base, LayerNorm(2))


# --- gate -------------------------------------------------------------------------
def _gate(combine="gates", temperature="log", **kw):
    cfg = GateConfig(hidden=3, reduction=2, jitter=0.1, combine=combine, temperature=temperature, **kw)
    return NoisyCosineGate(cfg, 6, 4, rng=np.random.default_rng(0))


def test_gate_outputs_follow_eqs_8_to_11():
    gate = _gate().eval()
    x = Tensor(np.random.default_rng(1).normal(size=(7, 2, 3)))
    out = gate(x, k=2)
    g = out.logits.data
    assert np.all(np.abs(g) <= 1 + 1e-12)                        # cosine / tau, tau = 1
    np.testing.assert_array_equal(out.mask, ops.topk_mask(g, 2))
    np.testing.assert_allclose(out.probs.data, np.exp(g) / np.exp(g).sum(1, keepdims=True))
    kept = np.where(out.mask, np.exp(g), 0.0)
    np.testing.assert_allclose(out.gates.data, kept / kept.sum(1, keepdims=True))
    assert np.all(out.gates.data[~out.mask] == 0)
    np.testing.assert_array_equal(out.weights.data, out.gates.data)


def test_gate_cosine_is_exact_for_small_hidden_states():
    """Eq. 8 is the exact cosine: normalising by sqrt(max(||h||^2, 1e-12)) (TF's
    l2_normalize) keeps it exact down to ||h|| = 1e-6, where adding 1e-12 to ||h||^2
    would shrink the scores by up to 1/sqrt(2) (docs/decisions.md row 8 of the gate)."""
    from adaref.model.gate import l2_normalize
    rng = np.random.default_rng(3)
    for norm in (1.0, 1e-3, 1.1e-6):
        h = rng.standard_normal((5, 4))
        h *= norm / np.linalg.norm(h, axis=1, keepdims=True)
        np.testing.assert_allclose(l2_normalize(Tensor(h)).data, h / norm, rtol=1e-14, atol=0)
    gate = _gate().eval()
    gate.load_state_dict({**gate.state_dict(), "project.weight": gate.project.weight.data * 1e-6,
                          "project.bias": gate.project.bias.data * 0 + 1e-6})
    x = Tensor(np.random.default_rng(1).normal(size=(7, 2, 3)))
    h = gate.project(gate._act(gate.reduce(x.reshape(7, 6)))).data           # (B, d), ||h|| ~ 1e-6
    e = gate.embeddings.data
    exact = (h / np.linalg.norm(h, axis=1, keepdims=True)) @ (e / np.linalg.norm(e, axis=1, keepdims=True)).T
    assert np.linalg.norm(h, axis=1).min() > 1e-6
    np.testing.assert_allclose(gate.logits(x).data, exact, rtol=0, atol=1e-12)   # tau = 1


def test_gate_combine_modes():
    x = Tensor(np.random.default_rng(1).normal(size=(5, 2, 3)))
    switch = _gate("switch").eval()(x, k=2)
    np.testing.assert_allclose(switch.weights.data, switch.probs.data * switch.mask)
    unweighted = _gate("unweighted").eval()(x, k=2)
    np.testing.assert_array_equal(unweighted.weights.data, unweighted.mask.astype(float))
    assert not unweighted.weights.requires_grad


def test_gate_temperature_forms():
    x = Tensor(np.random.default_rng(1).normal(size=(5, 2, 3)))
    for form, name in (("log", "log_tau"), ("raw", "tau")):
        gate = _gate(temperature=form, tau_init=0.5).eval()
        assert [n for n, _ in gate.named_parameters()][-1] == name
        np.testing.assert_allclose(gate.temperature().data, [0.5])
        assert np.abs(gate(x, 1).logits.data).max() > 1.0           # scores / 0.5 exceed 1


def test_gate_jitter_only_in_training_and_from_the_passed_rng():
    gate = _gate()
    x = Tensor(np.random.default_rng(1).normal(size=(5, 2, 3)))
    a = gate.logits(x, rng=np.random.default_rng(7)).data
    b = gate.logits(x, rng=np.random.default_rng(7)).data
    c = gate.logits(x, rng=np.random.default_rng(8)).data
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    with pytest.raises(ValueError, match="jitter is on in training mode"):
        gate.logits(x)
    gate.eval()
    assert np.array_equal(gate.logits(x).data, gate.logits(x, rng=np.random.default_rng(7)).data)


def _same_state(a, b) -> bool:
    """Two bit generators' states (nested dicts of ints and arrays) are equal."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    return np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b


@given(seed=st.integers(0, 2 ** 32 - 1), eps=st.floats(0.0, 0.99),
       shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=60),
       dtype=st.sampled_from([np.float32, np.float64]), chunk=st.sampled_from([7, 1000, 1 << 16]),
       parallel_min=st.sampled_from([1, 50, 1 << 19]),
       kind=st.sampled_from([np.random.PCG64, np.random.PCG64DXSM, np.random.Philox]),
       half_drawn=st.booleans())
def test_jitter_draw_is_numpys_uniform_bit_for_bit(seed, eps, shape, dtype, chunk, parallel_min,
                                                   kind, half_drawn):
    """Eq. 7's noise drawn a chunk at a time, in parts on threads when the generator can
    jump: the same numbers and the same generator state afterwards (a buffered 32-bit
    half included) as one ``rng.uniform(...).astype(dtype)``, however it is cut."""
    from adaref import noise
    from adaref.model.gate import draw_jitter
    a_rng, b_rng = np.random.Generator(kind(seed)), np.random.Generator(kind(seed))
    if half_drawn:                  # leaves half of a 64-bit draw buffered in the generator
        assert a_rng.integers(0, 2 ** 31, dtype=np.int32) == b_rng.integers(0, 2 ** 31, dtype=np.int32)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(noise, "CHUNK", chunk)
        patch.setattr(noise, "PARALLEL_MIN", parallel_min)
        a = draw_jitter(a_rng, eps, shape, dtype)
    b = b_rng.uniform(1 - eps, 1 + eps, size=shape).astype(dtype)
    assert a.shape == shape and a.dtype == dtype
    assert a.tobytes() == b.tobytes()
    assert _same_state(a_rng.bit_generator.state, b_rng.bit_generator.state)
    assert a_rng.integers(0, 2 ** 31, dtype=np.int32) == b_rng.integers(0, 2 ** 31, dtype=np.int32)
    assert a_rng.random() == b_rng.random()


@pytest.mark.parametrize("combine", ["gates", "switch"])
@pytest.mark.parametrize("temperature", ["log", "raw"])
def test_gate_gradients_reach_every_parameter(combine, temperature):
    gate = _gate(combine, temperature).eval()
    x = np.random.default_rng(2).normal(size=(4, 2, 3))
    u = np.random.default_rng(3).normal(size=(4, 4))
    f = lambda x: (gate(x, k=2).weights * Tensor(u)).sum() + gate(x, 2).probs.max(axis=1).sum()  # noqa: E731
    assert adaref.gradcheck_module(f, gate, x)
    gate.zero_grad()
    f(Tensor(x)).backward()
    assert all(p.grad is not None and np.any(p.grad != 0) for p in gate.parameters())


def test_unweighted_gate_and_stop_gradient_give_no_gradient():
    gate = _gate("unweighted", stop_gradient=True).eval()
    x = Tensor(np.random.default_rng(2).normal(size=(4, 2, 3)), requires_grad=True)
    out = gate(x, k=2)
    (out.weights * 3.0).sum()            # a constant: nothing to differentiate
    assert not out.weights.requires_grad
    out.probs.sum().backward()           # regulariser path still trains the gate ...
    assert x.grad is None                # ... but never reaches the input (stop-gradient)
    assert gate.embeddings.grad is not None


def test_gate_warns_at_k1_with_renormalised_gates():
    gate = _gate()
    x = Tensor(np.random.default_rng(1).normal(size=(3, 2, 3)))
    with pytest.warns(UserWarning, match="k = 1"):
        out = gate(x, k=1, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(out.weights.data, out.mask.astype(float))


def test_gate_rejects_bad_k_and_shapes():
    gate = _gate().eval()
    with pytest.raises(ValueError, match=r"k = 5 must be in \[1, 4\]"):
        gate(Tensor(np.ones((2, 2, 3))), k=5)
    with pytest.raises(adaref.ShapeError, match="F\\*D = 6"):
        gate(Tensor(np.ones((2, 3, 3))), k=1)


# --- schedule ---------------------------------------------------------------------------
@given(n=st.integers(1, 8), data=st.data())
def test_linear_schedule_goes_from_n_to_k_monotonically(n, data):
    k = data.draw(st.integers(1, n))
    steps = data.draw(st.integers(0, 50))
    s = KSchedule(KScheduleConfig(kind="linear", k=k, steps=steps), n)
    ks = [s(t) for t in range(steps + 3)]
    assert ks[-1] == k and all(a >= b for a, b in zip(ks, ks[1:]))
    assert ks[0] == (n if steps > 0 else k)


def test_constant_and_piecewise_schedules():
    assert KSchedule(KScheduleConfig(kind="constant", k=3), 5)(0) == 3
    s = KSchedule(KScheduleConfig(kind="piecewise", k=2, boundaries=((0, 5), (10, 3), (20, 2))), 5)
    assert [s(t) for t in (0, 9, 10, 19, 20, 1000)] == [5, 5, 3, 3, 2, 2]
    with pytest.raises(ValueError, match="exceeds"):
        KSchedule(KScheduleConfig(kind="constant", k=6), 5)


# --- regularisers ---------------------------------------------------------------------------
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 8), st.integers(1, 6)),
                  elements=st.floats(-3, 3)))
def test_eq16_with_uniform_prior_equals_eq13(logits):
    probs = ops.softmax(Tensor(logits), axis=1)
    f = load_fractions(probs, ops.topk_mask(logits, 1))
    n = logits.shape[1]
    np.testing.assert_allclose(distribution_loss(probs, f, np.full(n, 1 / n)).data,
                               balance_loss(probs, f).data, rtol=1e-12)
    np.testing.assert_allclose(distribution_loss(probs, f).data, balance_loss(probs, f).data, rtol=1e-12)


def test_regulariser_gradients_flow_through_P_only():
    logits = np.random.default_rng(0).normal(size=(6, 4))
    prior = np.array([0.1, 0.2, 0.3, 0.4])
    mask = ops.topk_mask(logits, 2)
    for mode in ("argmax", "topk"):
        f = load_fractions(ops.softmax(Tensor(logits)), mask, mode)
        assert f.sum() == pytest.approx(1.0 if mode == "argmax" else 2.0)
        adaref.gradcheck(lambda g: distribution_loss(ops.softmax(g), f, prior), logits)
    adaref.gradcheck(z_loss, logits)
    lse = np.log(np.exp(logits).sum(1))
    assert z_loss(Tensor(logits)).item() == pytest.approx(np.mean(lse ** 2))


def test_sparse_moe_copies_x0_only_for_experts_that_read_it():
    from adaref.model.dispatcher import sparse_moe

    seen = {}

    class Probe:
        def __init__(self, name, uses_x0):
            self.name, self.uses_x0 = name, uses_x0

        def __call__(self, x, x0):
            seen[self.name] = None if x0 is None else x0.data.copy()
            return x * 1.0

    x = Tensor(np.arange(24.0).reshape(3, 2, 4))
    x0 = Tensor(-np.arange(24.0).reshape(3, 2, 4))
    mask = np.array([[True, True], [False, True], [True, False]])
    sparse_moe(x, x0, mask, Tensor(mask * 1.0), [Probe("reads", True), Probe("ignores", False)])
    assert seen["ignores"] is None
    np.testing.assert_array_equal(seen["reads"], x0.data[[0, 2]])


def test_dispatch_refuses_repeated_rows():
    from adaref.model.dispatcher import dispatch
    x = Tensor(np.ones((4, 2, 3)))
    with pytest.raises(ValueError, match=r"dispatch: rows must be unique .* got 1 repeated"):
        dispatch(x, np.array([2, 0, 2]))
    assert dispatch(x, np.array([3, 0, 2])).shape == (3, 2, 3)          # unique, any order


@pytest.mark.parametrize("backend", kernels.BACKENDS)
def test_the_experts_keep_how_to_gather_their_rows_not_the_copies(backend, monkeypatch):
    """A sparse dispatch's copies of X and X_0 are saved by the experts' ops as recipes
    (adaref.saved): after the forward pass no copy is held, and the backward pass, which
    gathers them again, gives the gradients of a graph that keeps them, bit for bit."""
    import gc
    import weakref

    from adaref import saved
    from adaref.experts import build_expert, expert_configs
    from adaref.model import dispatcher

    configs = expert_configs("paper")
    rng = np.random.default_rng(4)
    experts = [build_expert(n, configs[n], 5, 4, rng=rng, dtype=np.float32)
               for n in ("dense", "conv", "mhsa", "pin", "cross")]
    x0_0 = rng.normal(size=(64, 5, 4)).astype(np.float32)
    mask = ops.topk_mask(rng.normal(size=(64, 5)), 4)
    w0 = np.where(mask, rng.uniform(0.2, 1.0, size=mask.shape), 0.0).astype(np.float32)
    copies = []
    gather = dispatcher._gather
    monkeypatch.setattr(dispatcher, "_gather", lambda s, r: copies.append(gather(s, r)) or copies[-1])

    def run():
        copies.clear()
        x0, w = Tensor(x0_0, requires_grad=True), Tensor(w0, requires_grad=True)
        x = x0 * 2.0                                 # an intermediate layer input
        with kernels.use_backend(backend):
            y, _ = sparse_moe(x, x0, mask, w, experts)
            held = [weakref.ref(c) for c in copies]  # 5 of X's rows, 2 of X_0's
            copies.clear()
            gc.collect()
            alive = sum(r() is not None for r in held)
            (y * y).sum().backward()
        return alive, [x0.grad, w.grad] + [p.grad for e in experts for _, p in e.named_parameters()]

    for e in experts:
        e.zero_grad()
    alive, grads = run()
    assert alive == 0
    for e in experts:
        e.zero_grad()
    monkeypatch.setattr(saved, "recomputable", lambda a, make: a)    # keep the copies
    alive_kept, kept = run()
    assert alive_kept == 7
    for a, b in zip(grads, kept):
        np.testing.assert_array_equal(a, b)


def test_saved_recipes_rebuild_the_view_and_leave_with_their_array():
    import gc

    from adaref import saved

    x = np.arange(24.0).reshape(6, 4)
    rows = np.array([0, 3, 5])
    copy = saved.recomputable(x[rows], lambda: x[rows])
    for view in (copy, copy.T, copy.reshape(2, 6)[:, 1::2], copy[1:]):
        kept = saved.save(view)
        assert isinstance(kept, saved.Recipe)
        again = saved.load(kept)
        assert again.shape == view.shape and again.strides == view.strides
        np.testing.assert_array_equal(again, view)
    assert saved.save(x) is x and saved.load(x) is x
    kept, key = saved.save(copy), id(copy)
    del copy, view
    gc.collect()
    assert key not in saved._registry and saved.load(kept).tolist() == x[rows].tolist()
    with pytest.raises(ValueError, match="owns its memory"):
        saved.recomputable(x[1:], lambda: x[1:])
