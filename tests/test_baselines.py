"""The 13 baselines of §4.1.3 (adaref.baselines): every model and option through the float64
gradient oracle (every parameter element, full Jacobian of a 4-example batch, on both
kernel backends: the MLPs, the cross and PIN layers and the attention run fused kernels), configs
that refuse unknown keys and bad values, FLOPs that are positive and scale as their
formulas say, determinism from a seeded Generator, and the common interface (ids (B, F)
in, logit (B,) out, parameter names the trainer's grouping expects)."""
import numpy as np
import pytest

import adaref
from adaref import kernels
from adaref.baselines import MODELS, NAMES, build_baseline
from adaref.baselines.base import Baseline
from adaref.config import ConfigError
from adaref.experts.cross import Cross
from adaref.experts.pin import PIN
from adaref.tensor import DTypeError, ShapeError
from adaref.training.bilevel import split_parameters

VOCAB = [3, 4, 2]
IDS = np.array([[1, 3, 0], [2, 0, 1], [0, 2, 1], [1, 1, 0]])

#: a tiny configuration of every model, and more for the options that change the graph
CASES = [
    ("lr", {}),
    ("lr", {"embedding_oov": "zero"}),
    ("fm", {"dim": 3}),
    ("fm", {"dim": 2, "embedding_oov": "zero"}),
    ("dnn", {"dim": 2, "hidden": (4, 3)}),
    ("dnn", {"dim": 2, "hidden": (3,), "activation": "tanh"}),
    ("wide_deep", {"dim": 2, "hidden": (4, 3)}),
    ("deepfm", {"dim": 2, "hidden": (4,)}),
    ("deep_crossing", {"dim": 2, "residual_units": (3, 4)}),
    ("dcn", {"dim": 2, "cross_layers": 2, "hidden": (3,)}),
    ("dcn", {"dim": 2, "cross_layers": 2, "hidden": ()}),
    ("dcn", {"dim": 2, "cross_layers": 0, "hidden": (3,)}),
    ("pnn", {"dim": 2, "product": "inner", "hidden": (3,)}),
    ("pnn", {"dim": 2, "product": "outer", "outer_form": "kernel", "hidden": (3,)}),
    ("pnn", {"dim": 2, "product": "outer", "outer_form": "sum", "hidden": (3,)}),
    ("pnn", {"dim": 2, "product": "both", "hidden": ()}),
    ("xdeepfm", {"dim": 2, "cin_layers": (3, 2), "hidden": (3,)}),
    ("xdeepfm", {"dim": 2, "cin_layers": (4, 2), "split_half": True, "cin_activation": "tanh",
                 "hidden": ()}),
    ("autoint", {"dim": 2, "layers": 2, "heads": 2, "head_size": 2}),
    ("autoint", {"dim": 2, "layers": 1, "heads": 1, "head_size": 3, "hidden": (3,)}),
    ("fibinet", {"dim": 2, "bilinear": "interaction", "reduction_ratio": 2, "hidden": (3,)}),
    ("fibinet", {"dim": 2, "bilinear": "all", "hidden": (3,)}),
    ("fibinet", {"dim": 2, "bilinear": "each", "hidden": (3,)}),
    ("xdeepint", {"dim": 2, "layers": 2}),
    ("xdeepint", {"dim": 4, "layers": 2, "subspaces": 2}),
    ("dcn_v2", {"dim": 2, "cross_layers": 2, "hidden": (3,)}),
    ("dcn_v2", {"dim": 2, "cross_layers": 1, "hidden": (3,), "structure": "stacked"}),
]


def tiny(name):
    """The first tiny configuration of ``name`` in CASES."""
    return dict(next(o for n, o in CASES if n == name))


def build(name, options, seed=0, dtype=np.float64, vocab=VOCAB):
    return build_baseline(name, options, vocab, rng=np.random.default_rng(seed), dtype=dtype)


def perturb(model, seed):
    """Random values in every parameter (zeros, such as biases and first-order weights,
    would leave terms untested), then the OOV rows back to zero where the config says so."""
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        p.data[...] = rng.uniform(-0.8, 0.8, size=p.shape)
    if getattr(model.config, "embedding_oov", "learned") == "zero":
        for module in (getattr(model, "embedding", None), getattr(model, "linear", None)):
            if module is not None:
                module.weight.data[module.offsets[:-1]] = 0.0
    return model


