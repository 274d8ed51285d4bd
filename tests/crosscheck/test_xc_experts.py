"""Each expert of adaref.experts against the PyTorch implementation of
adaref.crosscheck.torch_port, for both
presets' configs (and a few options), with random (non-zero) weights and biases copied
into torch by name and layout (the
port's layout mapping: the conv output Dense reads its input channel-major): outputs and all gradients (inputs and parameters)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import adaref
from adaref.experts import build_expert, expert_configs
from adaref.tensor import dense

from adaref.crosscheck import torch_port as xt

import xc_support as xs

RTOL, ATOL = 1e-10, 1e-12
F_, D_, B_ = 14, 4, 6


def randomise(module, rng, scale=0.5):
    """Replace every parameter by random values (adaref initialises biases at zero,
    which would hide a misplaced bias), keeping shapes."""
    state = {n: rng.standard_normal(p.shape) * scale for n, p in module.named_parameters()}
    for n in state:
        if n.endswith("gamma"):
            state[n] = 1.0 + state[n]
    module.load_state_dict(state)
    return state


def check_expert(name, cfg, rng, f=F_, d=D_):
    expert = build_expert(name, cfg, f, d, rng=rng)
    state = randomise(expert, rng)
    x, x0 = rng.standard_normal((B_, f, d)), rng.standard_normal((B_, f, d))
    # adaref
    xa, x0a = adaref.Tensor(x, requires_grad=True), adaref.Tensor(x0, requires_grad=True)
    ya = expert(xa, x0a)
    u = rng.standard_normal(ya.shape)
    ya.backward(u)
    # torch
    p = xs.to_torch(expert, state)
    xtt, x0t = torch.tensor(x, requires_grad=True), torch.tensor(x0, requires_grad=True)
    yt = xt.EXPERTS[name](p, expert.config, xtt, x0t)
    yt.backward(torch.from_numpy(u))
    diffs = {"out": np.max(np.abs(ya.data - yt.detach().numpy()))}
    np.testing.assert_allclose(ya.data, yt.detach().numpy(), rtol=RTOL, atol=ATOL, err_msg="forward")
    np.testing.assert_allclose(xa.grad, xtt.grad.numpy(), rtol=RTOL, atol=ATOL, err_msg="grad x")
    g0 = np.zeros_like(x0) if x0a.grad is None else x0a.grad
    np.testing.assert_allclose(g0, x0t.grad.numpy() if x0t.grad is not None else 0 * x0,
                               rtol=RTOL, atol=ATOL, err_msg="grad x0")
    tg = xs.grads_to_adaref(expert, p)
    for n, prm in expert.named_parameters():
        np.testing.assert_allclose(dense(prm.grad), tg[n], rtol=RTOL, atol=ATOL, err_msg=f"grad {n}")
        diffs[n] = np.max(np.abs(dense(prm.grad) - tg[n]))
    return expert, diffs


@pytest.mark.parametrize("preset", ["paper", "upstream"])
@pytest.mark.parametrize("name", ["dense", "conv", "mhsa", "pin", "cross"])
def test_expert_presets(name, preset, rng):
    cfg = expert_configs(preset)[name]
    check_expert(name, cfg, rng)


@pytest.mark.parametrize("name,options", [
    ("conv", {"width": 4}),                      # even width, 'same': TF puts the extra zero right
    ("conv", {"width": 5, "pool": 3}),
    ("conv", {"reshape": "dense", "padding": "same", "activation": "relu"}),
    ("mhsa", {"heads": 4, "head_size": 3, "out_size": 5, "readout": "flatten",
              "norm": "instance", "qkv_activation": "gelu_tanh", "out_activation": "tanh"}),
    ("mhsa", {"heads": 1}),
    ("pin", {"subspaces": 1}),
    ("pin", {"subspaces": 2}),
    ("dense", {"form": "gated", "activation": "linear"}),
    ("dense", {"activation": "gelu"}),
])
def test_expert_options(name, options, rng):
    cfg = expert_configs("paper")[name].replace(**options)
    check_expert(name, cfg, rng)


def test_upstream_shapes_at_authors_size(rng):
    """F = 38, D = 16 (the authors' Criteo setting), upstream conv and MHSA."""
    for name in ("conv", "mhsa"):
        expert, _ = check_expert(name, expert_configs("upstream")[name], rng, f=38, d=16)
    assert expert.Wf.shape == (38 * 8, 38 * 16)


def test_maxpool_ties_first_position_like_torch(rng):
    """The conv expert's pooling routes a tied window's gradient to its first maximal
    position (adaref.experts.fused.maxpool1d), as torch.nn.functional.max_pool1d does on
    CPU; adaref.ops.max (and maxpool1d_composed) would share it instead."""
    from adaref.experts.fused import maxpool1d
    x = np.round(rng.standard_normal((2, 7, 3)), 0)            # many ties
    x[0, 0:2, 0] = 1.0
    xa = adaref.Tensor(x.copy(), requires_grad=True)
    ya = maxpool1d(xa, 2)
    xtt = torch.tensor(x.copy(), requires_grad=True)
    yt = torch.nn.functional.max_pool1d(xtt.transpose(1, 2), 2, 2).transpose(1, 2)
    np.testing.assert_array_equal(ya.data, yt.detach().numpy())
    u = rng.standard_normal(ya.shape)
    ya.backward(u)
    yt.backward(torch.from_numpy(u))
    np.testing.assert_allclose(xa.grad, xtt.grad.numpy(), rtol=RTOL, atol=ATOL)
