"""The AdaEnsemble model: Algorithm 1, training forms, gradients, routing, FLOPs, checkpoints."""
import numpy as np
import pytest

import adaref
from adaref import Tensor, ops
from adaref.model.adaensemble import AdaEnsemble
from adaref.model.config import model_config
from adaref.nn import StateDictError

VOCAB = [5, 7, 3, 4]


def _config(preset="paper", **changes):
    """A small model; the gates reduce F*D = 8 by 2 (the default r = 16 would leave one
    hidden unit, often dead, making h = 0 where the L2 normalisation is ill-conditioned)."""
    changes.setdefault("dim", 2)
    base = model_config(preset)
    changes.setdefault("gate", {**base.gate.to_dict(), "reduction": 2})
    ctl = {**base.controller.to_dict(), "gate": {**base.controller.gate.to_dict(), "reduction": 2}}
    if changes.get("num_layers", 4) != 4 and preset == "upstream":
        n = changes["num_layers"]
        ctl["depth_prior"] = tuple([1.0 / n] * n)
    changes["controller"] = {**ctl, **changes.get("controller", {})}
    return model_config(preset, **changes)


def _model(preset="paper", seed=0, **changes):
    return AdaEnsemble(_config(preset, **changes), VOCAB, rng=np.random.default_rng(seed))


def _ids(b=24, seed=1):
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, v, size=b) for v in VOCAB], axis=1)


@pytest.mark.parametrize("preset", ["paper", "upstream"])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_algorithm1_equals_full_depth_read_at_the_exit_layer(preset, k):
    model = _model(preset).eval()
    ids = _ids()
    hard = model(ids, k=k, form="hard")
    x0 = model.embedding(ids)
    logits, _, _ = model._all_layers(x0, k, None, [], "soft")           # every layer, every example
    per_layer = np.stack([l.data for l in logits], axis=1)              # (B, L)
    exit_depth = hard.routing.exit_depth
    expected = per_layer[np.arange(len(ids)), exit_depth - 1]
    np.testing.assert_allclose(hard.logit.data, expected, rtol=1e-12, atol=1e-12)
    # only the examples that continue are computed deeper
    for l, layer in enumerate(hard.routing.layers):
        np.testing.assert_array_equal(layer.rows, np.flatnonzero(exit_depth >= l + 1))


def test_a_layer_no_example_reaches_is_skipped_without_nan():
    model = _model().eval()
    model.controller.gate.embeddings.data[:] = 1.0      # all depth scores tie: depth 1 wins
    out = model(_ids(), k=2)
    assert np.all(out.routing.exit_depth == 1) and len(out.routing.layers) == 1
    assert np.all(np.isfinite(out.prob.data))
    assert out.flops.max() < model(_ids(), k=2, form="soft").flops.min()   # one layer, not four


def test_training_forms():
    model = _model()
    ids = _ids()
    model.eval()
    soft = model(ids, k=2, form="soft")
    hard = model(ids, k=2, form="hard")
    st = model(ids, k=2, form="straight_through")
    np.testing.assert_allclose(st.prob.data, hard.prob.data, rtol=1e-12)
    x0 = model.embedding(ids)
    depth = model.controller(x0)
    logits, _, _ = model._all_layers(x0, 2, None, [], "soft")
    mixture = (depth.probs.data * ops.sigmoid(ops.stack(logits, axis=1)).data).sum(axis=1)
    np.testing.assert_allclose(soft.prob.data, mixture, rtol=1e-12)
    assert soft.logit is None and hard.logit is not None
    expected = model(ids, k=2, form="expected")          # the soft prediction; its loss is per depth
    np.testing.assert_array_equal(expected.prob.data, soft.prob.data)
    np.testing.assert_array_equal(expected.layer_logits.data, ops.stack(logits, axis=1).data)
    assert hard.layer_logits is None and expected.depth_probs is not None
    assert model.train()(ids, k=2, rng=np.random.default_rng(0)).form == "expected"   # the paper preset
    assert model.eval()(ids, k=2).form == "hard"


