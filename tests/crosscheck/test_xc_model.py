"""The gate (eqs. 7-11), the sparse dispatcher (eq. 12), the regularisers (eqs. 13-16,
z-loss) and the whole AdaEnsemble model (both presets; soft, straight-through and hard
forms; no controller) against the PyTorch implementation of
adaref.crosscheck.torch_port, same weights and
inputs: outputs and every parameter gradient (float64)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import adaref
from adaref.experts import build_expert, expert_configs
from adaref.model import AdaEnsemble, GateConfig, model_config
from adaref.model.dispatcher import sparse_moe
from adaref.model.gate import NoisyCosineGate
from adaref.model.regularizers import balance_loss, distribution_loss, load_fractions, z_loss
from adaref.tensor import dense

from adaref.crosscheck import torch_port as xt

import xc_support as xs

RTOL, ATOL = 1e-10, 1e-12


def close(a, t, what):
    a = np.asarray(dense(a) if not isinstance(a, np.ndarray) else a, dtype=float)
    t = np.asarray(t, dtype=float)
    np.testing.assert_allclose(a, t, rtol=RTOL, atol=ATOL, err_msg=what)
    return float(np.max(np.abs(a - t))) if a.size else 0.0


def randomise(module, rng, scale=0.5):
    state = {}
    for n, p in module.named_parameters():
        v = rng.standard_normal(p.shape) * scale
        if n.endswith(("gain", "gamma")):
            v = 1.0 + v
        if n.endswith(".tau") or n == "tau":
            v = 0.5 + np.abs(v)                  # raw tau: positive here
        state[n] = v
    module.load_state_dict(state)
    return state


GATES = {
    "paper": GateConfig(jitter=0.0, reduction=4),
    "upstream": model_config("upstream").gate.replace(jitter=0.0, reduction=4),
    "switch": GateConfig(jitter=0.0, reduction=4, combine="switch", activation="gelu"),
    "prev-input": GateConfig(jitter=0.0, reduction=4, input="prev"),
}


# --- gate -------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("which", ["paper", "upstream", "switch"])
def test_gate(which, k, rng):
    cfg = GATES[which]
    f, d, n, b = 5, 4, 5, 12
    gate = NoisyCosineGate(cfg, f * d, n, rng=rng)
    state = randomise(gate, rng)
    x0 = rng.standard_normal((b, f, d))
    xa = adaref.Tensor(x0, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = gate(xa, k)
    p = xs.to_torch(gate, state)
    xtt = torch.tensor(x0, requires_grad=True)
    g, probs, mask, gates, w = xt.gate(p, cfg, xtt, k)
    assert np.array_equal(out.mask, mask.numpy())
    us = [rng.standard_normal((b, n)) for _ in range(4)]
    total_a = 0
    total_t = 0
    for u, ya, yt, what in zip(us, [out.logits, out.probs, out.gates, out.weights],
                               [g, probs, gates, w], ["logits", "probs", "gates", "weights"]):
        close(ya.data, yt.detach().numpy(), what)
        total_a = total_a + (ya * u).sum()
        total_t = total_t + (yt * torch.from_numpy(u)).sum()
    total_a.backward()
    total_t.backward()
    if cfg.stop_gradient:
        assert xa.grad is None or not np.any(dense(xa.grad)) and xtt.grad is None
    else:
        close(xa.grad, xtt.grad.numpy(), "grad x0")
    tg = xs.grads_to_adaref(gate, p)
    for name, prm in gate.named_parameters():
        close(prm.grad if prm.grad is not None else np.zeros(prm.shape), tg[name], f"grad {name}")


def test_gate_topk_ties_lowest_index():
    """Equal scores (row 12): identical expert embeddings give equal g_j; the lowest
    index must win on both sides."""
    cfg = GATES["paper"]
    gate = NoisyCosineGate(cfg, 8, 4, rng=np.random.default_rng(0))
    e = gate.embeddings.data
    e[2] = e[1]
    e[3] = e[0]
    x = np.random.default_rng(1).standard_normal((20, 2, 4))
    p = xs.to_torch(gate)
    for k in (1, 2, 3):
        out = gate(adaref.Tensor(x), k)
        _, _, mask, _, _ = xt.gate(p, cfg, torch.tensor(x), k)
        assert np.array_equal(out.mask, mask.numpy())
    out = gate(adaref.Tensor(x), 1)
    assert not out.mask[:, 2:].any()          # 2 ties with 1 and 3 with 0: the lower wins


# --- dispatcher -------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["paper", "upstream"])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_sparse_dispatcher_eq12(preset, k, rng):
    """adaref's sparse gather/scatter against the dense sum over all experts."""
    f, d, b = 5, 4, 10
    cfgs = expert_configs(preset)
    names = list(cfgs)
    experts = [build_expert(nm, cfgs[nm], f, d, rng=rng) for nm in names]
    states = [randomise(e, rng) for e in experts]
    x, x0 = rng.standard_normal((b, f, d)), rng.standard_normal((b, f, d))
    logits = rng.standard_normal((b, len(names)))
    mask = adaref.ops.topk_mask(logits, k)
    mask[0] = False
    mask[0, -1] = True                                      # example 0 -> last expert only
    if k == 1:
        mask[:, 1] = False                                  # expert 1 receives nobody
        mask[mask.sum(1) == 0, 0] = True
    wts = np.where(mask, rng.uniform(0.2, 1.0, mask.shape), 0.0)
    xa, x0a, wa = (adaref.Tensor(v, requires_grad=True) for v in (x, x0, wts))
    ya, rows = sparse_moe(xa, x0a, mask, wa, experts)
    ps = [xs.to_torch(e, s) for e, s in zip(experts, states)]
    xtt, x0t, wt = (torch.tensor(v, requires_grad=True) for v in (x, x0, wts))
    fns = [(lambda fn, p, c: (lambda a, a0: fn(p, c, a, a0)))(xt.EXPERTS[nm], p, cfgs[nm])
           for nm, p in zip(names, ps)]
    yt = xt.moe_combine(xtt, x0t, wt, fns)
    close(ya.data, yt.detach().numpy(), "combine forward")
    u = rng.standard_normal(ya.shape)
    ya.backward(u)
    yt.backward(torch.from_numpy(u))
    close(xa.grad, xtt.grad.numpy(), "grad x")
    close(x0a.grad if x0a.grad is not None else np.zeros_like(x0), x0t.grad.numpy(), "grad x0")
    # weights: adaref's gradient is defined on the selected set only (zero elsewhere);
    # the dense reference has <g, E_j(x)> everywhere: compare on the mask.
    close(np.where(mask, wa.grad, 0), np.where(mask, wt.grad.numpy(), 0), "grad w (selected)")
    assert not np.any(wa.grad[~mask])
    for e, p in zip(experts, ps):
        tg = xs.grads_to_adaref(e, p)
        for name, prm in e.named_parameters():
            got = np.zeros(prm.shape) if prm.grad is None else dense(prm.grad)
            close(got, tg[name], f"grad {e.name}.{name}")


