"""adaref.crosscheck.torch_port (the example adapter) against adaref's own answers
(adaref.crosscheck.reference): every named intermediate of adaref.model.trace.NAMES and
every gradient of eq. 18, same config, vocabulary sizes and (random) weights, for both
presets and the options of the model config; float64 at relative error 1e-12, float32
at 1e-4. The name sets must be identical, integer tensors (rows, top-k, exit depths)
equal.

Tolerance (rtol = 1e-12 in float64): an entry passes when
|port - adaref| <= rtol |adaref| + atol, with

* forward tensors: atol = rtol * max |adaref| over the tensor, i.e. every tensor agrees
  to relative error rtol measured against its own scale (an entry that cancels to
  nearly zero has no meaningful relative error of its own);
* gradients: atol = rtol / 10 * G, G the largest |gradient| of the case. A gradient is
  a sum over examples, and the log-loss gradient of an example predicted confidently
  and correctly, p - y with p within 1e-9 of y, has an absolute (not a relative)
  rounding error of order 1e-16 in both implementations (1 - p cancels); a parameter
  reached only through such examples (an expert routed few rows) then has a gradient
  whose relative error is large although both sides are correct. Analytically zero
  gradients (the MHSA key bias with a linear Q/K/V: softmax is shift-invariant over the
  keys) are pure rounding noise. Measured against G, every gradient agrees to about 1e-13;
  against its own scale, all but a few such tensors agree to 1e-12 (the worst healthy
  one: the upstream MHSA's Wq, ~2e-12, where the port itself differs by 5e-13 between
  F.scaled_dot_product_attention and an explicit softmax: saturated attention over an
  unnormalised residual stream).
"""
from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from adaref.crosscheck import reference
from adaref.crosscheck import torch_port as tp
from adaref.crosscheck.adapter import Port, load_factory
from adaref.model import AdaEnsemble, model_config

VOCAB = [6, 4, 7, 3, 5]
LAMBDAS = (0.03, 0.05, 0.2)
RTOL64, RTOL32 = 1e-12, 1e-4
FORMS = ("soft", "straight_through", "hard")

#: worst errors seen (for a report): "<dtype> <forward|gradients> <measure>" -> (error, case, name)
WORST: dict = {}


# ---------------------------------------------------------------------------------
def config(preset="paper", num_layers=3, *, gate=None, controller=None, moe=None, **changes):
    """The preset at D = 4 and ``num_layers`` layers, jitter off (evaluation has none
    anyway); at L != 4 the upstream depth prior (4 entries) becomes 1:2:...:L.
    ``gate`` / ``controller`` / ``moe``: field changes of those sub-configs."""
    cfg = model_config(preset, dim=4)
    ctl = cfg.controller
    prior = ctl.depth_prior
    if prior and len(prior) != num_layers:               # upstream's 4 entries: 1:2:...:L
        prior = tuple((np.arange(num_layers) + 1.0) / (num_layers * (num_layers + 1) / 2))
    ctl = ctl.replace(depth_prior=prior, gate=ctl.gate.replace(jitter=0.0), **(controller or {}))
    return cfg.replace(num_layers=num_layers, controller=ctl,
                       gate=cfg.gate.replace(jitter=0.0, **(gate or {})),
                       moe=cfg.moe.replace(**(moe or {})), **changes)


def random_weights(cfg, rng, scale=0.5):
    """Every parameter N(0, scale^2) (gains and instance-norm gamma around 1, raw tau
    positive), in adaref's layout, float64."""
    model = AdaEnsemble(cfg, VOCAB, rng=np.random.default_rng(0))
    out = {}
    for name, p in model.named_parameters():
        v = rng.standard_normal(p.shape) * scale
        if name.endswith(("gain", "gamma")):
            v = 1.0 + v
        if name.endswith(".tau"):
            v = 0.5 + np.abs(v)
        out[name] = v
    return out


def random_ids(rng, b):
    ids = np.stack([rng.integers(0, v, b) for v in VOCAB], axis=1).astype(np.int64)
    ids[0] = 0                                           # an all-OOV example
    return ids


