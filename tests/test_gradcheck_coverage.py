"""Float64 gradient checks that close the gaps of the rest of the suite.

An audit of every ``Function`` subclass and of every component with parameters against
the tests that gradient-check them found these gaps, filled here (small shapes, fixed
seeds, jitter off, both kernel backends wherever a kernel runs):

* ops whose kernels were gradient-checked on the default (Numba) backend only:
  ``Softmax`` (row kernel for (B, N) along axis 1) and ``EmbeddingLookup``
  (``scatter_add_rows``);
* the fused expert ops: ``tests/test_kernels_experts.py`` switches the backend only
  around the *forward* (its ``on()`` wrapper returns before the oracle calls
  ``backward``), so the NumPy twins of the backward kernels were not checked there
  (they are through the experts); here forward *and* backward run under the backend;
* the dispatcher's row gather on an *intermediate* input (a RowSparseGrad that the
  engine adds into that tensor's gradient): only the whole-model checks reached it,
  on the default backend only;
* each expert option that changes the computation, deterministically (the suite draws
  them at random with Hypothesis);
* the gate's ``combine="unweighted"`` and ``stop_gradient`` options, the depth
  controller, the estimator, the SparseMoE layer (``gate.input`` x0/prev, ``moe.norm``),
  the LayerNorm and Embedding modules (learned and zero OOV) on both backends;
* eq. 13 (balance loss), eq. 16 and the z-loss on both backends;
* the whole model through the objective of eq. 18 in the soft, hard and full
  (no controller) forms on both backends, the upstream preset's hard form on both
  backends, and the straight-through form (whose VJP is by design not the derivative
  of its forward: it is checked as the Jacobian of its surrogate).

The ``test_mutant_*`` tests monkeypatch a backward pass (or a backward kernel's twin)
for the duration of one test and show that the checks above then fail, while the
check that the suite had before does not notice.
"""
import re
from pathlib import Path

import numpy as np
import pytest

import adaref
import adaref.experts
import adaref.model
import adaref.training
from adaref import GradcheckError, Tensor, kernels, ops
from adaref.experts import build_expert, expert_configs, fused
from adaref.kernels import hadamard as khad
from adaref.model import dispatcher
from adaref.model.adaensemble import AdaEnsemble
from adaref.model.config import ControllerConfig, GateConfig, model_config
from adaref.model.controller import DepthController
from adaref.model.estimator import Estimator
from adaref.model.gate import NoisyCosineGate
from adaref.model.moe_layer import SparseMoELayer
from adaref.model.regularizers import balance_loss, distribution_loss, load_fractions, z_loss
from adaref.nn import Embedding, LayerNorm, Linear, Module, ModuleList
from adaref.tensor import Function, RowSparseGrad
from adaref.training.objective import log_loss, objective

BACKENDS = kernels.BACKENDS
TESTS = Path(__file__).parent
THIS = "tests/test_gradcheck_coverage.py"


def rng(seed):
    return np.random.default_rng(seed)


# ============================================================================
# 0. inventory: every differentiable op is named here with the tests that check it
# ============================================================================
_OPS_FILE = "tests/test_ops.py"
_ELEMENTWISE = {name: [f"{_OPS_FILE}::test_{test}"] for name, test in [
    ("Abs", "abs"), ("Add", "add"), ("BroadcastTo", "broadcast_to"), ("Clip", "clip"),
    ("Concatenate", "concatenate"), ("Div", "div"), ("Exp", "exp"), ("Gather", "gather"),
    ("Gelu", "gelu"), ("GetItem", "getitem"), ("Log", "log"), ("LogSoftmax", "log_softmax"),
    ("MatMul", "matmul"), ("Max", "max"), ("Mean", "mean"), ("Mul", "mul"), ("Neg", "neg"),
    ("Pow", "pow_tensor_exponent"), ("Relu", "relu"), ("Reshape", "reshape"),
    ("ScaledMatMul", "scaled_matmul"),
    ("ScatterAdd", "scatter_add"), ("Sigmoid", "sigmoid"), ("Sqrt", "sqrt"), ("Stack", "stack"),
    ("Sub", "sub"), ("Sum", "sum"), ("Take", "take"), ("Tanh", "tanh"), ("Transpose", "transpose"),
    ("Where", "where")]}
