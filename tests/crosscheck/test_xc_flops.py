"""Row 24 (FLOPs: a multiply-add is 2 FLOPs, per example) checked from outside: the
PyTorch implementation's forward is run under a dispatch mode that counts every aten op
it executes with the convention stated in adaref.experts.base (matmul 2mnk, bias and
elementwise ops 1 per output, a sum of n terms n, softmax 5n - 1, a maximum of n terms
n - 1, a normalisation of n values with gain and bias 7n + 4, layout ops 0). The count
per example is the slope between two batch sizes (so per-batch work, such as
normalising the expert embeddings once, is excluded), and is compared with adaref's
``flops()`` formulas."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from adaref.experts import build_expert, expert_configs
from adaref.model import GateConfig
from adaref.model.estimator import Estimator
from adaref.model.gate import NoisyCosineGate

from adaref.crosscheck import torch_port as xt

import xc_support as xs

ZERO = {"view", "t", "transpose", "clone", "_unsafe_view", "unsqueeze", "squeeze", "permute",
        "constant_pad_nd", "repeat", "empty", "expand", "slice", "select", "reshape", "alias",
        "detach", "sort", "zeros_like", "scatter", "masked_fill", "_to_copy", "lift_fresh",
        "zeros", "ones_like", "new_zeros", "copy_", "fill_", "index_select", "embedding",
        "lt", "gt", "ne", "eq", "bitwise_not", "logical_not", "randn"}
ELEMENTWISE = {"add", "sub", "mul", "div", "relu", "gelu", "sigmoid", "tanh", "exp", "sqrt",
               "rsqrt", "neg", "clamp", "clamp_min", "maximum", "pow"}


def _numel(t):
    return int(np.prod(t.shape)) if isinstance(t, torch.Tensor) else 1


class Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.total = 0
        self.unknown = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        a = args
        if name in ZERO:
            pass
        elif name == "addmm":
            (m, k), n = a[1].shape, a[2].shape[1]
            self.total += 2 * m * k * n + m * n
        elif name == "mm":
            (m, k), n = a[0].shape, a[1].shape[1]
            self.total += 2 * m * k * n
        elif name == "bmm":
            b, m, k = a[0].shape
            self.total += 2 * b * m * k * a[1].shape[2]
        elif name == "convolution":
            b, c, length = a[0].shape
            o, _, k = a[1].shape
            t = length - k + 1
            self.total += b * o * t * (2 * k * c + (1 if a[2] is not None else 0))
        elif name.startswith("_scaled_dot_product"):
            b, h, f, dh = a[0].shape
            self.total += b * h * (2 * f * f * dh + f * f + f * (5 * f - 1) + 2 * f * f * dh)
        elif name == "max_pool2d_with_indices":
            p = a[1][-1]
            self.total += _numel(out[0]) * (p - 1)
        elif name == "native_batch_norm":
            x, w = a[0], a[1]
            n = int(np.prod(x.shape[2:]))
            groups = x.shape[0] * x.shape[1]
            self.total += groups * ((7 if w is not None else 5) * n + 4)
        elif name == "native_layer_norm":
            x, shape, w = a[0], a[1], a[2]
            n = int(np.prod(shape))
            self.total += (_numel(x) // n) * ((7 if w is not None else 5) * n + 4)
        elif name == "_softmax":
            x, dim = a[0], a[1]
            n = x.shape[dim]
            self.total += (_numel(x) // n) * (5 * n - 1)
        elif name == "sum":
            self.total += _numel(a[0])
        elif name in ELEMENTWISE:
            self.total += _numel(out)
        else:
            self.unknown.add(name)
        return out


def per_example(fn, sizes=(2, 5)):
    counts = []
    for b in sizes:
        with Count() as c:
            fn(b)
        assert not c.unknown, f"ops without a FLOP rule: {c.unknown}"
        counts.append(c.total)
    slope = (counts[1] - counts[0]) / (sizes[1] - sizes[0])
    assert slope == int(slope)
    return int(slope)


@pytest.mark.parametrize("preset", ["paper", "upstream"])
@pytest.mark.parametrize("name", ["dense", "conv", "mhsa", "pin", "cross"])
@pytest.mark.parametrize("f,d", [(39, 16), (38, 16), (7, 4)])
def test_expert_flops(name, preset, f, d, rng):
    cfg = expert_configs(preset)[name]
    expert = build_expert(name, cfg, f, d, rng=rng)
    p = xs.to_torch(expert, requires_grad=False)

    def run(b):
        x = torch.randn(b, f, d, dtype=torch.float64)
        xt.EXPERTS[name](p, cfg, x, x)
    assert per_example(run) == expert.flops()


@pytest.mark.parametrize("name,options", [("pin", {"subspaces": 2}), ("pin", {"subspaces": 1}),
                                          ("conv", {"width": 4}), ("dense", {"form": "gated"}),
                                          ("mhsa", {"norm": "instance", "readout": "flatten",
                                                    "out_size": 6})])
def test_expert_flops_options(name, options, rng):
    cfg = expert_configs("paper")[name].replace(**options)
    expert = build_expert(name, cfg, 9, 4, rng=rng)
    p = xs.to_torch(expert, requires_grad=False)

    def run(b):
        x = torch.randn(b, 9, 4, dtype=torch.float64)
        xt.EXPERTS[name](p, cfg, x, x)
    assert per_example(run) == expert.flops()


def _gate_count(cfg, f, d, n, rng):
    gate = NoisyCosineGate(cfg, f * d, n, rng=rng)
    p = xs.to_torch(gate, requires_grad=False)

    def run(b):
        xt.gate(p, cfg, torch.randn(b, f, d, dtype=torch.float64), 2)
    return gate, per_example(run)


def test_gate_flops(rng):
    """The op-level count of the torch gate plus the top-k selection, which adaref counts
    as k successive maxima, each over the scores not yet chosen ((N - 1) + ... + (N - k)
    comparisons), and the op counter does not see (torch.topk is not an arithmetic op)."""
    n = 5
    for act in ("relu", "linear"):                # a linear FFN activation costs nothing
        for k in range(1, n + 1):
            gate, counted = _gate_count(GateConfig(jitter=0.0, reduction=4, activation=act), 6, 4, n, rng)
            assert counted + sum(n - 1 - i for i in range(k)) == gate.flops(k)


def test_gate_flops_count_the_jitter_in_training_mode(rng):
    """Eq. 7's noise multiplies each of the F*D inputs once, in training mode only."""
    gate = NoisyCosineGate(GateConfig(jitter=0.1, reduction=4), 24, 5, rng=rng)
    served = gate.eval().flops(2)
    assert gate.train().flops(2) == served + 24
    still = NoisyCosineGate(GateConfig(jitter=0.0, reduction=4), 24, 5, rng=rng)
    assert still.train().flops(2) == still.eval().flops(2)