def compare(ref: dict, got: dict, rtol: float, what: str, kind: str) -> None:
    """Identical names, shapes and dtypes; integers equal; floats within rtol (see the
    module docstring). Records the worst errors in WORST."""
    assert set(got) == set(ref), (f"{what}: names differ: only adaref {sorted(set(ref) - set(got))}, "
                                  f"only port {sorted(set(got) - set(ref))}")
    floats = [a for a in ref.values() if a.dtype.kind == "f" and a.size]
    global_scale = max((float(np.max(np.abs(a))) for a in floats), default=0.0)
    for name, a in ref.items():
        b = got[name]
        assert b.shape == a.shape, f"{what}: {name}: shape {b.shape}, adaref {a.shape}"
        assert b.dtype == a.dtype, f"{what}: {name}: dtype {b.dtype}, adaref {a.dtype}"
        if a.dtype.kind in "iub":
            np.testing.assert_array_equal(b, a, err_msg=f"{what}: {name}")
            continue
        if a.size == 0:
            continue
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        scale = float(np.max(np.abs(a64)))
        atol = rtol / 10 * global_scale if name.startswith("grad.") else rtol * scale
        np.testing.assert_allclose(b64, a64, rtol=rtol, atol=atol, err_msg=f"{what}: {name}")
        diff = np.abs(b64 - a64)
        grad = name.startswith("grad.")
        if scale > (1e-6 * global_scale if grad else 0.0):      # not a (near-)zero gradient
            _note(f"{kind} normwise", float(np.max(diff)) / scale, what, name)
            big = np.abs(a64) >= 1e-3 * scale
            _note(f"{kind} entrywise", float(np.max(diff[big] / np.abs(a64)[big])), what, name)
        if grad:
            _note(f"{kind} vs G", float(np.max(diff)) / global_scale, what, name)


def _note(key: str, err: float, what: str, name: str) -> None:
    if err > WORST.get(key, (-1.0,))[0]:
        WORST[key] = (err, what, name)


def run_case(cfg, *, form, k, b=12, seed=0, dtype=np.float64, weights=None, ids=None,
             lambdas=LAMBDAS, grads=True):
    """Both ports on one case; returns (adaref forward, port forward)."""
    rng = np.random.default_rng(seed)
    weights = random_weights(cfg, rng) if weights is None else weights
    ids = random_ids(rng, b) if ids is None else ids
    labels = rng.integers(0, 2, len(ids))
    dtype = np.dtype(dtype)
    rtol = RTOL64 if dtype == np.float64 else RTOL32
    kind = dtype.name
    ref_port = reference.build(cfg, VOCAB, weights, dtype)
    port = tp.build(cfg, VOCAB, weights, dtype)
    what = f"{cfg.expert_preset} {form} k={k} {dtype.name}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                  # combine='gates' with k = 1
        fa = ref_port.forward(ids, labels, k=k, form=form, lambdas=lambdas)
        fb = port.forward(ids, labels, k=k, form=form, lambdas=lambdas)
        compare(fa, fb, rtol, f"{what} forward", f"{kind} forward")
        if grads:
            ga = ref_port.gradients(ids, labels, k=k, form=form, lambdas=lambdas)
            gb = port.gradients(ids, labels, k=k, form=form, lambdas=lambdas)
            assert len(ga) == len(dict(AdaEnsemble(cfg, VOCAB, rng=np.random.default_rng(0))
                                       .named_parameters())) + 1
            compare(ga, gb, rtol, f"{what} gradients", f"{kind} gradients")
    return fa, fb


# ---------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("preset", ["paper", "upstream"])
def test_presets(preset, form, k):
    fa, _ = run_case(config(preset), form=form, k=k, seed=10 * k + FORMS.index(form))
    assert ("logit" in fa) == (form == "hard")
    assert ("loss.z" in fa) == (preset == "upstream")


@pytest.mark.parametrize("preset", ["paper", "upstream"])
def test_four_layers(preset):
    """L = 4, the upstream preset's own depth (its 4-entry depth prior unchanged)."""
    run_case(config(preset, num_layers=4), form="hard", k=3, b=16, seed=3)
    run_case(config(preset, num_layers=4), form="soft", k=3, b=16, seed=4)


@pytest.mark.parametrize("combine", ["gates", "switch", "unweighted"])
@pytest.mark.parametrize("form,k", [("soft", 2), ("hard", 3), ("straight_through", 1)])
def test_combine(combine, form, k):
    run_case(config("paper", gate={"combine": combine}), form=form, k=k, seed=5)


@pytest.mark.parametrize("preset", ["paper", "upstream"])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_without_controller(preset, k):
    fa, _ = run_case(config(preset, controller={"enabled": False}), form="full", k=k, seed=k)
    assert "estimators.0.logit" in fa and "estimators.1.logit" not in fa
    assert "controller.logits" not in fa and "loss.depth" not in fa and "logit" in fa


@pytest.mark.parametrize("form", FORMS)
def test_train_form_straight_through(form):
    run_case(config("paper", controller={"train_form": "straight_through"}), form=form, k=2, seed=7)


