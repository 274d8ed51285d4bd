"""python -m adaref.bench planted: its term analysis recovers known coefficients, and the
command runs end to end on a tiny planted set."""
import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from adaref import Tensor
from adaref.bench.planted import MAX_COEF, MIN_ROWS, additive_fit, main, term_coefficients
from adaref.data.synthetic import PlantedModel, SynthOptions


class _Oracle:
    """A stand-in model whose logit is a chosen combination of the planted terms."""

    def __init__(self, planted, weights):
        self.planted, self.weights = planted, np.asarray(weights, dtype=float)

    def eval(self):
        return self

    def __call__(self, ids, k):
        _, terms = self.planted.probability(np.asarray(ids) - 1)
        z = terms @ self.weights + 0.3
        return SimpleNamespace(prob=Tensor(1 / (1 + np.exp(-z))))


@pytest.mark.parametrize("weights", [(1, 1, 1, 1, 1), (1, 0, 0, 0, 0), (0.5, 1, 0, 2, 0.25)])
def test_term_coefficients_recover_the_combination(weights):
    planted = PlantedModel(SynthOptions(rows=10, n_fields=8, max_vocab=30, seed=1))
    ids, _, terms = planted.sample(np.random.default_rng(0), 3000)
    coef = term_coefficients(_Oracle(planted, weights), ids, terms, k=1, batch=1000)
    np.testing.assert_allclose(coef, weights, atol=1e-6)


def test_additive_fit_is_the_least_squares_fit_on_one_hot_fields():
    """Backfitting converges to the one-hot least-squares solution (no interactions)."""
    rng = np.random.default_rng(0)
    ids = np.column_stack([rng.integers(0, n, 400) for n in (3, 5, 4)])
    y = rng.normal(size=400) + ids[:, 0] * ids[:, 1] * 0.5                  # an interaction too
    onehot = np.column_stack([np.ones(400)] + [ids[:, f] == v for f, n in enumerate((3, 5, 4))
                                               for v in range(1, n)]).astype(float)
    direct = onehot @ np.linalg.lstsq(onehot, y, rcond=None)[0]
    np.testing.assert_allclose(additive_fit(ids, y), direct, atol=1e-8)


