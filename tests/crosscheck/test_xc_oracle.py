"""adaref.check_vjp (adaref's array-level gradient oracle) applied to the *PyTorch*
implementation in adaref.crosscheck.torch_port: a demonstration that the oracle checks another framework's
gradients (central differences of the torch forward against torch.autograd's VJP)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import adaref
from adaref.experts import expert_configs
from adaref.model import GateConfig

from adaref.crosscheck import torch_port as xt

import xc_support as xs


def torch_vjp_pair(fn):
    """forward(*arrays) -> array and vjp(u, *arrays) -> grads, for a torch function of
    float64 tensors."""
    def forward(*arrays):
        with torch.no_grad():
            return fn(*[torch.from_numpy(a) for a in arrays]).numpy()

    def vjp(u, *arrays):
        ts = [torch.tensor(a, requires_grad=True) for a in arrays]
        fn(*ts).backward(torch.from_numpy(u))
        return [np.zeros_like(a) if t.grad is None else t.grad.numpy() for a, t in zip(arrays, ts)]
    return forward, vjp


@pytest.mark.parametrize("name,preset", [("cross", "paper"), ("mhsa", "upstream"),
                                         ("conv", "paper")])
def test_check_vjp_on_torch_expert(name, preset, rng):
    f, d, b = 5, 4, 3
    cfg = expert_configs(preset)[name]
    from adaref.experts import build_expert
    expert = build_expert(name, cfg, f, d, rng=rng)
    names = [n for n, _ in expert.named_parameters()]
    # torch-layout parameter arrays (what the torch module holds)
    p0 = {n: v.detach().numpy().copy() for n, v in xs.to_torch(
        expert, {n: rng.standard_normal(p.shape) * 0.5 for n, p in expert.named_parameters()}).items()}

    def fn(x, x0, *params):
        return xt.EXPERTS[name](dict(zip(names, params)), cfg, x, x0)
    forward, vjp = torch_vjp_pair(fn)
    x, x0 = rng.standard_normal((b, f, d)), rng.standard_normal((b, f, d))
    assert adaref.check_vjp(forward, vjp, x, x0, *[p0[n] for n in names],
                            names=["x", "x0"] + names, sample=12)


def test_check_vjp_on_torch_gate(rng):
    cfg = GateConfig(jitter=0.0, reduction=4)
    f, d, n = 3, 4, 5
    from adaref.model.gate import NoisyCosineGate
    gate = NoisyCosineGate(cfg, f * d, n, rng=rng)
    names = [nm for nm, _ in gate.named_parameters()]
    p0 = xs.to_torch(gate, {nm: p.data + 0.1 * rng.standard_normal(p.shape)
                            for nm, p in gate.named_parameters()})

    def fn(x0, *params):
        _, probs, _, gates, _ = xt.gate(dict(zip(names, params)), cfg, x0, 2)
        return torch.cat([probs, gates], 1)       # the top-k set is locally constant
    forward, vjp = torch_vjp_pair(fn)
    x0 = rng.standard_normal((4, f, d))
    assert adaref.check_vjp(forward, vjp, x0, *[p0[nm].detach().numpy() for nm in names],
                            names=["x0"] + names)


def test_check_vjp_catches_a_wrong_torch_gradient(rng):
    """The oracle fails a torch function whose autograd gradient is wrong (a detach()
    that drops the Hadamard factor's gradient in the Cross expert)."""
    cfg = expert_configs("paper")["cross"]
    w = rng.standard_normal((8, 8)) * 0.3
    b = rng.standard_normal(8)

    def wrong(x, x0):
        return xt.cross_expert({"W": torch.from_numpy(w), "b": torch.from_numpy(b)}, cfg,
                               x, x0.detach())
    forward, vjp = torch_vjp_pair(wrong)
    x, x0 = rng.standard_normal((2, 2, 4)), rng.standard_normal((2, 2, 4))
    with pytest.raises(adaref.GradcheckError, match="x0"):
        adaref.check_vjp(forward, vjp, x, x0, names=["x", "x0"])