@pytest.mark.parametrize("variant", [
    {"gate": {"input": "prev"}},
    {"gate": {"input": "prev", "combine": "switch", "temperature": "raw", "stop_gradient": True}},
    {"moe": {"norm": "none"}},
    {"moe": {"load_fraction": "topk", "expert_prior": (0.2, 0.1, 0.1, 0.4, 0.2)}},
    {"moe": {"z_loss": True}},
    {"embedding_oov": "zero"},
    {"expert_options": {"conv": {"width": 4, "pool": 3}, "pin": {"subspaces": 2},
                        "mhsa": {"norm": "instance", "readout": "flatten", "out_size": 5},
                        "dense": {"form": "gated"}, "cross": {"bias": "inside"}}},
], ids=lambda v: "-".join(f"{a}.{b}" for a, d in v.items() for b in (d if isinstance(d, dict) else [d])))
@pytest.mark.parametrize("form", ["soft", "hard"])
def test_options(variant, form):
    run_case(config("paper", **variant), form=form, k=2, seed=11)


def test_idle_expert_has_empty_rows():
    """An expert nobody selects: its rows are empty and its output (0, F, D), on both
    sides. Layer 0's last two experts share their gate embedding, so at k = 1 the tie
    goes to the lower index (row 12) and expert 4 (cross) is never selected."""
    cfg = config("paper")
    weights = random_weights(cfg, np.random.default_rng(21))
    e = weights["layers.0.gate.embeddings"]
    e[4] = e[3]
    for form in FORMS:
        fa, fb = run_case(cfg, form=form, k=1, b=8, seed=21, weights=weights)
        assert fa["layers.0.experts.cross.rows"].shape == (0,)
        assert fb["layers.0.experts.cross.output"].shape == (0, 5, 4)
    # and with random weights alone at k = 1 and a small batch, some expert is idle
    fa, _ = run_case(cfg, form="hard", k=1, b=8, seed=22)
    assert any(v.shape == (0,) for n, v in fa.items() if n.endswith(".rows") and ".experts." in n)


@pytest.mark.parametrize("preset", ["paper", "upstream"])
def test_every_example_exits_at_layer_1(preset):
    """Equal depth scores (identical depth embeddings): every example exits at depth 1
    (lowest on ties); the hard form records layer 0 only."""
    cfg = config(preset)
    weights = random_weights(cfg, np.random.default_rng(31))
    e = weights["controller.gate.embeddings"]
    e[1:] = e[0]
    fa, fb = run_case(cfg, form="hard", k=2, seed=31, weights=weights)
    assert np.all(fa["controller.exit_depth"] == 1)
    assert not any(n.startswith(("layers.1.", "layers.2.", "estimators.1.")) for n in fb)
    assert fb["estimators.0.logit"].shape == (12,)
    # the soft form still runs every layer for every example
    fa, _ = run_case(cfg, form="soft", k=2, seed=31, weights=weights)
    assert fa["layers.2.rows"].shape == (12,)


@pytest.mark.parametrize("seed", [44, 52, 54])
def test_hard_form_records_only_reached_rows(seed):
    """Several exit depths: layer l holds the examples with exit depth >= l + 1 and
    estimator l those exiting at l, in batch order; a layer that examples reach but none
    leave has an empty estimator logit (seed 44: depths 1 and 3 only)."""
    fa, fb = run_case(config("paper"), form="hard", k=2, b=16, seed=seed)
    depth = fa["controller.exit_depth"]
    assert len(set(depth.tolist())) >= 2
    for l in range(3):
        reached = np.flatnonzero(depth >= l + 1)
        if reached.size:
            np.testing.assert_array_equal(fb[f"layers.{l}.rows"], reached)
        else:
            assert f"layers.{l}.rows" not in fb
        leaving = int(np.sum(depth == l + 1))
        assert (f"estimators.{l}.logit" in fb) == (reached.size > 0)
        if reached.size:
            assert fb[f"estimators.{l}.logit"].shape == (leaving,)


@pytest.mark.parametrize("preset,form,k", [("paper", "hard", 2), ("paper", "soft", 3),
                                           ("upstream", "hard", 3)])
def test_float32(preset, form, k):
    """float32 end to end (weights, intermediates, gradients). Not the upstream soft
    form: without a norm the logits grow to ~20, the soft mixture's probability rounds
    within a few float32 ulps of 1, and the log-loss of eq. 18 from the clipped
    probability (log(1 - p) near p = 1 - 1e-7) differs by 1e-3 between two correct
    float32 implementations."""
    fa, fb = run_case(config(preset), form=form, k=k, seed=51, dtype=np.float32)
    assert all(v.dtype == np.float32 for v in fb.values() if v.dtype.kind == "f")


