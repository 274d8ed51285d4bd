"""The planted generator: truth saved, Bayes-optimal metrics exact, each interaction kind present."""
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adaref.data import load, open_encoded
from adaref.data.__main__ import main
from adaref.data.synthetic import TERMS, PlantedModel, SynthOptions, synthesize, write_criteo_text
from adaref.metrics import auc, log_loss

SMALL = dict(rows=3000, n_fields=8, max_vocab=40)


def test_synthesize_saves_truth_and_exact_bayes_metrics(tmp_path):
    opts = SynthOptions(**SMALL, seed=5)
    m = synthesize(opts, str(tmp_path / "s"))
    ds = open_encoded(str(tmp_path / "s"))
    ids, labels, p = np.asarray(ds.ids), np.asarray(ds.labels), np.asarray(ds.probs)
    assert ids.shape == (3000, 8) and ids.min() >= 1 and np.all(ids < np.array(ds.vocab_sizes))
    terms = np.load(tmp_path / "s" / "terms.npy")
    logit = np.log(p / (1 - p))
    assert np.allclose(terms.sum(axis=1) + m["planted"]["bias"], logit, atol=1e-4)
    for name, idx in ds.splits.items():
        b = m["bayes_optimal"][name]
        assert b["auc"] == pytest.approx(auc(labels[idx], p[idx]), abs=1e-12)
        assert b["log_loss"] == pytest.approx(log_loss(labels[idx], p[idx]), abs=1e-12)
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 2100, "val": 300, "test": 600}
    assert abs(labels.mean() - opts.positive_rate) < 0.04
    # the true probabilities beat a constant predictor on every split
    for idx in ds.splits.values():
        assert log_loss(labels[idx], p[idx]) < log_loss(labels[idx], np.full(len(idx), labels.mean()))


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    a = synthesize(SynthOptions(**SMALL, seed=1), str(tmp_path / "a"))
    b = synthesize(SynthOptions(**SMALL, seed=1), str(tmp_path / "b"))
    c = synthesize(SynthOptions(**SMALL, seed=2), str(tmp_path / "c"))
    for name in ("ids.npy", "labels.npy", "probs.npy", "split.npy"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "probs.npy").read_bytes() != (tmp_path / "c" / "probs.npy").read_bytes()
    assert a["planted"] == b["planted"] != c["planted"]


@given(st.integers(0, 1000))
def test_planted_terms_are_the_stated_interactions(seed):
    g = PlantedModel(SynthOptions(rows=10, n_fields=12, max_vocab=30, seed=seed))
    x = g._levels(np.random.Generator(np.random.PCG64(seed)), 64)
    raw = g._raw_terms(x)
    fm = sum((g.u[i][x[:, i]] * g.u[j][x[:, j]]).sum(axis=1) for i, j in g.fm_pairs)
    assert np.allclose(raw[:, TERMS.index("fm")], fm)
    (i, j), M = g.cross_pairs[0], g.M[0]
    cross0 = np.array([g.u[i][x[r, i]] @ M @ g.u[j][x[r, j]] for r in range(len(x))])
    assert np.allclose(raw[:, TERMS.index("cross")], cross0 + sum(
        np.einsum("bd,de,be->b", g.u[a][x[:, a]], Mk, g.u[b][x[:, b]]) for (a, b), Mk in zip(g.cross_pairs[1:], g.M[1:])))
    t = g.triples[0]
    had = (g.u[t[0]][x[:, t[0]]] * g.u[t[1]][x[:, t[1]]] * g.u[t[2]][x[:, t[2]]]).sum(axis=1)
    assert np.allclose(raw[:, TERMS.index("hadamard")], had)
    # the attention term depends on the query field, whose own value never enters it
    x2 = x.copy()
    x2[:, g.query] = (x[:, g.query] + 1) % g.V[g.query]
    assert not np.allclose(g._raw_terms(x2)[:, TERMS.index("attention")], raw[:, TERMS.index("attention")])


def test_zipf_frequencies_and_term_scales():
    g = PlantedModel(SynthOptions(rows=10, n_fields=6, max_vocab=100, seed=0))
    x = g._levels(np.random.Generator(np.random.PCG64(1)), 20_000)
    for f in range(6):
        counts = np.bincount(x[:, f], minlength=g.V[f])
        assert counts[0] == counts.max()
    _, terms = g.probability(x)
    assert np.allclose(terms.std(axis=0), g.coef, rtol=0.1)


def test_criteo_text_goes_through_prepare(tmp_path, capsys):
    opts = SynthOptions(rows=1500, max_vocab=200, seed=4)
    info = write_criteo_text(opts, str(tmp_path / "s.txt"))
    ds = load("criteo", input=str(tmp_path / "s.txt"), out=str(tmp_path / "enc"))
    assert ds.ids.shape == (1500, 39) and ds.manifest["positive_rate"] == pytest.approx(info["positive_rate"], abs=1e-6)
    assert main(["synth", "--rows", "400", "--out", str(tmp_path / "cli"), "--quiet", "--set", "n_fields=6",
                 "--set", "max_vocab=20"]) == 0
    text = capsys.readouterr().out
    assert "Bayes-optimal test: AUC" in text
    assert json.load(open(tmp_path / "cli" / "manifest.json"))["options"]["n_fields"] == 6
    assert main(["synth", "--rows", "10", "--out", str(tmp_path / "x"), "--set", "n_field=6"]) == 2
    assert "unknown option 'n_field'" in capsys.readouterr().err


def test_attention_options_default_to_the_original_function_and_change_it_as_stated():
    base = dict(rows=10, n_fields=12, max_vocab=30, seed=3)
    g = PlantedModel(SynthOptions(**base))
    same = PlantedModel(SynthOptions(**base, attention_keys=2, attention_scale=1.5))  # 12 // 6 = 2
    x = g._levels(np.random.Generator(np.random.PCG64(0)), 500)
    assert g.keys == same.keys and np.array_equal(g._raw_terms(x), same._raw_terms(x))
    wide = PlantedModel(SynthOptions(**base, attention_keys=5))
    assert len(wide.keys) == 5 and wide.keys[:2] == g.keys and g.query not in wide.keys
    # the other terms and the query map are drawn as before; only the attention term changes
    raw, raw_wide = g._raw_terms(x), wide._raw_terms(x)
    a = TERMS.index("attention")
    assert np.array_equal(np.delete(raw, a, axis=1), np.delete(raw_wide, a, axis=1))
    assert not np.allclose(raw[:, a], raw_wide[:, a])
    # a sharper softmax: the attention weights concentrate on one key field
    def top_weight(model):
        q = model.u[model.query][x[:, model.query]] @ model.A
        s = np.stack([np.einsum("bd,bd->b", q, model.u[k][x[:, k]]) for k in model.keys], axis=1)
        w = np.exp(s - s.max(axis=1, keepdims=True))
        return (w / w.sum(axis=1, keepdims=True)).max(axis=1).mean()
    sharp = PlantedModel(SynthOptions(**base, attention_keys=5, attention_scale=6.0))
    assert top_weight(sharp) > top_weight(wide) + 0.05


@pytest.mark.parametrize("bad,message", [(dict(attention_keys=12), "attention_keys"),
                                         (dict(attention_keys=-1), "attention_keys"),
                                         (dict(attention_keys=1), "one key"),
                                         (dict(attention_scale=0.0), "attention_scale"),
                                         (dict(attention_scale=float("inf")), "finite")])
def test_attention_options_are_checked(bad, message):
    from adaref.data.config import OptionsError
    with pytest.raises(OptionsError, match=message):
        SynthOptions(rows=10, n_fields=12, **bad)
