"""The experts' interface: presets (rows 4-8), construction and config errors, the
equation-level identities (eq. 6 bias outside vs inside, PIN's H = D and H = 1 forms),
float32, and clear shape errors."""
import numpy as np
import pytest

from adaref import Tensor, kernels
from adaref.config import ConfigError
from adaref.experts import (EXPERTS, PIN, Cross, CrossConfig, DenseConfig, MHSAConfig,
                            PINConfig, build_expert, expert_configs)
from adaref.tensor import DTypeError, ShapeError, dense

RNG = lambda seed=0: np.random.default_rng(seed)  # noqa: E731


def shapes(expert):
    return {name: p.shape for name, p in expert.named_parameters()}


# --- presets -----------------------------------------------------------------------
def test_upstream_arrangements_at_the_authors_shape():
    """F = 38 (I13 dropped), D = 16: the shapes docs/decisions.md rows 4-8 describe."""
    cfg = expert_configs("upstream")
    build = lambda name: build_expert(name, cfg[name], 38, 16, rng=RNG())  # noqa: E731
    assert shapes(build("dense")) == {"W": (608, 608), "b": (608,), "W1": (608, 38),
                                      "b1": (38,), "W2": (38, 608), "b2": (608,)}
    conv = build("conv")        # Dense 608 -> 19, Conv 16 x width 4 valid -> 16, pool 2 -> 8
    assert shapes(conv) == {"Wr": (608, 19), "br": (19,), "Wc": (4, 1, 16), "bc": (16,),
                            "Wo": (128, 608), "bo": (608,)}
    assert (conv.length, conv.steps, conv.pooled) == (19, 16, 8)
    assert shapes(build("mhsa")) == {"Wq": (16, 8), "bq": (8,), "Wk": (16, 8), "bk": (8,),
                                     "Wv": (16, 8), "bv": (8,), "Wo": (8, 8), "bo": (8,),
                                     "gamma": (8,), "beta": (8,), "Wf": (304, 608),
                                     "bf": (608,)}
    assert shapes(build("pin")) == {"W": (608, 608)}
    assert build("cross").config.bias == "inside"
    x = Tensor(RNG(1).standard_normal((3, 38, 16)))
    for name in EXPERTS:
        assert build(name)(x, x).shape == (3, 38, 16)


def test_paper_arrangements_at_criteo_shape():
    cfg = expert_configs("paper")
    build = lambda name: build_expert(name, cfg[name], 39, 16, rng=RNG())  # noqa: E731
    assert shapes(build("dense")) == {"W": (624, 624), "b": (624,)}
    conv = build("conv")        # 39 positions x 16 channels, same, pool 2 -> 19 x 16
    assert shapes(conv) == {"Wc": (3, 16, 16), "bc": (16,), "Wo": (304, 624), "bo": (624,)}
    assert shapes(build("mhsa")) == {"Wq": (16, 16), "bq": (16,), "Wk": (16, 16), "bk": (16,),
                                     "Wv": (16, 16), "bv": (16,), "Wo": (16, 16), "bo": (16,)}
    assert shapes(build("pin")) == {"W": (624, 624)}
    assert shapes(build("cross")) == {"W": (624, 624), "b": (624,)}
    assert build("cross").config.bias == "outside"


def test_presets_and_build_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match="unknown preset 'tf'"):
        expert_configs("tf")
    with pytest.raises(ValueError, match="unknown expert 'dcn'; known: dense, conv, mhsa"):
        build_expert("dcn", {}, 3, 2, rng=RNG())
    with pytest.raises(ConfigError, match="CrossConfig: unknown key 'bais'"):
        build_expert("cross", {"bais": "inside"}, 3, 2, rng=RNG())
    with pytest.raises(ConfigError, match="expert 'pin' needs a PINConfig"):
        build_expert("pin", CrossConfig(), 3, 2, rng=RNG())
    with pytest.raises(ConfigError, match="CrossConfig: bias must be 'outside' or 'inside'"):
        CrossConfig(bias="both")
    with pytest.raises(ConfigError, match="DenseConfig: activation='swish' is not an activation"):
        DenseConfig(activation="swish")
    with pytest.raises(ConfigError, match="PIN expert: subspaces H=3 does not divide"):
        build_expert("pin", {"subspaces": 3}, 2, 4, rng=RNG())
    assert build_expert("mhsa", {"heads": 3}, 2, 4, rng=RNG()).head_size == 1   # D // h
    with pytest.raises(ConfigError, match="readout='token' needs out_size == D"):
        build_expert("mhsa", MHSAConfig(out_size=3), 2, 4, rng=RNG())
    with pytest.raises(ConfigError, match="too short for pool=2"):
        build_expert("conv", {"padding": "valid", "width": 3}, 3, 2, rng=RNG())
    with pytest.raises(ConfigError, match="ConvConfig: width must be a positive integer"):
        build_expert("conv", {"width": 0}, 3, 2, rng=RNG())