_EXPERTS = "tests/test_experts_gradcheck.py::test_every_preset_variant_gradchecks_at_small_f_and_d"
COVERAGE = {
    **_ELEMENTWISE,
    "AsType": ["tests/test_gradcheck.py::test_float32_inputs_are_checked_in_float64",
               f"{THIS}::test_astype_op"],
    "Softmax": [f"{_OPS_FILE}::test_softmax", f"{THIS}::test_softmax_op_both_backends"],
    "LayerNorm": ["tests/test_kernels.py::test_layer_norm_twins_agree_and_both_pass_the_oracle",
                  f"{_OPS_FILE}::test_layer_norm_affine"],
    "EmbeddingLookup": [f"{_OPS_FILE}::test_embedding", f"{THIS}::test_embedding_op_both_backends"],
    "LinearAct": [_EXPERTS, f"{THIS}::test_fused_op_forward_and_backward_on_one_backend"],
    "HadamardLinear": [_EXPERTS, f"{THIS}::test_fused_op_forward_and_backward_on_one_backend"],
    "Attention": [_EXPERTS, f"{THIS}::test_fused_op_forward_and_backward_on_one_backend"],
    "ProjectedAttention": [_EXPERTS, f"{THIS}::test_fused_op_forward_and_backward_on_one_backend",
                           "tests/test_kernels_experts.py::test_fused_equals_composed"],
    "Conv1dAct": [_EXPERTS, f"{THIS}::test_fused_op_forward_and_backward_on_one_backend"],
    "MaxPool1d": [_EXPERTS, f"{THIS}::test_fused_op_forward_and_backward_on_one_backend"],
    "DispatchRows": ["tests/test_model_routing.py::test_dispatcher_gradients",
                     f"{THIS}::test_dispatch_of_an_intermediate_input_both_backends",
                     f"{THIS}::test_whole_model_objective_eq18"],
    "Combine": ["tests/test_model_routing.py::test_dispatch_onto_a_base_adds_the_base_and_passes_its_gradient",
                f"{THIS}::test_dispatch_of_an_intermediate_input_both_backends"],
}