def test_estimator_flops(rng):
    est = Estimator(24, rng=rng)
    p = xs.to_torch(est, requires_grad=False)

    def run(b):
        x = torch.randn(b, 24, dtype=torch.float64)
        torch.sigmoid(torch.nn.functional.linear(x, p["linear.weight"], p["linear.bias"]))
    assert per_example(run) == est.flops()


def test_layer_norm_flops(rng):
    from adaref.model import model_config
    from adaref.model.moe_layer import SparseMoELayer
    f, d = 6, 4
    layer = SparseMoELayer(model_config("paper", dim=d), f, rng=rng)
    ln = layer.fixed_flops(2) - layer.gate.flops(2) - f * d        # minus gate and residual

    gain, bias = torch.ones(d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64)

    def run(b):
        x = torch.randn(b, f, d, dtype=torch.float64)
        torch.nn.functional.layer_norm(x, (d,), gain, bias)
    assert per_example(run) == ln


@pytest.mark.parametrize("preset,form", [("paper", "hard"), ("paper", "soft"),
                                         ("upstream", "hard")])
def test_route_flops_follow_each_examples_route(preset, form, rng):
    """ModelOutput.flops: per example, the depth gate, then at every layer it reaches the
    layer's fixed cost, its selected experts and 2 F D per selected expert (the weighted
    combine), then its estimator (hard) or all L estimators and the 2L of the mixture
    (soft). Routes (exit depths, masks) are taken from the torch reference."""
    from adaref.model import AdaEnsemble, model_config
    vocab = [5, 4, 6, 3]
    cfg = model_config(preset, dim=4, num_layers=4)
    cfg = cfg.replace(gate=cfg.gate.replace(jitter=0.0),
                      controller=cfg.controller.replace(gate=cfg.controller.gate.replace(jitter=0.0)))
    model = AdaEnsemble(cfg, vocab, rng=rng).eval()
    state = {n: rng.standard_normal(p.shape) for n, p in model.named_parameters()}
    model.load_state_dict(state)
    ids = np.stack([rng.integers(0, v, 16) for v in vocab], axis=1)
    out = model(ids, k=2, form=form)
    ecfgs = {n: model.layers[0].experts[n].config for n in cfg.moe.experts}
    ref = xt.model_forward(xs.to_torch(model, state, requires_grad=False), cfg, ecfgs, vocab, ids, 2, form)
    fd = len(vocab) * 4
    want = np.full(len(ids), model.controller.flops())
    for l, layer in enumerate(model.layers):
        reached = (ref["exit_depth"].numpy() >= l + 1) if form == "hard" else np.ones(len(ids), bool)
        mask = ref["masks"][l].numpy()
        per = layer.fixed_flops(2) + mask @ layer.expert_flops() + 2 * fd * mask.sum(1)
        want += np.where(reached, per, 0)
    est = model.estimators[0].flops()
    want += est if form == "hard" else 4 * est + 2 * 4
    np.testing.assert_array_equal(out.flops, want)