# --- regularisers -----------------------------------------------------------------
@pytest.mark.parametrize("mode", ["argmax", "topk"])
@pytest.mark.parametrize("prior", [(), (0.2, 0.1, 0.1, 0.4, 0.2)])
def test_regularisers(mode, prior, rng):
    b, n = 16, 5
    g = rng.standard_normal((b, n))
    g[3] = [0.5, 0.5, 0.1, 0.5, 0.0]                   # an argmax tie: the lowest index
    mask = adaref.ops.topk_mask(g, 2)
    ga = adaref.Tensor(g, requires_grad=True)
    pa = adaref.ops.softmax(ga)
    fa = load_fractions(pa, mask, mode)
    gt = torch.tensor(g, requires_grad=True)
    pt = torch.softmax(gt, -1)
    ft = xt.load_fractions(pt, torch.from_numpy(mask), mode)
    close(fa, ft.numpy(), "f_j")
    la = distribution_loss(pa, fa, prior) + 0.3 * balance_loss(pa, fa) + 0.7 * z_loss(ga)
    lt = xt.distribution_loss(pt, ft, prior) + 0.3 * xt.balance_loss(pt, ft) + 0.7 * xt.z_loss(gt)
    close(la.data, lt.detach().numpy(), "loss")
    la.backward()
    lt.backward()
    close(ga.grad, gt.grad.numpy(), "grad g")