def _all_functions():
    out, todo = set(), list(Function.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith("adaref.") and cls not in out:
            out.add(cls)
            todo.extend(cls.__subclasses__())
    return out


def test_every_function_subclass_is_named_with_existing_gradcheck_tests():
    """A new op without a gradient check fails here; so does a renamed covering test."""
    found = {cls.__name__ for cls in _all_functions()}
    assert found == set(COVERAGE), (f"ops without coverage: {sorted(found - set(COVERAGE))}; "
                                    f"stale: {sorted(set(COVERAGE) - found)}")
    for op, nodes in COVERAGE.items():
        for node in nodes:
            path, test = node.split("::")
            text = (TESTS.parent / path).read_text()
            assert re.search(rf"^def {test}\(", text, re.M), f"{op}: {node} does not exist"


def test_astype_op():
    """float64 -> float64 (the oracle runs in float64); the float32 round trip is in test_gradcheck."""
    adaref.gradcheck(lambda x: ops.astype(x, np.float64) * x, rng(0).normal(size=(2, 3)))


# ============================================================================
# 1. ops with a kernel, forward and backward on each backend
# ============================================================================
@pytest.mark.parametrize("backend", BACKENDS)
def test_softmax_op_both_backends(backend):
    """(B, N) along axis 1 takes the row kernel; masked (-inf) entries as in eq. 10."""
    x = rng(1).normal(size=(5, 4)) * 2
    mask = ops.topk_mask(x, 2)
    with kernels.use_backend(backend):
        adaref.gradcheck(lambda x: ops.softmax(x, axis=1), x)
        adaref.gradcheck(lambda x: ops.softmax(x, axis=-1) * ops.softmax(x, axis=0), x)
        adaref.gradcheck(lambda x: ops.softmax(ops.where(mask, x, -np.inf), axis=1), x)


@pytest.mark.parametrize("backend", BACKENDS)
def test_embedding_op_both_backends(backend):
    ids = np.array([[0, 3, 3], [5, 0, 3], [1, 1, 1], [2, 5, 0]])      # repeats accumulate
    with kernels.use_backend(backend):
        adaref.gradcheck(lambda w: ops.embedding(w, ids), rng(2).normal(size=(6, 3)))


def _fused_cases():
    r = rng(3)
    a, W, b = r.normal(size=(2, 3, 4)), r.normal(size=(4, 3)), r.normal(size=3)
    u = r.normal(size=(2, 3, 3))
    q, k, v = (r.normal(size=(2, 3, 2, 2)) for _ in range(3))
    mask = np.array([[True, False, True], [True, True, True]])
    x, Wc, bc = r.normal(size=(2, 5, 3)), r.normal(size=(3, 3, 2)), r.normal(size=2)
    pool = r.normal(size=(2, 7, 3))
    xp, Wp, bp = r.normal(size=(2, 3, 3)), [r.normal(size=(3, 4)) for _ in range(3)], r.normal(size=(3, 4))
    return {
        "linear_act_linear": (lambda a, W, b: fused.linear_act(a, W, b, "linear"), (a, W, b)),
        "linear_act_relu": (lambda a, W, b: fused.linear_act(a, W, b, "relu"), (a, W, b)),
        "hadamard_none": (lambda a, W, u: fused.hadamard_linear(a, W, u), (a, W, u)),
        "hadamard_outside": (lambda a, W, u, b: fused.hadamard_linear(a, W, u, b, "outside"), (a, W, u, b)),
        "hadamard_inside": (lambda a, W, u, b: fused.hadamard_linear(a, W, u, b, "inside"), (a, W, u, b)),
        "attention_masked": (lambda q, k, v: fused.attention(q, k, v, mask), (q, k, v)),
        "projected_attention_relu_masked": (
            lambda x, Wq, bq, Wk, bk, Wv, bv: fused.projected_attention(x, Wq, bq, Wk, bk, Wv, bv, 2,
                                                                        "relu", mask),
            (xp, Wp[0], bp[0], Wp[1], bp[1], Wp[2], bp[2])),
        "conv_relu_same": (lambda x, W, b: fused.conv1d_act(x, W, b, (1, 1), "relu"), (x, Wc, bc)),
        "conv_linear_valid": (lambda x, W, b: fused.conv1d_act(x, W, b, (0, 0), "linear"), (x, Wc, bc)),
        "maxpool_p2": (lambda x: fused.maxpool1d(x, 2), (pool,)),
        "maxpool_p3": (lambda x: fused.maxpool1d(x, 3), (pool,)),
    }


FUSED = _fused_cases()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(FUSED))
def test_fused_op_forward_and_backward_on_one_backend(case, backend):
    fn, inputs = FUSED[case]
    with kernels.use_backend(backend):          # around the oracle: backward runs here too
        adaref.gradcheck(fn, *inputs)


# ============================================================================
# 2. the dispatcher with an intermediate input (row-sparse gradient into a non-leaf)
# ============================================================================
class _Expert(Module):
    """y = tanh(x W) * x0 (reads X_0) or tanh(x W) (does not)."""

    def __init__(self, d, seed, uses_x0=True):
        super().__init__()
        self.lin, self.uses_x0 = Linear(d, d, rng=rng(seed)), uses_x0

    def forward(self, x, x0):
        y = ops.tanh(self.lin(x))
        return y * x0 if self.uses_x0 else y


class _Holder(Module):
    def __init__(self, experts, norm):
        super().__init__()
        self.experts, self.norm = ModuleList(experts), norm


def _moe_setup():
    """B = 6 examples, N = 5 experts, F = 2, D = 3. Expert 0 is chosen by every example
    (rows 0..5 in order), expert 4 by none, example 5 only by expert 0; expert 2 does not
    read X_0. The intermediate X gets a dense gradient (the base) and four row-sparse
    ones, so the engine's sparse-to-dense and in-place sparse additions both run."""
    r = rng(4)
    experts = [_Expert(3, 10 + j, uses_x0=(j != 2)) for j in range(5)]
    mask = np.zeros((6, 5), bool)
    mask[:, 0] = True
    mask[[0, 2, 3], 1] = True
    mask[[1, 2, 4], 2] = True
    mask[[0, 1, 3, 4], 3] = True
    w = np.where(mask, r.uniform(0.3, 1.0, size=mask.shape), 0.0)
    norm = LayerNorm(3)
    norm.gain.data[:] = r.uniform(0.5, 1.5, size=3)
    norm.bias.data[:] = r.normal(size=3)
    return experts, mask, w, norm, r.normal(size=(6, 2, 3)), r.normal(size=(6, 2, 3))