def test_without_controller_full_depth_and_last_estimator():
    model = _model(controller={"enabled": False}).eval()
    out = model(_ids(), k=2)
    assert out.form == "full" and out.depth_loss is None and len(model.estimators) == 1
    assert np.all(out.routing.exit_depth == 4) and all(l.reached == 24 for l in out.routing.layers)
    with pytest.raises(ValueError, match="needs the controller"):
        model(_ids(), form="soft")


def _loss(out, labels, with_regularisers=True):
    p = ops.clip(out.prob, 1e-7, 1 - 1e-7)
    y = labels.astype(out.prob.dtype)
    loss = -(ops.log(p) * y + ops.log(1.0 - p) * (1 - y)).mean()
    if with_regularisers:
        loss = loss + out.expert_loss * 0.1
        if out.depth_loss is not None:
            loss = loss + out.depth_loss * 0.1
        if out.z_loss is not None:
            loss = loss + out.z_loss * 0.01
    return loss


def test_whole_model_gradcheck_paper():
    """Every parameter, gates included, in float64 with jitter off (eval mode), through
    the soft depth mixture and all regularisers."""
    model = _model("paper", num_layers=2).eval()
    ids, labels = _ids(8), np.random.default_rng(3).integers(0, 2, 8)
    adaref.gradcheck_module(lambda: _loss(model(ids, k=2, form="soft"), labels), model, sample=4)


def test_whole_model_gradcheck_upstream():
    """Upstream: the task loss through the hard exit (gates are unweighted, so they do
    not enter it), then every gate's regularisers (their inputs are stop-gradient, so the
    check covers the gate parameters; the embedding's path into them is cut by design)."""
    model = _model("upstream", num_layers=2).eval()
    ids, labels = _ids(8), np.random.default_rng(3).integers(0, 2, 8)
    adaref.gradcheck_module(lambda: _loss(model(ids, k=2, form="hard"), labels, False), model, sample=4)

    def regularisers():
        out = model(ids, k=2, form="hard")
        return out.expert_loss + out.depth_loss + out.z_loss * 0.1

    adaref.gradcheck_module(regularisers, model, include=lambda n: ".gate." in n, sample=4)


def test_straight_through_forward_is_hard_and_gradient_is_soft_for_the_depth_gate():
    model = _model("paper", num_layers=2).eval()
    ids = _ids(8)
    grads = {}
    for form in ("soft", "straight_through"):
        model.zero_grad()
        model(ids, k=2, form=form).prob.sum().backward()
        grads[form] = {n: p.grad for n, p in model.named_parameters() if n.startswith("controller.")}
    for n in grads["soft"]:
        np.testing.assert_allclose(grads["straight_through"][n], grads["soft"][n], rtol=1e-10, err_msg=n)


def _grads(model, ids, labels, form, with_regularisers):
    model.zero_grad()
    _loss(model(ids, k=2, form=form), labels, with_regularisers).backward()
    return {n: p.grad for n, p in model.named_parameters()}


def test_gates_get_a_task_gradient_in_paper_and_none_in_upstream():
    ids, labels = _ids(16), np.random.default_rng(3).integers(0, 2, 16)
    paper = _model("paper", num_layers=2).eval()
    g = _grads(paper, ids, labels, "soft", with_regularisers=False)
    gate_names = [n for n in g if ".gate." in n]
    assert gate_names and all(g[n] is not None and np.any(adaref.tensor.dense(g[n]) != 0) for n in gate_names)

    upstream = _model("upstream", num_layers=2).eval()
    g = _grads(upstream, ids, labels, "hard", with_regularisers=False)
    gate_names = [n for n in g if ".gate." in n]
    assert gate_names and all(g[n] is None for n in gate_names)          # unweighted, hard exit
    g = _grads(upstream, ids, labels, "hard", with_regularisers=True)    # regularisers do train them
    reached = len(upstream(ids, k=2).routing.layers)                      # gates of layers run
    trained = [n for n in gate_names if n.startswith("controller.") or int(n.split(".")[1]) < reached]
    assert trained and all(g[n] is not None for n in trained)
    # stop-gradient: the gates' inputs (X_0) pass no gradient back to the embedding
    upstream.zero_grad()
    out = upstream(ids, k=2, form="hard")
    (out.expert_loss + out.depth_loss + out.z_loss).backward()
    assert upstream.embedding.weight.grad is None