# ---------------------------------------------------------------------------------
def test_port_keeps_torch_layouts():
    """nn.Linear-style (out, in) weights, Conv1D kernels (O, C, K), and the conv output
    Dense reading its input channel-major (o*T_p + t) where adaref reads t*O + o."""
    cfg = config("upstream")
    weights = random_weights(cfg, np.random.default_rng(61))
    port = tp.build(cfg, VOCAB, weights, np.float64)
    p = {n: t.numpy() for n, t in port.params.items()}
    fd = len(VOCAB) * 4
    np.testing.assert_array_equal(p["estimators.0.linear.weight"], weights["estimators.0.linear.weight"].T)
    np.testing.assert_array_equal(p["layers.0.gate.reduce.weight"], weights["layers.0.gate.reduce.weight"].T)
    np.testing.assert_array_equal(p["layers.0.experts.dense.W"], weights["layers.0.experts.dense.W"].T)
    np.testing.assert_array_equal(p["layers.0.experts.conv.Wc"],
                                  weights["layers.0.experts.conv.Wc"].transpose(2, 1, 0))
    wo_a, wo_t = weights["layers.0.experts.conv.Wo"], p["layers.0.experts.conv.Wo"]
    o = cfg.expert_options.get("conv", {}).get("filters", 16)
    t_p = wo_a.shape[0] // o
    assert wo_t.shape == (fd, o * t_p)
    for t in range(t_p):
        for oo in range(o):
            np.testing.assert_array_equal(wo_t[:, oo * t_p + t], wo_a[t * o + oo])
    np.testing.assert_array_equal(p["embedding.weight"], weights["embedding.weight"])
    np.testing.assert_array_equal(p["controller.gate.embeddings"], weights["controller.gate.embeddings"])
    back = port.mapping.to_adaref({n: t.numpy() for n, t in port.params.items()})
    assert set(back) == set(weights)
    for n in weights:
        np.testing.assert_array_equal(back[n], weights[n], err_msg=n)


def test_adapter_protocol_and_factory():
    cfg = config("paper")
    port = load_factory("adaref.crosscheck.torch_port:build")(
        cfg, VOCAB, random_weights(cfg, np.random.default_rng(0)), np.float64)
    assert isinstance(port, Port) and callable(port.gradients)
    ids = random_ids(np.random.default_rng(1), 4)
    with pytest.raises(ValueError, match="form"):
        port.forward(ids, np.zeros(4), k=2, form="full", lambdas=LAMBDAS)
    with pytest.raises(ValueError, match="k must be"):
        port.forward(ids, np.zeros(4), k=6, form="hard", lambdas=LAMBDAS)
    with pytest.raises(IndexError):
        port.forward(ids + 10, np.zeros(4), k=2, form="hard", lambdas=LAMBDAS)


def _without_controller():
    cfg = config("paper", controller={"enabled": False})
    return tp.build(cfg, VOCAB, random_weights(cfg, np.random.default_rng(0)), np.float64)


@pytest.mark.parametrize("call, error, message", [
    (lambda port, ids: port.forward(ids[0], np.zeros(4), k=2, form="hard", lambdas=LAMBDAS), ValueError,
     r"ids must be \(B, 5\) with B >= 1, got \(5,\)"),
    (lambda port, ids: port.forward(ids[:0], np.zeros(0), k=2, form="hard", lambdas=LAMBDAS), ValueError,
     r"with B >= 1, got \(0, 5\)"),
    (lambda port, ids: port.forward(ids.astype(float), np.zeros(4), k=2, form="hard", lambdas=LAMBDAS),
     TypeError, r"ids must be integers, got float64"),
    (lambda port, ids: port.forward(ids, np.zeros(4), k=True, form="hard", lambdas=LAMBDAS), ValueError,
     r"k must be an integer in \[1, 5\], got True"),
    (lambda port, ids: port.forward(ids, np.zeros(4), k=2, form="sideways", lambdas=LAMBDAS), ValueError,
     r"form must be one of .*got 'sideways'"),
    (lambda port, ids: _without_controller().forward(ids, np.zeros(4), k=2, form="hard", lambdas=LAMBDAS),
     ValueError, r"form 'hard' needs the controller"),
    (lambda port, ids: tp.build(port.config, VOCAB, random_weights(port.config, np.random.default_rng(0)),
                                np.float16), TypeError, r"dtype must be float32 or float64, got float16"),
])
def test_the_port_refuses_bad_arguments(call, error, message):
    cfg = config("paper")
    port = tp.build(cfg, VOCAB, random_weights(cfg, np.random.default_rng(0)), np.float64)
    with pytest.raises(error, match=message):
        call(port, random_ids(np.random.default_rng(1), 4))


def test_import_adaref_never_imports_torch():
    code = ("import sys, adaref, adaref.crosscheck, adaref.crosscheck.reference, "
            "adaref.crosscheck.adapter; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.getcwd())


def test_clear_import_error_without_torch():
    """Without torch the module still imports (doctest collection of the package), and
    building a port says what to install."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "import numpy as np\n"
            "from adaref.model import model_config\n"
            "import adaref.crosscheck.torch_port as tp\n"
            "try:\n    tp.build(model_config('paper'), [3] * 39, {}, np.float64)\n"
            "except ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == tp.NEEDS_TORCH