def test_eq16_uniform_prior_equals_eq13(rng):
    g = rng.standard_normal((9, 4))
    p = adaref.ops.softmax(adaref.Tensor(g))
    f = load_fractions(p, adaref.ops.topk_mask(g, 1))
    assert np.isclose(distribution_loss(p, f).item(), balance_loss(p, f).item(), rtol=1e-14)


def test_z_loss_large_logits(rng):
    g = rng.standard_normal((6, 5)) * 300
    ga, gt = adaref.Tensor(g, requires_grad=True), torch.tensor(g, requires_grad=True)
    za, zt = z_loss(ga), xt.z_loss(gt)
    za.backward()
    zt.backward()
    np.testing.assert_allclose(za.data, zt.detach().numpy(), rtol=1e-12)
    close(ga.grad, gt.grad.numpy(), "z-loss grad")


# --- the whole model --------------------------------------------------------------
VOCAB = [6, 4, 7, 3, 5]


def build(preset, num_layers, rng, controller_enabled=True):
    cfg = model_config(preset, dim=4, num_layers=num_layers)
    cfg = cfg.replace(gate=cfg.gate.replace(jitter=0.0, reduction=4),
                      controller=cfg.controller.replace(
                          enabled=controller_enabled,
                          gate=cfg.controller.gate.replace(jitter=0.0, reduction=4)))
    model = AdaEnsemble(cfg, VOCAB, rng=rng)
    state = randomise(model, rng)
    return model, state


def run_both(model, state, ids, k, form, rng, train=False):
    """Outputs and gradients of a random combination of every output, both sides."""
    model.train(train)
    cfg = model.config
    b = len(ids)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model(ids, k=k, form=form if cfg.controller.enabled else None)
    ecfgs = {n: model.layers[0].experts[n].config for n in cfg.moe.experts}
    p = xs.to_torch(model, state)
    ref = xt.model_forward(p, cfg, ecfgs, VOCAB, ids, k, out.form)
    u = rng.standard_normal(b)
    c = rng.standard_normal(3)
    sa = (out.prob * u).sum() + c[0] * out.expert_loss
    st = (ref["prob"] * torch.from_numpy(u)).sum() + c[0] * ref["expert_loss"]
    if out.depth_loss is not None:
        sa, st = sa + c[1] * out.depth_loss, st + c[1] * ref["depth_loss"]
    if out.z_loss is not None:
        sa, st = sa + c[2] * out.z_loss, st + c[2] * ref["z_loss"]
    model.zero_grad()
    sa.backward()
    st.backward()
    return out, ref, p


def compare(model, out, ref, p):
    diffs = {"prob": close(out.prob.data, ref["prob"].detach().numpy(), "prob")}
    if out.logit is not None:
        diffs["logit"] = close(out.logit.data, ref["logit"].detach().numpy(), "logit")
    diffs["expert_loss"] = close(out.expert_loss.data, ref["expert_loss"].detach().numpy(),
                                 "expert_loss")
    if out.depth_loss is not None:
        diffs["depth_loss"] = close(out.depth_loss.data, ref["depth_loss"].detach().numpy(),
                                    "depth_loss")
    assert (out.z_loss is None) == (ref["z_loss"] is None)
    if out.z_loss is not None:
        diffs["z_loss"] = close(out.z_loss.data, ref["z_loss"].detach().numpy(), "z_loss")
    assert np.array_equal(out.routing.exit_depth, ref["exit_depth"].numpy())
    tg = xs.grads_to_adaref(model, p)
    worst = 0.0
    for name, prm in model.named_parameters():
        got = np.zeros(prm.shape) if prm.grad is None else dense(prm.grad)
        worst = max(worst, close(got, tg[name], f"grad {name}"))
    diffs["grads"] = worst
    return diffs


