"""Every expert, in both presets' arrangements and drawn variants, through the gradient
oracle (adaref.gradcheck_module, float64, every element of every parameter and of both
inputs) on the Numba and on the NumPy path; the two
paths agree: identical forward outputs where no attention is involved, and every output
and gradient to float64 rounding (bias-gradient sums and attention add in another
order on the two paths)."""
import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st

import adaref
from adaref import Tensor, kernels
from adaref.config import ConfigError
from adaref.experts import CONFIGS, EXPERTS, build_expert, expert_configs
from adaref.tensor import dense

ACTS = ["relu", "linear", "gelu", "tanh"]


def variant(name, dim):
    """A strategy of config dicts for expert ``name`` covering its options."""
    divisors = [h for h in range(1, dim + 1) if dim % h == 0]
    return {
        "dense": st.fixed_dictionaries({"activation": st.sampled_from(ACTS),
                                        "form": st.sampled_from(["plain", "gated"]),
                                        "gate_reduction": st.integers(1, 4)}),
        "conv": st.fixed_dictionaries({"reshape": st.sampled_from(["fields", "dense"]),
                                       "length": st.none() | st.integers(3, 6),
                                       "filters": st.integers(1, 3), "width": st.integers(1, 4),
                                       "padding": st.sampled_from(["same", "valid"]),
                                       "activation": st.sampled_from(ACTS),
                                       "pool": st.integers(1, 3),
                                       "out_activation": st.sampled_from(["linear", "tanh"])}),
        "mhsa": st.fixed_dictionaries({"heads": st.integers(1, 3),
                                       "head_size": st.none() | st.integers(1, 3),
                                       "qkv_activation": st.sampled_from(["linear", "gelu"]),
                                       "out_size": st.none() | st.integers(1, 3),
                                       "out_activation": st.sampled_from(["linear", "gelu"]),
                                       "norm": st.sampled_from(["none", "instance"]),
                                       "readout": st.sampled_from(["token", "flatten"])}),
        "pin": st.fixed_dictionaries({"subspaces": st.none() | st.sampled_from(divisors)}),
        "cross": st.fixed_dictionaries({"bias": st.sampled_from(["outside", "inside"])}),
    }[name]


@st.composite
def cases(draw, names=tuple(EXPERTS)):
    name = draw(st.sampled_from(names))
    nb, nf, dim = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 4))
    source = draw(st.sampled_from(["paper", "upstream", "drawn"]))
    config = (expert_configs(source)[name].to_dict() if source != "drawn"
              else draw(variant(name, dim)))
    seed = draw(st.integers(0, 2**31 - 1))
    return name, config, nb, nf, dim, seed


def build(name, config, nf, dim, seed):
    try:
        return build_expert(name, config, nf, dim, rng=np.random.default_rng(seed))
    except ConfigError:
        assume(False)          # an arrangement impossible at this F, D (e.g. heads vs D)


def inputs(nb, nf, dim, seed):
    rng = np.random.default_rng(seed + 1)
    return rng.standard_normal((nb, nf, dim)), rng.standard_normal((nb, nf, dim))


def forward_backward(expert, x, x0, backend):
    expert.zero_grad()
    with kernels.use_backend(backend):
        tx, tx0 = Tensor(x, requires_grad=True), Tensor(x0, requires_grad=True)
        out = expert(tx, tx0)
        out.backward(np.sin(np.arange(out.size) + 1.0).reshape(out.shape))
    grads = [dense(p.grad) if p.grad is not None else np.zeros(p.shape)
             for p in expert.parameters()]
    gx0 = tx0.grad if tx0.grad is not None else np.zeros(x0.shape)
    return [out.data, tx.grad, gx0] + grads


def check_expert(name, config, nb, nf, dim, seed, sample=None):
    expert = build(name, config, nf, dim, seed)
    x, x0 = inputs(nb, nf, dim, seed)
    for backend in kernels.BACKENDS:
        with kernels.use_backend(backend):
            adaref.gradcheck_module(lambda x, x0: expert(x, x0), expert, x, x0, sample=sample,
                                    seed=seed % 1000)
    numba, numpy = (forward_backward(expert, x, x0, b) for b in kernels.BACKENDS)
    if name != "mhsa":            # no attention: the forward passes are identical
        np.testing.assert_array_equal(numba[0], numpy[0])
    for a, b in zip(numba, numpy):  # bias sums and attention: to float64 rounding
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * max(1.0, np.abs(b).max()))


@given(cases(("dense", "pin", "cross")))
def test_gradcheck_dense_pin_cross_both_backends(case):
    check_expert(*case)


@given(cases(("conv",)))
def test_gradcheck_conv_both_backends(case):
    check_expert(*case)


@given(cases(("mhsa",)))
def test_gradcheck_mhsa_both_backends(case):
    check_expert(*case)


def test_every_preset_variant_gradchecks_at_small_f_and_d():
    """Each preset's arrangement of each expert, deterministically, at F = 5, D = 4:
    every element of every parameter and input is checked (no sampling)."""
    for preset in ("paper", "upstream"):
        for name, config in expert_configs(preset).items():
            check_expert(name, config, 2, 5, 4, seed=7, sample=None)


def test_config_classes_match_names():
    assert set(CONFIGS) == set(EXPERTS) == {"dense", "conv", "mhsa", "pin", "cross"}
    for name, cls in EXPERTS.items():
        assert cls.name == name
