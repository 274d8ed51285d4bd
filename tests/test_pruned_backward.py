"""backward(inputs=...): gradients of the requested leaves only, bit-identical to a full
pass, with the ops that cannot reach them skipped (the engine facility behind Algorithm 2's
alpha step)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adaref import Tensor, ops
from adaref.model.adaensemble import AdaEnsemble
from adaref.model.config import model_config
from adaref.training.bilevel import split_parameters
from adaref.training.objective import objective

VOCAB = [5, 7, 3, 4]


def _model(preset, form, seed=0):
    base = model_config(preset)
    ctl = {**base.controller.to_dict(), "gate": {**base.controller.gate.to_dict(), "reduction": 2},
           "train_form": form}
    cfg = model_config(preset, dim=2, gate={**base.gate.to_dict(), "reduction": 2}, controller=ctl)
    return AdaEnsemble(cfg, VOCAB, rng=np.random.default_rng(seed))


def _ids(b=32, seed=1):
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, v, size=b) for v in VOCAB], axis=1)


def _loss(model, k):
    ids = _ids()
    labels = (np.random.default_rng(2).random(len(ids)) < 0.3).astype(np.float64)
    out = model(ids, k=k, rng=np.random.default_rng(3))
    return objective(out, labels, 0.01, 0.01, 0.0)[0]


@pytest.mark.filterwarnings("ignore:gate combine='gates' with k = 1")     # k = 1: the regularisers' gradient
@pytest.mark.parametrize("preset", ["paper", "upstream"])
@pytest.mark.parametrize("form", ["soft", "straight_through", "hard"])
@pytest.mark.parametrize("k", [1, 2, 5])
def test_gate_gradients_of_a_pruned_pass_equal_the_full_pass_bit_for_bit(preset, form, k):
    model = _model(preset, form).train()
    gates = [p for _, p in split_parameters(model)["gates"]]
    others = [p for _, p in split_parameters(model)["embedding"] + split_parameters(model)["weights"]]
    _loss(model, k).backward()
    full = [None if p.grad is None else np.array(p.grad) for p in gates]
    model.zero_grad()
    _loss(model, k).backward(inputs=gates)
    for p, f in zip(gates, full):
        assert (p.grad is None) == (f is None)
        if f is not None:
            np.testing.assert_array_equal(p.grad, f)
    assert all(p.grad is None for p in others)        # no weight gradient was formed


def test_weights_only_pass_equals_the_full_pass_and_leaves_the_gates_alone():
    model = _model("paper", "soft").train()
    groups = split_parameters(model)
    w = [p for _, p in groups["embedding"] + groups["weights"]]
    _loss(model, 3).backward()
    full = [np.array(p.grad.to_dense() if hasattr(p.grad, "to_dense") else p.grad) for p in w]
    model.zero_grad()
    _loss(model, 3).backward(inputs=w)
    for p, f in zip(w, full):
        got = p.grad.to_dense() if hasattr(p.grad, "to_dense") else p.grad
        np.testing.assert_array_equal(got, f)
    assert all(p.grad is None for _, p in groups["gates"])


def test_ops_that_cannot_reach_a_requested_leaf_are_not_differentiated(monkeypatch):
    """The embedding lookup and every weight gradient of a matmul are skipped in the
    alpha step: the gates sit above the embedding and beside the experts' weights."""
    calls = {"embedding": 0, "matmul_weight": 0}
    lookup, matmul = ops.EmbeddingLookup.backward, ops.MatMul.backward

    def counting_lookup(self, g):
        calls["embedding"] += 1
        return lookup(self, g)

    def counting_matmul(self, g):
        calls["matmul_weight"] += bool(self.needs_grad[1] and self.parents[1]._ctx is None)
        return matmul(self, g)

    monkeypatch.setattr(ops.EmbeddingLookup, "backward", counting_lookup)
    monkeypatch.setattr(ops.MatMul, "backward", counting_matmul)
    model = _model("paper", "soft").train()
    gates = [p for _, p in split_parameters(model)["gates"]]
    _loss(model, 3).backward(inputs=gates)
    pruned = dict(calls)
    _loss(model, 3).backward()
    assert pruned["embedding"] == 0 and calls["embedding"] > 0
    assert calls["matmul_weight"] > pruned["matmul_weight"]


def test_inputs_must_be_leaves_that_require_grad():
    x = Tensor(np.ones(3), requires_grad=True)
    y = (x * 2.0).sum()
    with pytest.raises(ValueError, match="computed by an op"):
        y.backward(inputs=[x * 3.0])
    with pytest.raises(ValueError, match="requires_grad=False"):
        y.backward(inputs=[Tensor(np.ones(3))])


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.lists(st.booleans(), min_size=3, max_size=3))
def test_any_subset_of_leaves_gets_exactly_its_full_pass_gradients(seed, chosen):
    rng = np.random.default_rng(seed)
    a, b, c = (Tensor(rng.normal(size=(3, 2)), requires_grad=True) for _ in range(3))
    def f():
        h = ops.tanh(a @ b.T)                       # (3, 3)
        return (ops.softmax(h * c.sum(), axis=1) @ (a * c)).sum() + (b * b).mean()
    f().backward()
    full = [t.grad for t in (a, b, c)]
    for t in (a, b, c):
        t.zero_grad()
    wanted = [t for t, keep in zip((a, b, c), chosen) if keep]
    if wanted:
        f().backward(inputs=wanted)
    for t, g, keep in zip((a, b, c), full, chosen):
        if keep:
            np.testing.assert_array_equal(t.grad, g)
        else:
            assert t.grad is None