def ids_for(rng, b):
    ids = np.stack([rng.integers(0, v, b) for v in VOCAB], axis=1)
    ids[0] = 0                                           # an all-OOV example
    return ids


@pytest.mark.parametrize("form,k,train", [("soft", 5, True), ("soft", 2, True),
                                          ("straight_through", 3, True), ("hard", 2, False),
                                          ("hard", 5, False), ("hard", 1, True)])
def test_model_paper(form, k, train, rng):
    model, state = build("paper", 3, rng)
    ids = ids_for(rng, 24)
    out, ref, p = run_both(model, state, ids, k, form, rng, train)
    compare(model, out, ref, p)
    if form == "hard":
        assert len(set(out.routing.exit_depth.tolist())) >= 2    # several exit depths


@pytest.mark.parametrize("form,train", [("hard", True), ("hard", False), ("soft", True)])
def test_model_upstream(form, train, rng):
    model, state = build("upstream", 4, rng)
    ids = ids_for(rng, 24)
    out, ref, p = run_both(model, state, ids, 3, form, rng, train)
    compare(model, out, ref, p)
    # upstream: unweighted combine and stop-gradient gates -> the gates learn only
    # from the regularisers; the embedding receives no gradient through a gate
    assert out.z_loss is not None


def test_model_without_controller(rng):
    model, state = build("paper", 2, rng, controller_enabled=False)
    ids = ids_for(rng, 10)
    out, ref, p = run_both(model, state, ids, 3, None, rng, True)
    assert out.form == "full"
    compare(model, out, ref, p)


def test_model_gate_options(rng):
    """The switch combine and the gate reading X_{l-1} (row 9 option), soft form."""
    model, state = build("paper", 2, rng)
    cfg = model.config.replace(gate=GATES["prev-input"].replace(combine="switch"))
    model = AdaEnsemble(cfg, VOCAB, rng=rng)
    state = randomise(model, rng)
    out, ref, p = run_both(model, state, ids_for(rng, 12), 2, "soft", rng, True)
    compare(model, out, ref, p)


def test_hard_exit_equals_full_depth_read_at_exit(rng):
    """Row 19: Algorithm 1 equals the full-depth computation read at each exit layer
    (adaref's hard form against adaref's own soft-form per-layer estimators)."""
    model, state = build("paper", 3, rng)
    model.eval()
    ids = ids_for(rng, 30)
    hard = model(ids, k=2, form="hard")
    p = xs.to_torch(model, state, requires_grad=False)
    ecfgs = {n: model.layers[0].experts[n].config for n in model.config.moe.experts}
    ref = xt.model_forward(p, model.config, ecfgs, VOCAB, ids, 2, "hard")
    close(hard.logit.data, ref["logit"].numpy(), "hard logit")


# --- jitter (eq. 7, row 10) -----------------------------------------------------------
@pytest.mark.parametrize("eps", [0.01, 0.5])
def test_gate_jitter_training_only(eps, rng):
    """Training: h = FFN(X_0 o U(1 - eps, 1 + eps)) with one uniform factor per input
    entry, drawn from the rng passed in; evaluation: no noise even if an rng is given."""
    cfg = GateConfig(jitter=eps, reduction=4)
    f, d, n, b = 3, 4, 5, 7
    gate = NoisyCosineGate(cfg, f * d, n, rng=rng)
    randomise(gate, rng)
    x0 = rng.standard_normal((b, f, d))
    p = xs.to_torch(gate, requires_grad=False)
    plain = xt.gate_logits(p, cfg, torch.tensor(x0)).numpy()
    out = gate.eval()(adaref.Tensor(x0), 2, rng=np.random.default_rng(5))
    close(out.logits.data, plain, "eval: no jitter")
    out = gate.train()(adaref.Tensor(x0), 2, rng=np.random.default_rng(5))
    noise = np.random.default_rng(5).uniform(1 - eps, 1 + eps, (b, f * d)).reshape(b, f, d)
    close(out.logits.data, xt.gate_logits(p, cfg, torch.tensor(x0 * noise)).numpy(), "train jitter")
    assert not np.allclose(out.logits.data, plain)