def test_same_seed_same_outputs_and_routing_totals():
    ids = _ids(32)
    a = _model(seed=4)(ids, step=0, rng=np.random.default_rng(9))
    b = _model(seed=4)(ids, step=0, rng=np.random.default_rng(9))
    c = _model(seed=5)(ids, step=0, rng=np.random.default_rng(9))
    assert np.array_equal(a.prob.data, b.prob.data) and not np.array_equal(a.prob.data, c.prob.data)
    model = _model().eval()
    out = model(ids, k=3)
    depth = out.routing.exit_depth
    assert out.routing.depth_fractions(4).sum() == pytest.approx(1.0)
    for l, layer in enumerate(out.routing.layers):
        assert layer.reached == np.sum(depth >= l + 1)
        assert layer.selected.sum() == 3 * layer.reached
        assert sum(layer.combinations().values()) == layer.reached
        assert all(len(c) == 3 for c in layer.combinations())
    b0 = int(np.flatnonzero(depth == depth.max())[0])
    assert len(out.routing.example_experts(b0)) == depth[b0]


def test_k_follows_the_annealing_schedule():
    model = _model(moe={"schedule": {"kind": "linear", "k": 2, "steps": 10}})
    ids = _ids(8)
    ks = [model(ids, step=s, rng=np.random.default_rng(0)).k for s in (0, 5, 10, 50)]
    assert ks == [5, 4, 2, 2]
    assert model.eval()(ids, k=1).routing.layers[0].mask.sum(axis=1).tolist() == [1] * 8


def test_flops_follow_the_route():
    model = _model().eval()
    out = model(_ids(), k=2)
    depth = out.routing.exit_depth
    layer = model.layers[0]
    fd = layer.gate.in_features
    for b in range(len(depth)):
        expected = model.controller.flops() + model.estimators[0].flops()
        for l, r in enumerate(out.routing.layers):
            where = np.flatnonzero(r.rows == b)
            if where.size:
                chosen = np.flatnonzero(r.mask[where[0]])
                expected += model.layers[l].fixed_flops(2) + sum(
                    model.layers[l].experts[model.layers[l].names[j]].flops() + 2 * fd for j in chosen)
        assert out.flops[b] == expected
    # a deeper exit costs more
    if len(set(depth)) > 1:
        assert out.flops[np.argmax(depth)] > out.flops[np.argmin(depth)]


def test_checkpoint_round_trip_and_refusals(tmp_path):
    model = _model(seed=2, dim=4)
    path = tmp_path / "model.npz"
    model.save(path, meta={"step": 7})
    again = AdaEnsemble.from_checkpoint(path)
    ids = _ids(8)
    np.testing.assert_array_equal(model.eval()(ids, k=2).prob.data, again.eval()(ids, k=2).prob.data)
    other = _model(seed=2, dim=2)
    with pytest.raises(StateDictError, match=r"config differs from the model's at config.dim: 4 != 2"):
        other.load(path)
    with pytest.raises(StateDictError, match="vocab_sizes"):
        AdaEnsemble(model.config, [5, 7, 3, 9], rng=np.random.default_rng(0)).load(path)
    plain = tmp_path / "plain.npz"
    adaref.io.save_npz(plain, {"w": np.ones(2)})
    with pytest.raises(StateDictError, match="not an AdaEnsemble checkpoint"):
        AdaEnsemble.from_checkpoint(plain)


def test_float32_model_stays_float32():
    model = AdaEnsemble(_config(), VOCAB, rng=np.random.default_rng(0), dtype=np.float32)
    out = model(_ids(8), rng=np.random.default_rng(0))
    assert out.prob.dtype == np.float32 and out.expert_loss.dtype == np.float32
    _loss(out, np.ones(8, int)).backward()
    assert all(adaref.tensor.dense(p.grad).dtype == np.float32 for p in model.parameters() if p.grad is not None)
