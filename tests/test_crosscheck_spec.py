"""The cross-check contract: the names a forward pass records are the spec's, in order;
the recorded values mean what the spec says; recording changes nothing; the gradients
``golden`` writes are the objective's (finite differences)."""
from __future__ import annotations

import numpy as np
import pytest

from adaref.crosscheck import reference as ref
from adaref.crosscheck.golden import perturb
from adaref.crosscheck.spec import forms, intermediate_names, model_spec, pattern_of
from adaref.model import AdaEnsemble, model_config
from adaref.model.trace import NAMES, Trace

VOCAB = [4, 6, 3, 5, 7]


def config(name):
    if name == "paper":
        return model_config("paper", dim=4, num_layers=3)
    if name == "upstream":
        return model_config("upstream", dim=4)
    if name == "no-controller":
        cfg = model_config("paper", dim=4, num_layers=2)
        return cfg.replace(controller=cfg.controller.replace(enabled=False))
    if name == "straight-through":
        cfg = model_config("paper", dim=4, num_layers=2)
        return cfg.replace(controller=cfg.controller.replace(train_form="straight_through"), moe=cfg.moe.replace(z_loss=True))
    raise KeyError(name)


CONFIGS = ["paper", "upstream", "no-controller", "straight-through"]


def setup(name, seed=0, batch=9):
    cfg = config(name)
    rng = np.random.default_rng(seed)
    model = AdaEnsemble(cfg, VOCAB, rng=rng)
    perturb(model, rng)
    ids = np.stack([rng.integers(0, v, size=batch) for v in VOCAB], axis=1)
    labels = (rng.random(batch) < 0.5).astype(float)
    labels[:2] = [0, 1]
    return cfg, model, ids, labels


def is_subsequence(sub, seq):
    it = iter(seq)
    return all(x in it for x in sub)


@pytest.mark.parametrize("name", CONFIGS)
def test_recorded_names_are_the_spec_in_forward_order(name):
    cfg, model, ids, labels = setup(name)
    for form in forms(cfg):
        got = list(ref.forward(model, ids, labels, k=2, form=form))
        want = intermediate_names(model, form)
        if form == "hard":
            assert is_subsequence(got, want)
            reached = {int(n.split(".")[1]) for n in got if n.startswith("layers.")}
            assert reached == set(range(max(reached) + 1))            # a prefix of the layers
            full = [n for n in want if not n.startswith(("layers.", "estimators."))
                    or int(n.split(".")[1]) in reached]
            assert got == full
        else:
            assert got == want, form


def test_hard_form_records_only_reached_layers():
    cfg, model, ids, labels = setup("paper")
    model.controller.gate.embeddings.data[:] = model.controller.gate.embeddings.data[0]  # all tie: exit 1
    names = ref.forward(model, ids, labels, k=2, form="hard")
    assert not [n for n in names if n.startswith(("layers.1", "layers.2", "estimators.1", "estimators.2"))]
    assert np.array_equal(names["controller.exit_depth"], np.ones(len(ids), np.int64))
    assert names["estimators.0.logit"].shape == (len(ids),)


@pytest.mark.parametrize("name", CONFIGS)
def test_every_parameter_has_a_layout_and_an_equation(name):
    cfg, model, _, _ = setup(name)
    spec = model_spec(model, 2)
    assert [p["name"] for p in spec["parameters"]] == [n for n, _ in model.named_parameters()]
    for p in spec["parameters"]:
        assert p["layout"] and p["equation"], p
        assert p["layout"].startswith("(")
    assert {g["name"] for g in spec["gradients"]} == {f"grad.{n}" for n, _ in model.named_parameters()} | {"grad.embedding"}


def test_every_pattern_is_used_and_every_name_has_one():
    used = set()
    for name in CONFIGS:
        cfg, model, _, _ = setup(name)
        for form in forms(cfg):
            used |= {pattern_of(n) for n in intermediate_names(model, form)}
    assert used == set(NAMES)
    with pytest.raises(KeyError, match="matches no pattern"):
        pattern_of("layers.0.gate.nonsense")