def test_model_jitter_is_seeded_in_training_and_off_in_evaluation(rng):
    """The whole model with the paper preset's default jitter (eps = 1e-2): in training
    the output depends on the rng passed in (and only on it); in evaluation it does not."""
    model = AdaEnsemble(model_config("paper", dim=4, num_layers=2), VOCAB, rng=rng).train()
    ids = ids_for(rng, 8)
    a = model(ids, k=5, rng=np.random.default_rng(1)).prob.data
    b = model(ids, k=5, rng=np.random.default_rng(1)).prob.data
    c = model(ids, k=5, rng=np.random.default_rng(2)).prob.data
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    model.eval()
    e1 = model(ids, k=5, rng=np.random.default_rng(1)).prob.data
    e2 = model(ids, k=5, rng=np.random.default_rng(2)).prob.data
    assert np.array_equal(e1, e2)


@pytest.mark.parametrize("preset,form", [("upstream", "hard"), ("paper", "soft")])
def test_model_at_authors_size(preset, form, rng):
    """F = 38, D = 16, L = 4 (the authors' Criteo shapes), a small batch."""
    vocab = list(rng.integers(3, 9, 38))
    cfg = model_config(preset, dim=16, num_layers=4)
    cfg = cfg.replace(gate=cfg.gate.replace(jitter=0.0),
                      controller=cfg.controller.replace(gate=cfg.controller.gate.replace(jitter=0.0)))
    model = AdaEnsemble(cfg, vocab, rng=rng)
    state = randomise(model, rng, scale=0.1)
    ids = np.stack([rng.integers(0, v, 12) for v in vocab], axis=1)
    model.train(form != "hard")
    out = model(ids, k=3, form=form)
    ecfgs = {n: model.layers[0].experts[n].config for n in cfg.moe.experts}
    p = xs.to_torch(model, state)
    ref = xt.model_forward(p, cfg, ecfgs, vocab, ids, 3, form)
    u = rng.standard_normal(12)
    sa = (out.prob * u).sum() + out.expert_loss + out.depth_loss
    st = (ref["prob"] * torch.from_numpy(u)).sum() + ref["expert_loss"] + ref["depth_loss"]
    if out.z_loss is not None:
        sa, st = sa + out.z_loss, st + ref["z_loss"]
    sa.backward()
    st.backward()
    compare(model, out, ref, p)


def test_gate_with_zero_hidden_state(rng):
    """h = 0 exactly (all FFN units dead, zero project bias: common at initialisation
    when F*D // r is small): cosine scores are 0 for every expert on both sides (TF's
    l2_normalize convention), the top-k falls to the lowest indices, and the gradients
    (1/sqrt(1e-12) through the normalisation) agree."""
    cfg = GateConfig(jitter=0.0, reduction=8)
    gate = NoisyCosineGate(cfg, 8, 4, rng=rng)
    state = randomise(gate, rng)
    state["reduce.bias"][:] = -100.0                    # every ReLU unit dead
    state["project.bias"][:] = 0.0
    gate.load_state_dict(state)
    x0 = rng.standard_normal((3, 2, 4))
    out = gate(adaref.Tensor(x0), 2)
    assert np.all(out.logits.data == 0) and out.mask[:, :2].all()
    p = xs.to_torch(gate, state)
    g, *_ = xt.gate(p, cfg, torch.tensor(x0), 2)
    u = rng.standard_normal(g.shape)
    gate.zero_grad()
    (out.logits * u).sum().backward()
    (g * torch.from_numpy(u)).sum().backward()
    tg = xs.grads_to_adaref(gate, p)
    for name, prm in gate.named_parameters():
        close(prm.grad if prm.grad is not None else np.zeros(prm.shape), tg[name], f"grad {name}")
