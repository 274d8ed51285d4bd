"""adaref.optim over a few steps against torch.optim (Adam, SparseAdam) and against a
transcription of McMahan et al. 2013, Algorithm 1 (FTRL-Proximal), same gradients."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from adaref.nn import Parameter
from adaref.optim import FTRL, Adam, GroupFTRL
from adaref.tensor import RowSparseGrad

import xc_support as xs

STEPS = 6


def grads(rng, shape, n=STEPS):
    return [rng.standard_normal(shape) * s for s in np.geomspace(1.0, 1e-3, n)]


# --- Adam -------------------------------------------------------------------------
@pytest.mark.parametrize("l2", [0.0, 3e-2])
@pytest.mark.parametrize("eps", [1e-8, 1e-2])
def test_adam_coupled_l2_vs_torch_adam(l2, eps, rng):
    """adaref's l2 is the Keras loss term l2 ||w||^2 (gradient 2 l2 w, coupled):
    torch.optim.Adam(weight_decay=2 * l2). Algorithm-1 epsilon = torch's."""
    w0 = rng.standard_normal((4, 3))
    wa = Parameter(w0.copy())
    opt = Adam([("w", wa)], lr=0.05, beta1=0.8, beta2=0.95, eps=eps, l2=l2)
    wt = torch.tensor(w0.copy(), requires_grad=True)
    topt = torch.optim.Adam([wt], lr=0.05, betas=(0.8, 0.95), eps=eps, weight_decay=2 * l2)
    worst = 0.0
    for g in grads(rng, w0.shape):
        wa.grad = g.copy()
        opt.step()
        wt.grad = torch.from_numpy(g.copy())
        topt.step()
        np.testing.assert_allclose(wa.data, wt.detach().numpy(), rtol=1e-12, atol=1e-14)
        worst = max(worst, np.max(np.abs(wa.data - wt.detach().numpy())))
    st = topt.state[wt]
    sd = opt.state_dict()
    np.testing.assert_allclose(sd["m.w"], st["exp_avg"].numpy(), rtol=1e-12)
    np.testing.assert_allclose(sd["v.w"], st["exp_avg_sq"].numpy(), rtol=1e-12)


def test_adam_l2_is_not_adamw(rng):
    """Sanity of the convention: with l2 > 0, adaref differs from torch's decoupled AdamW."""
    w0 = rng.standard_normal(5)
    wa = Parameter(w0.copy())
    opt = Adam([("w", wa)], lr=0.1, l2=0.1)
    wt = torch.tensor(w0.copy(), requires_grad=True)
    topt = torch.optim.AdamW([wt], lr=0.1, weight_decay=0.2)
    g = rng.standard_normal(5)
    for _ in range(3):
        wa.grad, wt.grad = g.copy(), torch.from_numpy(g.copy())
        opt.step()
        topt.step()
    assert not np.allclose(wa.data, wt.detach().numpy(), rtol=1e-6)


def test_lazy_adam_keras_eps_vs_torch_sparse_adam(rng):
    """Lazy rows + the 'keras' epsilon form = torch.optim.SparseAdam, which updates only
    the rows present and uses step = lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)
    with the optimiser's global step count."""
    v, d = 8, 3
    w0 = rng.standard_normal((v, d))
    wa = Parameter(w0.copy())
    opt = Adam([("emb", wa)], lr=0.05, eps=1e-3, epsilon_form="keras", sparse_update="lazy")
    wt = torch.tensor(w0.copy(), requires_grad=True)
    topt = torch.optim.SparseAdam([wt], lr=0.05, eps=1e-3)
    for step in range(STEPS):
        rows = np.sort(rng.choice(v, size=3, replace=False))
        vals = rng.standard_normal((3, d))
        wa.grad = RowSparseGrad(rows, vals.copy(), (v, d))
        opt.step()
        wt.grad = torch.sparse_coo_tensor(torch.from_numpy(rows)[None], torch.from_numpy(vals),
                                          (v, d), check_invariants=True).coalesce()
        topt.step()
        np.testing.assert_allclose(wa.data, wt.detach().numpy(), rtol=1e-12, atol=1e-14,
                                   err_msg=f"step {step}")