def test_construction_is_seeded_and_leaves_global_random_state_alone():
    before = np.random.get_state()[1].copy()
    for preset in ("paper", "upstream"):
        for name, cfg in expert_configs(preset).items():
            a = build_expert(name, cfg, 4, 4, rng=RNG(5))
            b = build_expert(name, cfg, 4, 4, rng=RNG(5))
            for (n1, p1), (n2, p2) in zip(a.named_parameters(), b.named_parameters()):
                assert n1 == n2 and np.array_equal(p1.data, p2.data)
    np.testing.assert_array_equal(np.random.get_state()[1], before)


# --- equation-level identities ------------------------------------------------------
@pytest.mark.parametrize("backend", kernels.BACKENDS)
def test_cross_bias_outside_and_inside_differ_exactly_by_b_times_one_minus_x0(backend):
    rng = RNG(2)
    f, d = 3, 4
    outside = Cross(CrossConfig(bias="outside"), f, d, rng=RNG(9))
    inside = Cross(CrossConfig(bias="inside"), f, d, rng=RNG(9))
    b = rng.standard_normal(f * d)
    outside.b.data[...] = b
    inside.b.data[...] = b
    x, x0 = rng.standard_normal((5, f, d)), rng.standard_normal((5, f, d))
    g = rng.standard_normal((5, f, d))
    with kernels.use_backend(backend):
        y_out, y_in = outside(Tensor(x), Tensor(x0)), inside(Tensor(x), Tensor(x0))
        y_out.backward(g)
        y_in.backward(g)
    z = x.reshape(5, -1) @ outside.W.data                        # x W, shared
    x0f = x0.reshape(5, -1)
    np.testing.assert_array_equal(y_out.data.reshape(5, -1), x0f * z + b)     # eq. 6
    np.testing.assert_array_equal(y_in.data.reshape(5, -1), (z + b) * x0f)    # DCN-V2
    np.testing.assert_allclose(y_out.data - y_in.data, (b * (1 - x0f)).reshape(5, f, d),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(outside.b.grad, g.reshape(5, -1).sum(0), rtol=1e-12)
    np.testing.assert_allclose(inside.b.grad, (g.reshape(5, -1) * x0f).sum(0), rtol=1e-12)
    np.testing.assert_allclose(outside.W.grad, inside.W.grad, rtol=1e-12)     # same gz


@pytest.mark.parametrize("backend", kernels.BACKENDS)
@pytest.mark.parametrize("f,d", [(3, 4), (1, 2), (4, 1)])
def test_pin_subspace_forms(backend, f, d):
    """H = D is the flattened FD x FD form x * (x0 W); H = 1 the vector-wise F x F
    form; any H is the block form on pieces of D/H."""
    rng = RNG(3)
    x, x0 = rng.standard_normal((2, f, d)), rng.standard_normal((2, f, d))
    with kernels.use_backend(backend):
        bit = PIN(PINConfig(), f, d, rng=RNG(1))                  # H = D
        assert bit.W.shape == (f * d, f * d)
        y = bit(Tensor(x), Tensor(x0)).data
        np.testing.assert_allclose(y.reshape(2, -1), x.reshape(2, -1) * (x0.reshape(2, -1) @ bit.W.data),
                                   rtol=1e-12, atol=1e-14)
        vec = PIN(PINConfig(subspaces=1), f, d, rng=RNG(1))       # H = 1
        assert vec.W.shape == (f, f)
        y = vec(Tensor(x), Tensor(x0)).data
        expected = x * np.einsum("bjd,ji->bid", x0, vec.W.data)   # field j -> field i
        np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-14)
        if d % 2 == 0 and d > 2:
            two = PIN(PINConfig(subspaces=2), f, d, rng=RNG(1))
            pieces = x0.reshape(2, 2 * f, d // 2)
            expected = x.reshape(2, 2 * f, d // 2) * np.einsum("bjs,ji->bis", pieces, two.W.data)
            np.testing.assert_allclose(two(Tensor(x), Tensor(x0)).data,
                                       expected.reshape(x.shape), rtol=1e-12, atol=1e-14)


def test_dense_plain_and_gated_match_their_formulas():
    rng = RNG(4)
    x, x0 = rng.standard_normal((3, 2, 4)), rng.standard_normal((3, 2, 4))
    plain = build_expert("dense", {}, 2, 4, rng=RNG())
    plain.b.data[...] = rng.standard_normal(8)
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    expected = relu(x.reshape(3, 8) @ plain.W.data + plain.b.data)
    np.testing.assert_allclose(plain(Tensor(x), Tensor(x0)).data.reshape(3, 8), expected,
                               rtol=1e-12)
    gated = build_expert("dense", expert_configs("upstream")["dense"], 2, 4, rng=RNG())
    assert gated.gate_width == 1                                  # max(1, 8 // 16)
    for p in gated.parameters():
        p.data[...] += 0.1 * rng.standard_normal(p.shape)
    h = relu(x0.reshape(3, 8) @ gated.W1.data + gated.b1.data)
    gate = 2 / (1 + np.exp(-(h @ gated.W2.data + gated.b2.data)))
    expected = relu(x.reshape(3, 8) @ gated.W.data + gated.b.data) * gate
    np.testing.assert_allclose(gated(Tensor(x), Tensor(x0)).data.reshape(3, 8), expected,
                               rtol=1e-12)


# --- dtypes and shapes ----------------------------------------------------------------
@pytest.mark.parametrize("preset", ["paper", "upstream"])
@pytest.mark.parametrize("name", list(EXPERTS))
def test_float32_stays_float32_and_matches_float64(preset, name):
    cfg = expert_configs(preset)[name]
    e32 = build_expert(name, cfg, 6, 4, rng=RNG(), dtype=np.float32)
    e64 = build_expert(name, cfg, 6, 4, rng=RNG(), dtype=np.float64)
    assert all(p.dtype == np.float32 for p in e32.parameters())
    x = RNG(8).standard_normal((4, 6, 4))
    x0 = RNG(9).standard_normal((4, 6, 4))
    for backend in kernels.BACKENDS:
        with kernels.use_backend(backend):
            t = Tensor(x.astype(np.float32), requires_grad=True)
            t0 = Tensor(x0.astype(np.float32), requires_grad=True)
            y32 = e32(t, t0)
            assert y32.dtype == np.float32
            y32.backward(np.ones(y32.shape, np.float32))
            assert t.grad.dtype == np.float32
            assert all(dense(p.grad).dtype == np.float32 for p in e32.parameters())
            e32.zero_grad()
    y64 = e64(Tensor(x), Tensor(x0)).data
    np.testing.assert_allclose(y32.data, y64, rtol=1e-4, atol=1e-4 * max(1, np.abs(y64).max()))


@pytest.mark.parametrize("name", list(EXPERTS))
def test_bad_inputs_give_errors_naming_the_expert_and_shapes(name):
    e = build_expert(name, expert_configs("paper")[name], 3, 4, rng=RNG())
    cls = type(e).__name__
    good = Tensor(np.zeros((2, 3, 4)))
    with pytest.raises(ShapeError, match=rf"{cls} expert: x \(X_{{l-1}}\) has shape \(2, 4, 4\), "
                                          rf"expected \(B, 3, 4\)"):
        e(Tensor(np.zeros((2, 4, 4))), good)
    with pytest.raises(ShapeError, match=rf"{cls} expert: x0 \(X_0\) has shape \(2, 12\)"):
        e(good, Tensor(np.zeros((2, 12))))
    with pytest.raises(ShapeError, match=rf"{cls} expert: x \(2, 3, 4\) and x0 \(5, 3, 4\)"):
        e(good, Tensor(np.zeros((5, 3, 4))))
    with pytest.raises(DTypeError, match=rf"{cls} expert: x \(X_{{l-1}}\) is float32 but"):
        e(Tensor(np.zeros((2, 3, 4), np.float32)), good)
    with pytest.raises(TypeError, match=rf"{cls} expert: x \(X_{{l-1}}\) must be a Tensor"):
        e(np.zeros((2, 3, 4)), good)
    if e.uses_x0:
        with pytest.raises(ShapeError, match=rf"{cls} expert: needs x0"):
            e(good, None)
    else:
        assert e(good, None).shape == (2, 3, 4)


def test_constructor_rejects_bad_sizes_and_dtypes():
    with pytest.raises(ValueError, match="Cross expert: num_fields and dim must be positive"):
        build_expert("cross", {}, 0, 4, rng=RNG())
    with pytest.raises(DTypeError, match="PIN expert: dtype must be float32 or float64"):
        build_expert("pin", {}, 2, 4, rng=RNG(), dtype=np.int64)


@pytest.mark.parametrize("backend", kernels.BACKENDS)
@pytest.mark.parametrize("preset", ["paper", "upstream"])
def test_an_empty_batch_gives_an_empty_output_and_zero_gradients(backend, preset):
    """The sparse dispatcher may route no example to an expert."""
    for name, cfg in expert_configs(preset).items():
        e = build_expert(name, cfg, 5, 4, rng=RNG())
        with kernels.use_backend(backend):
            x = Tensor(np.zeros((0, 5, 4)), requires_grad=True)
            y = e(x, x)
            y.backward(np.zeros(y.shape))
        assert y.shape == (0, 5, 4), name
        for pname, p in e.named_parameters():
            assert p.grad is not None and not np.any(dense(p.grad)), (name, pname)