# --------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("backend", kernels.BACKENDS)
@pytest.mark.parametrize("name,options", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_gradcheck_every_parameter(name, options, backend):
    model = perturb(build(name, options), seed=1)
    with kernels.use_backend(backend):          # around the oracle: backward runs here too
        assert adaref.gradcheck_module(lambda: model(IDS), model)


def test_every_model_has_a_gradcheck_case():
    assert {n for n, _ in CASES} == set(NAMES)


# --------------------------------------------------------------------------- interface
@pytest.mark.parametrize("name", NAMES)
def test_interface_ids_in_logit_out(name):
    options = tiny(name)
    model = build(name, options)
    assert isinstance(model, Baseline) and isinstance(model, MODELS[name][1]) and model.name == name
    out = model(IDS)
    assert out.shape == (len(IDS),) and out.dtype == np.float64 and np.isfinite(out.data).all()
    names = [n for n, _ in model.named_parameters()]
    groups = split_parameters(model)
    assert not groups["gates"] and all("gate" not in n for n in names)
    if name != "lr":
        assert [n for n, _ in groups["embedding"]] == ["embedding.weight"]
    with pytest.raises(ShapeError):
        model(IDS[:, :2])
    with pytest.raises(ValueError, match="empty"):
        model(IDS[:0])
    with pytest.raises(IndexError):
        model(IDS + 10)


@pytest.mark.parametrize("name", NAMES)
def test_float32_models_stay_float32(name):
    options = tiny(name)
    model = build(name, options, dtype=np.float32)
    assert all(p.dtype == np.float32 for p in model.parameters())
    assert model(IDS).dtype == np.float32


def test_reused_experts_are_the_experts():
    v2 = build("dcn_v2", {"dim": 2, "cross_layers": 2, "hidden": (3,)})
    assert all(isinstance(c, Cross) and c.config.bias == "inside" for c in v2.cross)
    xdi = build("xdeepint", {"dim": 4, "layers": 3, "subspaces": 2})
    assert all(isinstance(p, PIN) and p.subspaces == 2 for p in xdi.pin) and len(xdi.pin) == 3


def test_unknown_model_and_wrong_config_class():
    with pytest.raises(ValueError, match="unknown model 'ipnn'"):
        build("ipnn", {})
    with pytest.raises(ConfigError, match="needs a FMConfig"):
        build_baseline("fm", MODELS["dnn"][0](), VOCAB, rng=np.random.default_rng(0))
    with pytest.raises(TypeError, match="Generator"):
        build_baseline("fm", None, VOCAB, rng=0)
    with pytest.raises(DTypeError):
        build("fm", {}, dtype=np.int32)


# --------------------------------------------------------------------------- configs
@pytest.mark.parametrize("name", NAMES)
def test_config_rejects_unknown_keys_and_round_trips(name):
    config_cls, _ = MODELS[name]
    default = config_cls()
    assert config_cls.from_dict(default.to_dict()) == default
    with pytest.raises(ConfigError, match="unknown key 'hiden'"):
        config_cls.from_dict({"hiden": (4,)})
    with pytest.raises(ConfigError, match="unknown key 'hiden'"):
        build(name, {"hiden": (4,)})
    with pytest.raises(ConfigError):
        config_cls.from_dict({"embedding_oov": "none"})
    with pytest.raises(Exception):                      # frozen
        default.embedding_oov = "zero"


@pytest.mark.parametrize("name,bad", [
    ("fm", {"dim": 0}), ("fm", {"dim": 2.0}), ("dnn", {"hidden": ()}), ("dnn", {"hidden": (4, 0)}),
    ("dnn", {"activation": "swish"}), ("wide_deep", {"hidden": (-1,)}),
    ("deep_crossing", {"residual_units": ()}), ("dcn", {"cross_layers": -1}),
    ("dcn", {"cross_layers": 0, "hidden": ()}), ("pnn", {"product": "kernel"}),
    ("pnn", {"outer_form": "mat"}), ("xdeepfm", {"cin_layers": ()}),
    ("xdeepfm", {"cin_layers": (3, 2), "split_half": True}), ("autoint", {"heads": 0}),
    ("fibinet", {"bilinear": "pair"}), ("fibinet", {"reduction_ratio": 0}),
    ("xdeepint", {"dim": 4, "subspaces": 3}), ("xdeepint", {"layers": 0}),
    ("dcn_v2", {"structure": "serial"}), ("dcn_v2", {"cross_layers": 0, "hidden": ()}),
])
def test_config_rejects_bad_values(name, bad):
    with pytest.raises(ConfigError):
        MODELS[name][0].from_dict(bad)


def test_config_lists_from_json_become_tuples():
    cfg = MODELS["xdeepfm"][0].from_dict({"cin_layers": [4, 2], "hidden": []})
    assert cfg.cin_layers == (4, 2) and cfg.hidden == ()


# --------------------------------------------------------------------------- FLOPs
F39 = [5] * 39                                          # the paper's F = 39, D = 16


def flops(name, **options):
    return build(name, options, vocab=F39).flops_per_example()


@pytest.mark.parametrize("name", NAMES)
def test_flops_positive_at_paper_scale_and_independent_of_the_batch(name):
    model = build(name, None, vocab=F39)
    n = model.flops_per_example()
    assert isinstance(n, int) and n > 0
    small = build(name, tiny(name))
    before = small.flops_per_example()
    assert 0 < before < n
    for batch in (1, 7):                                # a count per example: running batches changes nothing
        small(np.resize(IDS, (batch, 3)))
    assert small.flops_per_example() == before


def test_flops_closed_forms():
    F, D = 39, 16
    assert flops("lr") == F + 2
    for d in (4, 8, 16):                                 # affine in D, slope 3F + 3
        assert flops("fm", dim=d) == (F + 1) + 3 * F * d + 3 * d + 1 + 2
    assert flops("deepfm", hidden=(7,)) - flops("wide_deep", hidden=(7,)) == 3 * F * D + 3 * D + 1 + 1
    # one more hidden unit in the first layer of a (u,) tower: 2 FD + 2 (relu) + 2 (output unit)
    assert flops("dnn", hidden=(11,)) - flops("dnn", hidden=(10,)) == 2 * F * D + 2 + 2


@pytest.mark.parametrize("name,key,start,per_layer", [
    ("dcn", "cross_layers", 1, 5 * 39 * 16),
    ("dcn_v2", "cross_layers", 1, 2 * (39 * 16) ** 2 + 3 * 39 * 16),
    ("xdeepint", "layers", 1, 2 * 39 ** 2 * 16 * 16 + 2 * 39 * 16),
    ("autoint", "layers", 2, None),                     # the first layer's input is D, then H d'
    ("deep_crossing", "residual_units", 1, None),
])
def test_flops_linear_in_depth(name, key, start, per_layer):
    def value(n):
        v = (64,) * n if key == "residual_units" else n
        return flops(name, **{key: v, **({"hidden": ()} if name.startswith("dcn") else {})})
    steps = [value(start + 1) - value(start), value(start + 2) - value(start + 1)]
    assert steps[0] == steps[1] > 0
    if per_layer is not None:
        assert steps[0] == per_layer


def test_flops_cin_layer_formula():
    F, D = 39, 16
    one = flops("xdeepfm", cin_layers=(10,), hidden=())
    two = flops("xdeepfm", cin_layers=(10, 6), hidden=())
    # layer 2: H1 F D products + 2 H1 F H2 D weighted sums + H2 D pooling + 2 H2 output weights
    assert two - one == 10 * F * D + 2 * 10 * F * 6 * D + 6 * D + 2 * 6
    half = flops("xdeepfm", cin_layers=(10, 6), hidden=(), split_half=True)
    # split: layer 1 pools and outputs 5 maps, and layer 2 sees only the other 5
    assert two - half == 5 * D + 2 * 5 + 5 * F * D + 2 * 5 * F * 6 * D


# --------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("name", NAMES)
def test_deterministic_from_a_seeded_generator(name):
    options = tiny(name)
    state = np.random.get_state()
    a, b, c = build(name, options, seed=7), build(name, options, seed=7), build(name, options, seed=8)
    assert np.random.get_state()[1].tolist() == state[1].tolist()     # global state untouched
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert list(sa) == list(sb) and all(np.array_equal(sa[k], sb[k]) for k in sa)
    assert np.array_equal(a(IDS).data, b(IDS).data) and np.array_equal(a(IDS).data, a(IDS).data)
    if name != "lr":                                    # LR starts at zero whatever the seed
        assert any(not np.array_equal(sa[k], sc[k]) for k in sa)