def _check_intermediate_dispatch():
    experts, mask, w0, norm, x, x0 = _moe_setup()
    m = Tensor(mask.astype(float))

    def f(x, x0, w):
        xi, x0i = ops.tanh(x), x0 * 1.5                       # computed: not leaves
        return dispatcher.sparse_moe(xi, x0i, mask, w * m, experts, base=xi, norm=norm)[0]

    adaref.gradcheck(f, x, x0, w0)
    adaref.gradcheck_module(lambda: f(Tensor(x), Tensor(x0), Tensor(w0)), _Holder(experts, norm))


def _check_leaf_dispatch():
    """What tests/test_model_routing.py checks: the dispatched inputs are leaves."""
    experts, mask, w0, _, x, x0 = _moe_setup()
    m = Tensor(mask.astype(float))
    adaref.gradcheck(lambda x, x0, w: dispatcher.sparse_moe(x, x0, mask, w * m, experts)[0], x, x0, w0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dispatch_of_an_intermediate_input_both_backends(backend):
    with kernels.use_backend(backend):
        _check_intermediate_dispatch()


# ============================================================================
# 3. experts: every option that changes the computation, one at a time
# ============================================================================
EXPERT_VARIANTS = [
    ("dense", dict(activation="linear")), ("dense", dict(activation="gelu")),
    ("dense", dict(activation="tanh")), ("dense", dict(form="gated", gate_reduction=2)),
    ("dense", dict(form="gated", activation="tanh", gate_reduction=1)),
    ("conv", dict(reshape="dense")), ("conv", dict(reshape="dense", length=5, padding="valid")),
    ("conv", dict(padding="valid")), ("conv", dict(activation="linear")),
    ("conv", dict(activation="gelu")), ("conv", dict(activation="tanh")),
    ("conv", dict(width=2)), ("conv", dict(width=4)), ("conv", dict(pool=1)), ("conv", dict(pool=3)),
    ("conv", dict(filters=2)), ("conv", dict(out_activation="tanh")),
    ("mhsa", dict(heads=1)), ("mhsa", dict(head_size=3)), ("mhsa", dict(qkv_activation="gelu")),
    ("mhsa", dict(out_activation="gelu")), ("mhsa", dict(norm="instance")),
    ("mhsa", dict(readout="flatten")), ("mhsa", dict(out_size=3, readout="flatten")),
    ("pin", dict(subspaces=1)), ("pin", dict(subspaces=2)),
    ("cross", dict(bias="outside")), ("cross", dict(bias="inside")),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,options", EXPERT_VARIANTS,
                         ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items())}" for n, o in EXPERT_VARIANTS])
def test_expert_option_variant(name, options, backend):
    """The paper preset's expert with one option changed, at B = 2, F = 4, D = 2: every
    element of every parameter and of both inputs."""
    config = expert_configs("paper")[name].replace(**options)
    expert = build_expert(name, config, 4, 2, rng=rng(7))
    x, x0 = rng(8).normal(size=(2, 4, 2)), rng(9).normal(size=(2, 4, 2))
    with kernels.use_backend(backend):
        adaref.gradcheck_module(lambda x, x0: expert(x, x0), expert, x, x0)


# ============================================================================
# 4. gate, controller, estimator, layer, LayerNorm, Embedding
# ============================================================================
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("stop_gradient", [False, True])
@pytest.mark.parametrize("temperature", ["log", "raw"])
@pytest.mark.parametrize("combine", ["gates", "switch", "unweighted"])
def test_gate_every_option(combine, temperature, stop_gradient, backend):
    """All four outputs (logits, probs, gates, weights) weighted by fixed directions.
    With stop_gradient the input's gradient is zero by design (only the parameters are
    checked, and x is asserted to get none)."""
    cfg = GateConfig(hidden=3, reduction=2, jitter=0.1, combine=combine, temperature=temperature,
                     tau_init=0.7, stop_gradient=stop_gradient)
    gate = NoisyCosineGate(cfg, 6, 4, rng=rng(0)).eval()
    x = rng(1).normal(size=(5, 2, 3))
    us = [Tensor(rng(20 + i).normal(size=(5, 4))) for i in range(4)]

    def f(x):
        out = gate(x, k=2)
        return ((out.logits * us[0]).sum() + (out.probs * us[1]).sum() + (out.gates * us[2]).sum()
                + (out.weights * us[3]).sum())

    _assert_gate_away_from_kinks(gate, x, 2)
    with kernels.use_backend(backend):
        if stop_gradient:
            adaref.gradcheck_module(lambda: f(Tensor(x)), gate)
            t = Tensor(x, requires_grad=True)
            f(t).backward()
            assert t.grad is None
        else:
            adaref.gradcheck_module(f, gate, x)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("temperature", ["log", "raw"])