def test_the_bayes_row_is_computed_and_the_floor_row_printed(tmp_path, capsys):
    """Bayes: 1 on planted terms, 0 on the others (computed from the true logit, not
    printed as constants); the no-interaction floor sits below 1 on an interaction."""
    assert main(["--rows", "3000", "--fields", "6", "--max-vocab", "8", "--dim", "4", "--epochs", "0.1",
                 "--eval-every", "2", "--batch", "256", "--models", "dense", "--coefs=0.6,0,0.8,0,0",
                 "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    bayes = next(line for line in lines if line.startswith("Bayes-optimal")).split()[-5:]
    assert bayes == ["1.00", "0.00", "1.00", "0.00", "0.00"] or bayes == ["1.00", "-0.00", "1.00", "0.00", "0.00"]
    floor = [float(v) for v in next(line for line in lines if line.startswith("no interactions")).split()[-5:]]
    assert floor[2] < 0.95 and abs(floor[1]) < 1e-6


@pytest.mark.parametrize("bilevel", ["off", "on"])
def test_planted_bench_runs_and_prints_every_model(tmp_path, capsys, bilevel):
    assert main(["--rows", "3000", "--fields", "6", "--max-vocab", "8", "--dim", "4", "--epochs", "0.3",
                 "--eval-every", "2", "--batch", "256", "--models", "adaensemble,pin",
                 "--bilevel", bilevel, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    config = (tmp_path / "adaensemble" / "config.json").read_text()
    assert f'"bilevel": "{bilevel}"' in config
    for label in ("Bayes-optimal", "AdaEnsemble k=2", "pin only", "attention",
                  "mechanism for (pin: attention;", "(expert, term) pairs", "  pin    attention  AdaEnsemble"):
        assert label in out


def test_several_seeds_add_means_and_a_verdict_per_pair_and_write_results(tmp_path, capsys):
    import json

    assert main(["--rows", "2000", "--fields", "6", "--max-vocab", "8", "--dim", "4", "--epochs", "0.2",
                 "--eval-every", "2", "--batch", "256", "--models", "adaensemble,dense",
                 "--seed", "3,5", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    runs = results["runs"]
    assert [(r["model"], r["seed"]) for r in runs] == [("adaensemble", 3), ("dense", 3),
                                                      ("adaensemble", 5), ("dense", 5)]
    assert (tmp_path / "dense-seed5" / "config.json").exists()
    assert '"seed": 5' in (tmp_path / "dense-seed5" / "config.json").read_text()
    ada = [r for r in runs if r["model"] == "adaensemble"]
    assert "means over seeds 3,5" in out
    assert f"AdaEnsemble k=2 mean  {np.mean([r['auc'] for r in ada]):>9.4f}" in out
    # dense has no mechanism for four planted terms: one verdict each, over both seeds
    pairs = results["pairs"]
    assert [(v["expert"], v["term"], v["seeds"]) for v in pairs] == [
        ("dense", t, 2) for t in ("fm", "cross", "hadamard", "attention")]
    for v in pairs:
        a = np.mean([r["coefficients"][v["term"]] for r in ada])
        d = np.mean([r["coefficients"][v["term"]] for r in runs if r["model"] == "dense"])
        assert v["adaensemble"] == pytest.approx(a) and v["single"] == pytest.approx(d)
        assert v["closer"] == (abs(1 - a) < abs(1 - d)) and 0 <= v["seeds_closer"] <= 2
        assert f"  dense  {v['term']:<10} AdaEnsemble {a:.3f}" in out
    assert "(on " in out and " of 2 seeds)" in out
    # a seed's runs give the same numbers alone as among several
    assert main(["--rows", "2000", "--fields", "6", "--max-vocab", "8", "--dim", "4", "--epochs", "0.2",
                 "--eval-every", "2", "--batch", "256", "--models", "adaensemble,dense",
                 "--seed", "5", "--out", str(tmp_path / "alone")]) == 0
    alone = json.loads((tmp_path / "alone" / "results.json").read_text())["runs"]
    for a, b in zip(alone, runs[2:]):
        assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}


@pytest.mark.parametrize("argv,message", [(["--coefs", "1,2,3"], "--coefs: give 5"),
                                          (["--attention-keys", "12"], "--attention-keys: must be 0"),
                                          (["--seed", "1,x"], "comma-separated integers"),
                                          (["--seed", "1,1"], "distinct")])
def test_planted_bench_refuses_bad_generator_options(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("argv,flag,value", [
    (["--rows", "10"], "--rows", "'10'"),
    (["--rows", str(MIN_ROWS - 1)], "--rows", f"'{MIN_ROWS - 1}'"),
    (["--rows", "1e5"], "--rows", "'1e5'"),
    (["--fields", "3"], "--fields", "'3'"),
    (["--max-vocab", "1"], "--max-vocab", "'1'"),
    (["--attention-keys=-1"], "--attention-keys", "'-1'"),
    (["--attention-keys", "1"], "--attention-keys", "got 1"),
    (["--attention-keys", "6", "--fields", "6"], "--attention-keys", "got 6"),
    (["--attention-scale", "0"], "--attention-scale", "'0'"),
    (["--attention-scale", "nan"], "--attention-scale", "'nan'"),
    (["--attention-scale", "inf"], "--attention-scale", "'inf'"),
    (["--coefs", "nan,0,0,0,0"], "--coefs", "'nan,0,0,0,0'"),
    (["--coefs", "0,inf,0,0,0"], "--coefs", "'0,inf,0,0,0'"),
    (["--coefs=-inf,0,0,0,0"], "--coefs", "'-inf,0,0,0,0'"),
    (["--coefs", f"0,0,0,0,{MAX_COEF + 0.5}"], "--coefs", f"'0,0,0,0,{MAX_COEF + 0.5}'"),
    (["--dim", "0"], "--dim", "'0'"),
    (["--layers", "0"], "--layers", "'0'"),
    (["--k", "0"], "--k", "'0'"),
    (["--k", "6"], "--k", "'6'"),
    (["--k", "9"], "--k", "'9'"),
    (["--k-steps=-1"], "--k-steps", "'-1'"),
    (["--lambda1", "nan"], "--lambda1", "'nan'"),
    (["--lambda2=-0.1"], "--lambda2", "'-0.1'"),
    (["--lr", "0"], "--lr", "'0'"),
    (["--lr", "nan"], "--lr", "'nan'"),
    (["--gftrl-alpha=-0.05"], "--gftrl-alpha", "'-0.05'"),
    (["--gftrl-alpha", "inf"], "--gftrl-alpha", "'inf'"),
    (["--epochs", "0"], "--epochs", "'0'"),
    (["--epochs", "1e400"], "--epochs", "'1e400'"),
    (["--epochs", "nan"], "--epochs", "'nan'"),
    (["--batch", "0"], "--batch", "'0'"),
    (["--eval-every", "0"], "--eval-every", "'0'"),
    (["--patience=-1"], "--patience", "'-1'"),
    (["--models", "pin,dense,pin"], "--models", "'pin'"),
])
def test_planted_bench_refuses_bad_values_naming_the_flag(argv, flag, value, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv + ["--out", str(tmp_path)])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2
    assert last.startswith("python -m adaref.bench planted: error: ") and f"{flag}: " in last and value in last
    assert list(tmp_path.iterdir()) == []            # refused before any data were generated


@pytest.mark.parametrize("argv", [
    # the smallest data, the extreme weights, the largest k and key count, zero steps and rates
    ["--fields", "4", "--max-vocab", "2", "--attention-keys", "3", f"--coefs={MAX_COEF},-{MAX_COEF},0,0,0.5",
     "--k", "5", "--k-steps", "0", "--gftrl-alpha", "0", "--patience", "0", "--bilevel", "on"],
    # --attention-keys 0 is the generator's default, max(2, F // 6) key fields
    ["--fields", "6", "--max-vocab", "8", "--attention-keys", "0", "--k", "1", "--coefs", "0,0,0,0,1"],
])
def test_planted_bench_accepts_the_boundary_values(argv, tmp_path, capsys):
    import json

    assert main(["--rows", str(MIN_ROWS), "--dim", "2", "--layers", "1", "--epochs", "0.1", "--eval-every", "1",
                 "--batch", "256", "--models", "adaensemble,cross", "--out", str(tmp_path)] + argv) == 0
    out = capsys.readouterr().out
    k, fields, keys = (int(argv[argv.index(flag) + 1]) for flag in ("--k", "--fields", "--attention-keys"))
    assert f"planted data: {MIN_ROWS:,} rows, {fields} fields" in out and f"AdaEnsemble k={k} " in out
    (manifest,) = tmp_path.glob("data-*/manifest.json")
    manifest = json.loads(manifest.read_text())
    assert len(manifest["planted"]["attention_key_fields"]) == (keys or max(2, fields // 6))
    for name in ("val", "test"):                      # both classes in the evaluated splits
        assert 0 < manifest["splits"][name]["positives"] < manifest["splits"][name]["rows"]
    bayes = json.loads((tmp_path / "results.json").read_text())["bayes"]
    assert 0.5 < bayes["auc"] <= 1 and np.isfinite(bayes["log_loss"])


def test_planted_bench_refuses_an_unknown_model_name(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--models", "adaensemble,foo"])
    assert e.value.code == 2 and "unknown 'foo'" in capsys.readouterr().err


def test_cached_planted_data_is_reused_only_for_the_same_options(tmp_path):
    from adaref.bench.planted import _manifest_options
    from adaref.data.synthetic import synthesize

    opts = SynthOptions(rows=200, n_fields=6, max_vocab=8, attention_keys=3, attention_scale=2.5)
    synthesize(opts, str(tmp_path / "d"))
    manifest = str(tmp_path / "d" / "manifest.json")
    assert _manifest_options(manifest) == opts.manifest_options()
    assert _manifest_options(manifest) != dataclasses.replace(opts, attention_scale=2.5000001).manifest_options()