def test_dense_mode_sparse_grad_vs_torch_adam(rng):
    """sparse_update='dense': Algorithm 1 on the densified gradient = torch.optim.Adam."""
    v, d = 6, 2
    w0 = rng.standard_normal((v, d))
    wa = Parameter(w0.copy())
    opt = Adam([("emb", wa)], lr=0.05, sparse_update="dense")
    wt = torch.tensor(w0.copy(), requires_grad=True)
    topt = torch.optim.Adam([wt], lr=0.05)
    for _ in range(STEPS):
        rows = np.sort(rng.choice(v, size=2, replace=False))
        vals = rng.standard_normal((2, d))
        g = RowSparseGrad(rows, vals, (v, d))
        wa.grad = g
        opt.step()
        wt.grad = torch.from_numpy(g.to_dense())
        topt.step()
        np.testing.assert_allclose(wa.data, wt.detach().numpy(), rtol=1e-12, atol=1e-14)


# --- FTRL -------------------------------------------------------------------------
@pytest.mark.parametrize("l1,l2", [(0.0, 0.0), (0.05, 0.0), (0.05, 0.3), (0.0, 1.0)])
def test_ftrl_vs_mcmahan_zero_start(l1, l2, rng):
    """w_0 = 0, z_0 = 0 (McMahan's start): identical over several steps."""
    shape = (3, 4)
    wa = Parameter(np.zeros(shape))
    opt = FTRL([("w", wa)], alpha=0.1, beta=1.0, l1=l1, l2=l2, z_init="zero")
    ref = xs.McMahanFTRL(shape, 0.1, 1.0, l1, l2)
    for g in grads(rng, shape):
        g = g * 0.5
        wa.grad = g.copy()
        opt.step()
        w_ref = ref.step(g)
        np.testing.assert_allclose(wa.data, w_ref, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(opt.state["z"]["w"], ref.z, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(opt.state["n"]["w"], ref.n, rtol=1e-12)
    assert l1 == 0 or np.any(wa.data == 0)           # l1 produced exact zeros


def test_ftrl_from_weights_vs_mcmahan_with_centred_z(rng):
    """z_init='from_weights' with l1 = l2 = 0 is McMahan started from z_0 = -(beta/alpha) w_0
    (whose closed form is w_0)."""
    shape = (5,)
    w0 = rng.standard_normal(shape)
    wa = Parameter(w0.copy())
    opt = FTRL([("w", wa)], alpha=0.1, beta=1.0, l1=0.0, l2=0.0, z_init="from_weights")
    ref = xs.McMahanFTRL(shape, 0.1, 1.0, 0.0, 0.0, z0=-(1.0 / 0.1) * w0)
    np.testing.assert_allclose(ref.weights(), w0, rtol=1e-14)
    for g in grads(rng, shape):
        wa.grad = g.copy()
        opt.step()
        np.testing.assert_allclose(wa.data, ref.step(g), rtol=1e-12, atol=1e-15)


def test_ftrl_lazy_rows_vs_mcmahan(rng):
    """Row-sparse gradients on a zero-initialised table: the rows not in the batch have
    g = 0 in McMahan's algorithm, which leaves z, n and w unchanged (lazy = exact)."""
    v, d = 6, 2
    wa = Parameter(np.zeros((v, d)))
    opt = FTRL([("emb", wa)], alpha=0.2, beta=1.0, l1=0.02, l2=0.1, z_init="zero")
    ref = xs.McMahanFTRL((v, d), 0.2, 1.0, 0.02, 0.1)
    for _ in range(STEPS):
        rows = np.sort(rng.choice(v, size=3, replace=False))
        vals = rng.standard_normal((3, d))
        g = RowSparseGrad(rows, vals, (v, d))
        wa.grad = g
        opt.step()
        np.testing.assert_allclose(wa.data, ref.step(g.to_dense()), rtol=1e-12, atol=1e-15)


def test_ftrl_random_init_with_l1_uses_stored_weights_first(rng):
    """Convention (documented in adaref.optim.ftrl): the first step's sigma * w uses the
    parameter's stored w_0, not McMahan's closed form of (z_0, n_0). With l1 > 0 and
    z_init='from_weights' these differ (the closed form shrinks w_0), so adaref equals
    McMahan only when the first weight used is w_0."""
    shape = (4,)
    w0 = rng.standard_normal(shape)
    alpha, beta, l1 = 0.1, 1.0, 0.5
    wa = Parameter(w0.copy())
    opt = FTRL([("w", wa)], alpha=alpha, beta=beta, l1=l1, l2=0.0, z_init="from_weights")
    g = rng.standard_normal(shape)
    wa.grad = g.copy()
    opt.step()
    ref = xs.McMahanFTRL(shape, alpha, beta, l1, 0.0, z0=-(beta / alpha) * w0)
    assert not np.allclose(ref.weights(), w0)         # McMahan's w_1 would be shrunk
    # one step by hand with the stored w_0 in sigma * w:
    sigma = np.abs(g) / alpha
    z = -(beta / alpha) * w0 + g - sigma * w0
    a = (beta + np.abs(g)) / alpha
    want = np.where(np.abs(z) <= l1, 0.0, -(z - np.sign(z) * l1) / a)
    np.testing.assert_allclose(wa.data, want, rtol=1e-13)


@pytest.mark.parametrize("row_solution", ["closed_form", "exact"])
def test_group_ftrl(row_solution, rng):
    """G-FTRL (row 23): the closed form -(1 - lam/||z||) z / a per row (lam = l1 sqrt(D)),
    zero rows when ||z|| <= lam; 'exact' must satisfy the row optimality condition
    z + a w + lam w / ||w|| = 0."""
    v, d = 10, 4
    alpha, beta, l1, l2 = 0.02, 1e-4, 1e-3, 1e-3
    wa = Parameter(np.zeros((v, d)))
    opt = GroupFTRL([("emb", wa)], alpha=alpha, beta=beta, l1=l1, l2=l2, z_init="zero",
                    sparse_update="dense", row_solution=row_solution)
    lam = l1 * np.sqrt(d)
    z, n = np.zeros((v, d)), np.zeros((v, d))
    w = np.zeros((v, d))
    for s in range(STEPS):
        g = rng.standard_normal((v, d)) * 2e-3
        g[0] *= 1e-2                                       # a row with tiny gradients: pruned
        wa.grad = g.copy()
        opt.step()
        n_new = n + g * g
        z = z + g - (np.sqrt(n_new) - np.sqrt(n)) / alpha * w
        n = n_new
        a = (beta + np.sqrt(n)) / alpha + l2
        norm = np.linalg.norm(z, axis=1, keepdims=True)
        if row_solution == "closed_form":
            w = np.where(norm > lam, -(1 - lam / np.maximum(norm, 1e-300)) * z / a, 0.0)
            np.testing.assert_allclose(wa.data, w, rtol=1e-11, atol=1e-15)
        else:
            w = wa.data.copy()
            nz = np.linalg.norm(w, axis=1) > 0
            assert np.array_equal(nz, norm[:, 0] > lam)
            resid = z[nz] + a[nz] * w[nz] + lam * w[nz] / np.linalg.norm(w[nz], axis=1, keepdims=True)
            assert np.max(np.abs(resid)) <= 1e-10 * np.max(np.abs(z))
    assert not wa.data[0].any()                            # row 0 pruned


def test_adam_global_step_vs_torch_per_parameter_step(rng):
    """Convention a PyTorch port trips over: adaref's bias correction uses the
    optimiser's global step (as TensorFlow/Keras), also for a parameter that had no
    gradient at some steps (it is skipped, but the count advances); torch.optim.Adam
    counts steps per parameter. They agree while every parameter gets a gradient at
    every step, and differ afterwards."""
    w0 = rng.standard_normal(3)
    a1, a2 = Parameter(w0.copy()), Parameter(w0.copy())
    opt = Adam([("a", a1), ("b", a2)], lr=0.1)
    t1, t2 = torch.tensor(w0.copy(), requires_grad=True), torch.tensor(w0.copy(), requires_grad=True)
    topt = torch.optim.Adam([t1, t2], lr=0.1)
    gs = grads(rng, (3,), 4)
    for s, g in enumerate(gs):
        skip_b = s == 1                                  # "b" gets no gradient at step 2
        a1.grad, a2.grad = g.copy(), None if skip_b else g.copy()
        t1.grad, t2.grad = torch.from_numpy(g.copy()), None if skip_b else torch.from_numpy(g.copy())
        opt.step()
        topt.step()
        np.testing.assert_allclose(a1.data, t1.detach().numpy(), rtol=1e-12)
    assert opt.step_count == 4 and topt.state[t2]["step"].item() == 3
    assert not np.allclose(a2.data, t2.detach().numpy(), rtol=1e-9, atol=0)