def test_depth_controller(temperature, backend):
    cfg = ControllerConfig(gate=GateConfig(hidden=3, reduction=2, temperature=temperature, tau_init=0.8))
    ctl = DepthController(cfg, 6, 3, rng=rng(0)).eval()
    x = rng(1).normal(size=(5, 2, 3))
    u1, u2 = Tensor(rng(2).normal(size=(5, 3))), Tensor(rng(3).normal(size=(5, 3)))

    def f(x):
        d = ctl(x)
        return (d.logits * u1).sum() + (d.probs * u2).sum()

    _assert_gate_away_from_kinks(ctl.gate, x, 1)
    with kernels.use_backend(backend):
        adaref.gradcheck_module(f, ctl, x)


def test_estimator():
    est = Estimator(6, rng=rng(0))
    est.linear.bias.data[:] = 0.3
    adaref.gradcheck_module(lambda x: ops.sigmoid(est(x)), est, rng(1).normal(size=(4, 2, 3)))


VOCAB = [5, 7, 3, 4]


def _config(preset="paper", **changes):
    """As tests/test_model.py: D = 2, gates reduce F*D = 8 by 2."""
    changes.setdefault("dim", 2)
    base = model_config(preset)
    gate = {**base.gate.to_dict(), "reduction": 2, **changes.pop("gate", {})}
    ctl = {**base.controller.to_dict(), "gate": {**base.controller.gate.to_dict(), "reduction": 2}}
    n = changes.get("num_layers", 4)
    if n != 4 and preset == "upstream":
        ctl["depth_prior"] = tuple([1.0 / n] * n)
    moe = {**base.moe.to_dict(), **changes.pop("moe", {})}
    return model_config(preset, gate=gate, moe=moe,
                        controller={**ctl, **changes.pop("controller", {})}, **changes)


def _assert_gate_away_from_kinks(gate, x, k):
    """No example's FFN output h is (nearly) dead (eq. 8 is not differentiable at h = 0)
    and no top-k choice is within 1e-3 of flipping under the oracle's 1e-6 steps."""
    x = Tensor(x)
    h = gate.project(gate._act(gate.reduce(x.reshape(x.shape[0], -1)))).data
    top = -np.sort(-gate.logits(x).data, axis=1)
    assert np.linalg.norm(h, axis=1).min() > 0.05 and np.min(top[:, k - 1] - top[:, k]) > 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("norm", ["layernorm", "none"])