def test_values_mean_what_the_spec_says():
    """combined = sum_j w_j E_j on each expert's rows; output = LayerNorm(X_{l-1} + combined);
    topk = the mask's indices; gate.values sum to 1 over the top-k; prob = sigmoid(logit)."""
    cfg, model, ids, labels = setup("paper", batch=11)
    t = ref.forward(model, ids, labels, k=2, form="soft")
    prev = t["embedding"]
    for l in range(cfg.num_layers):
        p = f"layers.{l}."
        w = t[p + "gate.weights"]
        y = np.zeros_like(prev)
        for j, e in enumerate(cfg.moe.experts):
            rows = t[f"{p}experts.{e}.rows"]
            assert set(rows) == set(np.flatnonzero(np.isin(np.arange(len(ids)), np.flatnonzero(w[:, j] != 0))))
            y[rows] += w[rows, j][:, None, None] * t[f"{p}experts.{e}.output"]
            assert np.array_equal(np.sort(np.flatnonzero((t[p + "gate.topk"] == j).any(axis=1))), rows)
        np.testing.assert_allclose(t[p + "combined"], y, rtol=1e-13, atol=1e-14)
        z = prev + y
        norm = model.layers[l].norm
        mu, var = z.mean(-1, keepdims=True), z.var(-1, keepdims=True)
        expect = (z - mu) / np.sqrt(var + norm.eps) * norm.gain.data + norm.bias.data
        np.testing.assert_allclose(t[p + "output"], expect, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(t[p + "gate.values"].sum(1), 1.0, rtol=1e-14)
        assert (t[p + "gate.topk"] == np.sort(t[p + "gate.topk"], axis=1)).all()
        prev = t[p + "output"]
    h = ref.forward(model, ids, labels, k=2, form="hard")
    np.testing.assert_allclose(h["prob"], 1 / (1 + np.exp(-h["logit"])), rtol=1e-14)
    mix = (t["controller.probs"] * 1 / (1 + np.exp(-np.stack([t[f"estimators.{l}.logit"] for l in range(3)], 1)))).sum(1)
    np.testing.assert_allclose(t["prob"], mix, rtol=1e-13)


@pytest.mark.parametrize("form", ["soft", "hard"])
def test_recording_changes_nothing(form):
    cfg, model, ids, labels = setup("paper")
    model.eval()
    plain = model(ids, k=3, form=form)
    traced = model(ids, k=3, form=form, trace=Trace())
    assert np.array_equal(plain.prob.data, traced.prob.data)
    assert plain.expert_loss.item() == traced.expert_loss.item()


def test_trace_refuses_a_name_twice():
    t = Trace()
    t("embedding", np.zeros(2))
    with pytest.raises(KeyError, match="recorded twice"):
        t("embedding", np.zeros(2))


@pytest.mark.parametrize("name", ["paper", "upstream"])
def test_gradients_are_the_objective_s(name):
    """grad.embedding and a parameter's gradient against central differences of the
    eq. 18 total in the training form (float64)."""
    cfg, model, ids, labels = setup(name, batch=6)
    form = "soft" if name == "paper" else "hard"
    lam = ref.Lambdas(0.3, 0.2, 0.1)
    grads = ref.gradients(model, ids, labels, k=2, form=form, lambdas=lam)

    def total():
        return float(ref.forward(model, ids, labels, k=2, form=form, lambdas=lam)["loss.total"])

    rng = np.random.default_rng(5)
    for pname in ["layers.0.experts.cross.W", "estimators.0.linear.bias", "layers.1.norm.gain"
                  if name == "paper" else "layers.1.experts.mhsa.gamma"]:
        p = dict(model.named_parameters())[pname]
        for _ in range(3):
            idx = tuple(rng.integers(0, s) for s in p.shape)
            old = p.data[idx]
            p.data[idx] = old + 1e-6
            up = total()
            p.data[idx] = old - 1e-6
            down = total()
            p.data[idx] = old
            np.testing.assert_allclose(grads[f"grad.{pname}"][idx], (up - down) / 2e-6, rtol=1e-5, atol=1e-9)
    # d/dX_0 through the embedding rows: perturb one row of the table used by one example only
    gx = grads["grad.embedding"]
    table = model.embedding.weight
    b, f = 0, 1
    row = model.embedding.offsets[f] + ids[b, f]
    if ids[b, f] != 0 or cfg.embedding_oov == "learned":
        users = [(bb, ff) for bb in range(len(ids)) for ff in range(len(VOCAB))
                 if model.embedding.offsets[ff] + ids[bb, ff] == row]
        expect = sum(gx[bb, ff] for bb, ff in users)
        np.testing.assert_allclose(grads["grad.embedding.weight"][row], expect, rtol=1e-12, atol=1e-15)
        if cfg.gate.stop_gradient:
            return            # the gates' input is detached by design: not the derivative of the total
        d = 2
        old = table.data[row, d]
        table.data[row, d] = old + 1e-6
        up = total()
        table.data[row, d] = old - 1e-6
        down = total()
        table.data[row, d] = old
        np.testing.assert_allclose(expect[d], (up - down) / 2e-6, rtol=1e-5, atol=1e-9)


def test_the_documented_names_are_the_recorded_ones():
    """docs/crosscheck.md's table lists every pattern of NAMES, in order, with its shape."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "crosscheck.md").read_text()
    rows = [line.split("|")[1:3] for line in doc.splitlines() if line.startswith("| `")
            and line.split("|")[1].strip().strip("`") in NAMES]
    assert [r[0].strip().strip("`") for r in rows] == list(NAMES)
    assert [r[1].strip() for r in rows] == [shape for shape, _ in NAMES.values()]