@pytest.mark.parametrize("gate_input", ["x0", "prev"])
@pytest.mark.parametrize("experts", ["paper", "upstream"])
def test_sparse_moe_layer(experts, gate_input, norm, backend):
    """One layer on computed (non-leaf) X_{l-1} and X_0, k = 2 of 5 experts: both inputs
    in full, the parameters sampled (4 elements each)."""
    cfg = _config("paper", expert_preset=experts, gate={"input": gate_input}, moe={"norm": norm})
    layer = SparseMoELayer(cfg, 4, rng=rng(7)).eval()
    if layer.norm is not None:
        layer.norm.gain.data[:] = rng(5).uniform(0.5, 1.5, size=2)
    x, x0 = rng(107).normal(size=(5, 4, 2)), rng(207).normal(size=(5, 4, 2))
    f = lambda x, x0: layer(ops.tanh(x), x0 * 1.5, 2)[0]  # noqa: E731
    with kernels.use_backend(backend):
        _assert_gate_away_from_kinks(layer.gate, x0 * 1.5 if gate_input == "x0" else np.tanh(x), 2)
        adaref.gradcheck(f, x, x0)
        adaref.gradcheck_module(lambda: f(Tensor(x), Tensor(x0)), layer, sample=4, seed=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_layernorm_module(backend):
    ln = LayerNorm(4)
    ln.gain.data[:], ln.bias.data[:] = rng(0).normal(size=4), rng(1).normal(size=4)
    with kernels.use_backend(backend):
        adaref.gradcheck_module(lambda x: ln(x), ln, rng(2).normal(size=(2, 3, 4)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("oov", ["learned", "zero"])
def test_embedding_module(oov, backend):
    """Per-field ids with OOV (0) and repeated rows; zero OOV rows get a zero gradient
    and embed to zero (their numeric derivative is zero too)."""
    emb = Embedding([3, 5, 2], dim=3, rng=rng(0), oov=oov)
    ids = np.array([[0, 4, 1], [2, 4, 0], [0, 0, 1], [1, 3, 1]])
    with kernels.use_backend(backend):
        adaref.gradcheck_module(lambda: emb(ids) * emb(ids[::-1]), emb)


# ============================================================================
# 5. regularisers (eq. 13-16, z-loss)
# ============================================================================
@pytest.mark.parametrize("backend", BACKENDS)
def test_regularisers(backend):
    logits = rng(0).normal(size=(6, 4)) * 1.5
    mask = ops.topk_mask(logits, 2)
    prior = np.array([0.1, 0.2, 0.3, 0.4])
    with kernels.use_backend(backend):
        for mode in ("argmax", "topk"):                        # eq. 14 / the authors' top-k
            f = load_fractions(ops.softmax(Tensor(logits), axis=1), mask, mode)
            adaref.gradcheck(lambda g: balance_loss(ops.softmax(g, axis=1), f), logits)          # eq. 13
            adaref.gradcheck(lambda g: distribution_loss(ops.softmax(g, axis=1), f, prior), logits)  # eq. 16
            adaref.gradcheck(lambda g: distribution_loss(ops.softmax(g, axis=1), f), logits)
        adaref.gradcheck(z_loss, logits)
        adaref.gradcheck(lambda g: z_loss(g * 3.0) + z_loss(g[:3]), logits)


# ============================================================================
# 6. the whole model and the objective of eq. 18
# ============================================================================
def _model(preset="paper", **changes):
    """Seeds chosen so that no gate sits at a kink (checked) and the hard exit uses both depths."""
    model = AdaEnsemble(_config(preset, num_layers=2, **changes), VOCAB, rng=rng(5)).eval()
    x0 = model.embedding(_ids()).data
    gates = [(layer.gate, 2) for layer in model.layers]
    if model.config.controller.enabled:
        gates.append((model.controller.gate, 1))
    for gate, k in gates:
        _assert_gate_away_from_kinks(gate, x0, k)
    return model


def _ids(b=8, seed=2):
    r = rng(seed)
    return np.stack([r.integers(0, v, size=b) for v in VOCAB], axis=1)


def _check_model(model, loss, sample=3):
    """The embedding table in full (its gradient crosses every layer's dispatch of
    computed feature maps), every other parameter at ``sample`` elements."""
    adaref.gradcheck_module(loss, model, include=lambda n: n.startswith("embedding."))
    adaref.gradcheck_module(loss, model, include=lambda n: not n.startswith("embedding."),
                            sample=sample, seed=3)


MODEL_CASES = {
    "soft": dict(form="soft", changes={}),
    "hard": dict(form="hard", changes={}),
    "full_no_controller": dict(form=None, changes={"controller": {"enabled": False}}),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_whole_model_objective_eq18(case, backend):
    """Paper preset with the z-loss on: eq. 18 = LogLoss (from the probability in the
    soft mixture, from the logit for the hard exit and full depth) + lambda_1 eq. 16
    over layers + lambda_2 eq. 16 over depths + z z-loss."""
    spec = MODEL_CASES[case]
    model = _model(moe={"z_loss": True}, **spec["changes"])
    ids, labels = _ids(), rng(3).integers(0, 2, 8)
    with kernels.use_backend(backend):
        out = model(ids, k=2, form=spec["form"])
        assert (out.logit is None) == (case == "soft") and (out.z_loss is not None)
        if case == "hard":
            assert len(set(out.routing.exit_depth.tolist())) == 2    # both depths are used
        _check_model(model, lambda: objective(model(ids, k=2, form=spec["form"]), labels,
                                              0.3, 0.2, z=0.1)[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_whole_model_upstream_hard(backend):
    """Upstream preset (unweighted, stop-gradient gates; zero OOV; no norm): the task
    loss over every parameter; the regularisers over the gates (their inputs are cut
    from the embedding by design, so the embedding is left out there)."""
    model = _model("upstream")
    ids, labels = _ids(), rng(3).integers(0, 2, 8)
    with kernels.use_backend(backend):
        assert len(set(model(ids, k=2, form="hard").routing.exit_depth.tolist())) == 2
        _check_model(model, lambda: log_loss(model(ids, k=2, form="hard"), labels))

        def regularisers():
            out = model(ids, k=2, form="hard")
            return out.expert_loss + out.depth_loss * 0.5 + out.z_loss * 0.1

        adaref.gradcheck_module(regularisers, model, include=lambda n: ".gate." in n, sample=2)


def _check_module_vjp(forward_fn, vjp_fn, module, include, **options):
    """check_vjp over a module's parameters, with separate forward and VJP functions."""
    named = [(n, p) for n, p in module.named_parameters() if include(n)]
    originals = [p.data for _, p in named]

    def install(arrays):
        for (_, p), a in zip(named, arrays):
            p.data = a

    def forward(*arrays):
        install(arrays)
        return forward_fn().data

    def vjp(u, *arrays):
        install(arrays)
        module.zero_grad()
        vjp_fn().backward(u)
        return [p.grad for _, p in named]

    try:
        return adaref.check_vjp(forward, vjp, *originals, names=[n for n, _ in named], **options)
    finally:
        for (_, p), a in zip(named, originals):
            p.data, p.grad = a, None


@pytest.mark.parametrize("backend", BACKENDS)
def test_straight_through_vjp_is_the_jacobian_of_its_surrogate(backend):
    """Forward: the hard exit's prediction sum_l m_l y_l. VJP: the soft mixture's, i.e.
    the Jacobian at the point of S = sum_l m0_l y_l + sum_l p_l y0_l with the exit mask m0
    and the estimators' predictions y0 frozen at the point (weights m + p - sg(p))."""
    model = _model()
    ids = _ids()

    def parts():
        x0 = model.embedding(ids)
        depth = model.controller(x0)
        logits, _, _ = model._all_layers(x0, 2, None, [], "soft")
        return depth, ops.sigmoid(ops.stack(logits, axis=1))                    # (B, L)

    with kernels.use_backend(backend):
        with adaref.no_grad():
            depth0, y0 = parts()
        m0 = depth0.mask.astype(float)
        assert 0 < m0[:, 0].sum() < len(ids)

        def surrogate():
            depth, y = parts()
            return ops.sum(y * m0, axis=1) + ops.sum(depth.probs * y0.data, axis=1)

        st = lambda: model(ids, k=2, form="straight_through").prob  # noqa: E731
        np.testing.assert_allclose(st().data, (m0 * y0.data).sum(axis=1), rtol=1e-12)
        _check_module_vjp(surrogate, st, model, lambda n: n.startswith("embedding."))
        _check_module_vjp(surrogate, st, model, lambda n: not n.startswith("embedding."),
                          sample=2, seed=3)


# ============================================================================
# 7. mutants: a wrong backward makes these checks fail
# ============================================================================
def _scaled_intermediate_dispatch(monkeypatch):
    """DispatchRows' row-sparse gradient (intermediate input only) off by 10%."""
    original = dispatcher.DispatchRows.backward

    def wrong(self, g):
        if self.parents[0]._ctx is not None:
            return (RowSparseGrad(self.rows, g * 1.1, self.shape),)
        return original(self, g)

    monkeypatch.setattr(dispatcher.DispatchRows, "backward", wrong)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mutant_intermediate_dispatch_gradient_is_caught(backend, monkeypatch):
    _scaled_intermediate_dispatch(monkeypatch)
    with kernels.use_backend(backend):
        _check_leaf_dispatch()                     # the leaf-input check cannot see it ...
        with pytest.raises(GradcheckError, match="wrong gradient for input 0"):
            _check_intermediate_dispatch()         # ... the intermediate-input one does
        model, ids, labels = _model(), _ids(), rng(3).integers(0, 2, 8)
        with pytest.raises(GradcheckError, match="embedding.weight"):
            _check_model(model, lambda: objective(model(ids, k=2, form="soft"), labels, 0.3, 0.2)[0])


def test_mutant_numpy_twin_of_a_fused_backward_is_caught(monkeypatch):
    """A wrong NumPy twin of hadamard_backward: invisible when only the forward runs under
    the backend switch (tests/test_kernels_experts.py's ``on()``), caught here."""
    original = khad.hadamard_backward.numpy_impl

    def wrong(gz, gu, gb, g, z, u, b, mode):
        original(gz, gu, gb, g, z, u, b, mode)
        gu *= 1.5

    monkeypatch.setattr(khad.hadamard_backward, "numpy_impl", wrong)
    fn, inputs = FUSED["hadamard_inside"]

    def forward_only_on_numpy(*t):
        with kernels.use_backend("numpy"):
            return fn(*t)

    adaref.gradcheck(forward_only_on_numpy, *inputs)          # passes: backward ran on Numba
    with pytest.raises(GradcheckError, match="wrong gradient for input 2"):
        test_fused_op_forward_and_backward_on_one_backend("hadamard_inside", "numpy")
    test_fused_op_forward_and_backward_on_one_backend("hadamard_inside", "numba")


def test_mutant_numpy_twin_of_the_engines_sparse_add_is_caught(monkeypatch):
    """The engine adds the dispatcher's row-sparse gradients into a computed tensor's
    gradient with scatter_add_unique_rows; a wrong NumPy twin fails the numpy run."""
    original = kernels.scatter_add_unique_rows.numpy_impl

    def wrong(out, index, values):
        original(out, index[:-1], values[:-1])           # drops the last row

    monkeypatch.setattr(kernels.scatter_add_unique_rows, "numpy_impl", wrong)
    with pytest.raises(GradcheckError):
        test_dispatch_of_an_intermediate_input_both_backends("numpy")
    test_dispatch_of_an_intermediate_input_both_backends("numba")


@pytest.mark.parametrize("backend", BACKENDS)
def test_mutant_embedding_backward_that_does_not_accumulate_is_caught(backend, monkeypatch):
    from adaref.ops import EmbeddingLookup

    def wrong(self, g):                                  # last occurrence wins, no sum
        dense = np.zeros(self.shape, dtype=g.dtype)
        dense[self.ids.reshape(-1)] = g.reshape(-1, self.shape[1])
        return (dense,)

    monkeypatch.setattr(EmbeddingLookup, "backward", wrong)
    with pytest.raises(GradcheckError):
        test_embedding_op_both_backends(backend)
    with pytest.raises(GradcheckError, match="parameter weight"):
        test_embedding_module("learned", backend)


def test_mutant_combine_weight_gradient_is_caught(monkeypatch):
    """Combine's gradient for the gate weights off by 10%: the dispatcher and layer checks fail."""
    original = dispatcher.Combine.backward

    def wrong(self, g):
        grads = original(self, g)
        return (None if grads[0] is None else grads[0] * 1.1,) + tuple(grads[1:])

    monkeypatch.setattr(dispatcher.Combine, "backward", wrong)
    with pytest.raises(GradcheckError, match="input 2"):
        test_dispatch_of_an_intermediate_input_both_backends("numpy")
    with pytest.raises(GradcheckError, match="x0"):          # through the gate, which reads X_0
        test_sparse_moe_layer("paper", "x0", "layernorm", "numba")


def test_mutant_softmax_backward_is_caught_by_gate_controller_regulariser_and_st_checks(monkeypatch):
    """A softmax VJP that forgets to subtract sum(g y): the gate, controller, regulariser
    and straight-through checks all fail."""
    monkeypatch.setattr(ops.Softmax, "backward", lambda self, g: (self.y * g,))
    checks = [lambda: test_gate_every_option("switch", "log", False, "numpy"),
              lambda: test_depth_controller("raw", "numba"),
              lambda: test_regularisers("numpy"),
              lambda: test_straight_through_vjp_is_the_jacobian_of_its_surrogate("numba")]
    for check in checks:
        with pytest.raises(GradcheckError):
            check()
