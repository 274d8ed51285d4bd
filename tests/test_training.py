"""Training: eq. 18, Algorithm 2 (first and second order), determinism, resume, failures, artefacts."""
import csv
import json
import re

import numpy as np
import pytest

import adaref
from adaref import ops
from adaref.data import load
from adaref.io import NpzError
from adaref.model import AdaEnsemble, model_config
from adaref.nn import StateDictError
from adaref.training.bilevel import darts_gate_gradient, split_parameters
from adaref.training.config import RunConfig, TrainConfig, sample_defaults
from adaref.training.objective import objective
from adaref.training.trainer import Trainer, TrainingDataError, TrainingDiverged, TrainingInterrupted


@pytest.fixture(scope="module")
def criteo(tmp_path_factory):
    return load("criteo", sample=True, preset="paper", seed=0, out=str(tmp_path_factory.mktemp("data")))


def tiny_run(**train) -> RunConfig:
    run = sample_defaults("paper")
    model = model_config("paper", dim=4, num_layers=2)
    model = model.replace(moe={**model.moe.to_dict(), "experts": ("dense", "pin", "cross"),
                               "schedule": {"kind": "linear", "k": 2, "steps": 4}})
    options = dict(batch_size=512, max_steps=6, eval_every=3, eval_batch_size=1024, patience=0,
                   bilevel="on")                       # Algorithm 2, the paper preset's form
    options.update(train)
    return run.replace(model=model.to_dict(), train={**run.train.to_dict(), **options})


def _train(ds, path, run=None, stop_after=None):
    trainer = Trainer(run or tiny_run(), ds, path, quiet=True)
    trainer.fit(stop_after=stop_after)
    return trainer, trainer.finish()


def test_same_seed_same_metrics_and_artefacts(criteo, tmp_path):
    _, a = _train(criteo, tmp_path / "a")
    _, b = _train(criteo, tmp_path / "b")
    assert (tmp_path / "a" / "metrics.json").read_text() == (tmp_path / "b" / "metrics.json").read_text()
    assert a["steps"] == 6 and a["test"]["examples"] == 2037
    assert a["test"]["k"] == a["best_val"]["k"]          # scored at the k it was selected at
    for name in ("config.json", "metrics.json", "history.csv", "best.npz", "last.npz", "curves.png",
                 "expert_usage.png", "exit_depth.png", "k.png"):
        assert (tmp_path / "a" / name).is_file(), name
    assert (tmp_path / "a" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(open(tmp_path / "a" / "history.csv")))
    assert [int(r["step"]) for r in rows] == [3, 6] and [int(r["k"]) for r in rows] == [3, 2]   # N = 3 -> 2
    again = RunConfig.from_dict(json.loads((tmp_path / "a" / "config.json").read_text()))
    assert again == tiny_run()


def test_resume_after_interruption_ends_with_the_same_metrics(criteo, tmp_path):
    _train(criteo, tmp_path / "full")
    with pytest.raises(TrainingInterrupted, match="--resume"):
        _train(criteo, tmp_path / "cut", stop_after=4)
    resumed = Trainer(tiny_run(), criteo, tmp_path / "cut", quiet=True)
    resumed.restore(tmp_path / "cut" / "last.npz")
    assert resumed.state.step == 4
    resumed.fit()
    resumed.finish()
    assert (tmp_path / "cut" / "metrics.json").read_text() == (tmp_path / "full" / "metrics.json").read_text()
    history = lambda d: [{k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
                         for r in csv.DictReader(open(tmp_path / d / "history.csv"))]
    assert history("cut") == history("full")


def test_resume_refuses_another_run_and_broken_files(criteo, tmp_path):
    _train(criteo, tmp_path / "a")
    other = Trainer(tiny_run(batch_size=256), criteo, tmp_path / "b", quiet=True)
    with pytest.raises(StateDictError, match=r"another configuration; first difference at "
                                             r"run.train.batch_size: 512 != 256"):
        other.restore(tmp_path / "a" / "last.npz")
    broken = tmp_path / "broken.npz"
    data = (tmp_path / "a" / "last.npz").read_bytes()
    broken.write_bytes(data[: len(data) // 3])
    with pytest.raises(NpzError, match="not a valid .npz"):
        Trainer(tiny_run(), criteo, tmp_path / "c", quiet=True).restore(broken)


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(criteo, tmp_path, monkeypatch):
    trainer = Trainer(tiny_run(max_steps=8), criteo, tmp_path, quiet=True)
    original = trainer._loss

    def poisoned(rows, rng):
        loss, parts = original(rows, rng)
        if trainer.state.step == 4:
            parts = {**parts, "loss": float("nan")}
        return loss, parts

    monkeypatch.setattr(trainer, "_loss", poisoned)
    with pytest.raises(TrainingDiverged, match=r"step 5: the loss is nan.*last finite values.*\"step\": 3"):
        trainer.fit()
    arrays, meta = adaref.io.load_npz(tmp_path / "last.npz")
    assert meta["loop"]["step"] == 3


def test_bilevel_steps_touch_only_their_own_parameters(criteo, tmp_path):
    trainer = Trainer(tiny_run(), criteo, tmp_path, quiet=True)
    groups = split_parameters(trainer.model)
    snap = lambda key: [p.data.copy() for _, p in groups[key]]  # noqa: E731
    gates, weights = snap("gates"), snap("weights")
    trainer._w_step(trainer._next_batch())
    assert all(np.array_equal(a, p.data) for a, (_, p) in zip(gates, groups["gates"]))
    assert not all(np.array_equal(a, p.data) for a, (_, p) in zip(weights, groups["weights"]))
    weights = snap("weights")
    trainer._alpha_step(trainer._next_batch())
    assert all(np.array_equal(a, p.data) for a, (_, p) in zip(weights, groups["weights"]))
    assert not all(np.array_equal(a, p.data) for a, (_, p) in zip(gates, groups["gates"]))
    assert set(trainer.alpha_rows).isdisjoint(trainer.rows["val"])          # alpha_val = split
    names = [n for n, _ in groups["gates"]]
    assert names and all(".gate." in n for n in names)
    assert not any(".gate." in n for n, _ in groups["weights"] + groups["embedding"])


def test_darts_second_order_gradient_matches_a_direct_computation():
    """grad_alpha L_val(W - xi grad_W L_train(W, alpha), alpha), by central differences of
    the whole unrolled objective over alpha, equals the DARTS formula with its
    finite-difference Hessian-vector product (float64, small model)."""
    cfg = model_config("paper", dim=2, num_layers=1, controller={"enabled": False})
    cfg = cfg.replace(moe={**cfg.moe.to_dict(), "experts": ("dense", "cross"),
                           "schedule": {"kind": "constant", "k": 2}},
                      gate={**cfg.gate.to_dict(), "reduction": 1, "hidden": 3})
    model = AdaEnsemble(cfg, [4, 5, 3], rng=np.random.default_rng(0)).eval()
    rng = np.random.default_rng(1)
    ids_t, ids_v = rng.integers(0, 3, size=(12, 3)), rng.integers(0, 3, size=(10, 3))
    y_t, y_v = rng.integers(0, 2, 12), rng.integers(0, 2, 10)
    train_loss = lambda: objective(model(ids_t, k=2), y_t, 0.1, 0.0)[0]  # noqa: E731
    val_loss = lambda: objective(model(ids_v, k=2), y_v, 0.1, 0.0)[0]    # noqa: E731
    xi = 0.05
    groups = split_parameters(model)
    w = [p for _, p in groups["embedding"] + groups["weights"]]
    alpha = [p for _, p in groups["gates"]]

    def unrolled() -> float:
        for p in w + alpha:
            p.grad = None
        train_loss().backward()
        saved = [p.data.copy() for p in w]
        for p in w:
            p.data = p.data - xi * adaref.tensor.dense(p.grad)
        value = val_loss().item()
        for p, s in zip(w, saved):
            p.data = s
        return value

    analytic = darts_gate_gradient(model, train_loss, val_loss, xi, eps_scale=1e-4)
    for p, g in zip(alpha, analytic):
        flat = p.data.reshape(-1)
        for j in range(min(flat.size, 3)):
            orig = flat[j]
            flat[j] = orig + 1e-6
            up = unrolled()
            flat[j] = orig - 1e-6
            down = unrolled()
            flat[j] = orig
            numeric = (up - down) / 2e-6
            assert g.reshape(-1)[j] == pytest.approx(numeric, rel=1e-4, abs=1e-7)
    first_order = darts_gate_gradient(model, train_loss, val_loss, 0.0)
    assert any(not np.allclose(a, b) for a, b in zip(analytic, first_order))


def test_a_gate_the_losses_do_not_reach_has_no_gradient_for_any_xi():
    """Every example exits at depth 1 (Algorithm 1), so layer 2 and its gate never run:
    that gate's alpha gradient is None for xi = 0 and xi > 0 alike (not zeros, which
    Adam's momentum would still move), while layer 1's gate has one."""
    cfg = model_config("paper", dim=2, num_layers=2)
    cfg = cfg.replace(moe={**cfg.moe.to_dict(), "experts": ("dense", "cross"),
                           "schedule": {"kind": "constant", "k": 2}})
    model = AdaEnsemble(cfg, [4, 5, 3], rng=np.random.default_rng(0)).eval()
    depth = model.controller.gate
    depth.project.weight.data[...] = 0.0                  # h = the bias for every example
    depth.project.bias.data[...] = np.eye(depth.project.bias.shape[0])[0]
    depth.embeddings.data[...] = np.outer([1.0, -1.0], np.eye(depth.embeddings.shape[1])[0])
    rng = np.random.default_rng(1)
    ids_t, ids_v = rng.integers(0, 3, size=(12, 3)), rng.integers(0, 3, size=(10, 3))
    y_t, y_v = rng.integers(0, 2, 12), rng.integers(0, 2, 10)
    assert (model(ids_t, k=2).routing.exit_depth == 1).all()
    train_loss = lambda: objective(model(ids_t, k=2), y_t, 0.1, 0.0)[0]  # noqa: E731
    val_loss = lambda: objective(model(ids_v, k=2), y_v, 0.1, 0.0)[0]    # noqa: E731
    names = [n for n, _ in split_parameters(model)["gates"]]
    for xi in (0.0, 0.1):
        grads = dict(zip(names, darts_gate_gradient(model, train_loss, val_loss, xi)))
        assert all(g is None for n, g in grads.items() if n.startswith("layers.1."))
        assert all(g is not None for n, g in grads.items() if n.startswith("layers.0."))


def test_second_order_unrolls_on_the_batch_of_the_next_w_step(criteo, tmp_path, monkeypatch):
    trainer = Trainer(tiny_run(xi=0.01, max_steps=2, eval_every=2), criteo, tmp_path, quiet=True)
    seen, w_batches = [], []
    loss, step = trainer._loss, trainer._w_step

    def recording(rows, rng):
        seen.append(np.array(rows))
        return loss(rows, rng)

    monkeypatch.setattr(trainer, "_loss", recording)
    monkeypatch.setattr(trainer, "_w_step", lambda rows: (w_batches.append(np.array(rows)), step(rows))[1])
    trainer.fit()
    # the alpha step's three training-loss evaluations (unroll, W +/- eps v) and the W step
    assert sum(np.array_equal(r, w_batches[0]) for r in seen) == 4


def test_objective_is_eq18():
    model = AdaEnsemble(model_config("upstream", dim=2), [4, 5, 3], rng=np.random.default_rng(0)).eval()
    out = model(np.array([[1, 2, 0], [3, 4, 2]]), k=2)
    y = np.array([1, 0])
    loss, parts = objective(out, y, lambda1=0.3, lambda2=0.7, z=0.5)
    p = out.prob.data
    ll = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert parts["log_loss"] == pytest.approx(ll, rel=1e-12)
    assert loss.item() == pytest.approx(ll + 0.3 * out.expert_loss.item() + 0.7 * out.depth_loss.item()
                                        + 0.5 * out.z_loss.item(), rel=1e-12)


def criteo_for_cli(tmp_path):
    return load("criteo", sample=True, preset="paper", seed=0, out=str(tmp_path / "data"))


def test_cli_config_file_and_flags(tmp_path, capsys):
    from adaref import train

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": {"batch_sise": 3}, "model": {"gate": {"jiter": 0.1}}}))
    assert train.main(["--sample", "criteo", "--config", str(bad), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'model.gate.jiter'" in err and "unknown key 'train.batch_sise'" in err
    assert train.main(["--sample", "criteo", "--quiet", "--model.gate.combine", "softly"]) == 2
    assert "choose one of gates, switch, unweighted" in capsys.readouterr().err
    bad_data = tmp_path / "bad.txt"
    bad_data.write_text("1\t2\n")
    assert train.main(["--data", str(bad_data), "--dataset", "criteo", "--quiet",
                       "--out", str(tmp_path / "run")]) == 1
    assert f"data error: {bad_data}:1: expected 40 tab-separated fields, got 2" in capsys.readouterr().err
    run_dir = tmp_path / "cut"
    _train(criteo_for_cli(tmp_path), run_dir)
    with pytest.raises(SystemExit):
        train.main(["--resume", str(run_dir), "--seed", "3"])
    assert "--resume takes every option from" in capsys.readouterr().err
    (run_dir / "last.npz").write_bytes(b"garbage")
    assert train.main(["--resume", str(run_dir), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "checkpoint error" in err and "not a .npz file (no zip header" in err
    with pytest.raises(SystemExit):
        train.main(["--help"])
    text = capsys.readouterr().out
    assert "--model.gate.jitter" in text and "eps of eq. 7" in text and "--train.xi" in text
    parser, hints = train.build_parser()
    args = parser.parse_args(["--sample", "avazu", "--seed", "3", "--model.dim", "6",
                              "--model.moe.experts", "pin,cross", "--train.optimizer.options",
                              '{"lr": 0.01}', "--bilevel", "off"])
    run = train.resolve_run(args, hints)
    assert (run.seed, run.model.dim, run.model.moe.experts, run.train.bilevel) == (3, 6, ("pin", "cross"), "off")
    assert run.data.dataset == "avazu" and run.train.optimizer.options == {"lr": 0.01}


def test_ctrl_c_saves_a_resumable_checkpoint_at_a_step_boundary(criteo, tmp_path, monkeypatch):
    import signal

    trainer = Trainer(tiny_run(), criteo, tmp_path / "cut", quiet=True)
    original = trainer._w_step

    def step_then_ctrl_c(rows):
        parts = original(rows)
        if trainer.state.step == 2:
            signal.raise_signal(signal.SIGINT)        # as if the user pressed Ctrl-C mid-run
        return parts

    monkeypatch.setattr(trainer, "_w_step", step_then_ctrl_c)
    with pytest.raises(TrainingInterrupted, match="interrupted at step 2"):
        trainer.fit()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler     # handler restored
    resumed = Trainer(tiny_run(), criteo, tmp_path / "cut", quiet=True)
    resumed.restore(tmp_path / "cut" / "last.npz")
    resumed.fit()
    resumed.finish()
    _train(criteo, tmp_path / "full")
    assert (tmp_path / "cut" / "metrics.json").read_text() == (tmp_path / "full" / "metrics.json").read_text()


def test_nan_gradient_stops_with_the_step(criteo, tmp_path, monkeypatch):
    trainer = Trainer(tiny_run(), criteo, tmp_path, quiet=True)
    head = trainer.model.estimators[0].linear.bias

    def poison(self_loss, *args, **kwargs):
        original_backward(self_loss, *args, **kwargs)
        head.grad = np.full_like(head.data, np.nan)

    original_backward = adaref.Tensor.backward
    monkeypatch.setattr(adaref.Tensor, "backward", poison)
    with pytest.raises(TrainingDiverged, match=r"step 1: .*estimators.0.linear.bias.*NaN"):
        trainer._w_step(trainer._next_batch())


def test_resume_refuses_a_checkpoint_of_other_data(criteo, tmp_path):
    """The checkpoint records the data's cache key (source sha256s and data options);
    resuming on changed data is refused, naming the file, instead of training on it."""
    src = tmp_path / "c.txt"
    lines = open(adaref.data.samples.sample_path("criteo")).read().splitlines()[:1200]
    src.write_text("\n".join(lines) + "\n")
    ds = load("criteo", input=str(src), preset="paper", seed=0, out=str(tmp_path / "d1"))
    _train(ds, tmp_path / "run", tiny_run(max_steps=3, eval_every=3))
    flipped = [("0" if ln[0] == "1" else "1") + ln[1:] if i < 150 else ln for i, ln in enumerate(lines)]
    src.write_text("\n".join(flipped) + "\n")
    changed = load("criteo", input=str(src), preset="paper", seed=0, out=str(tmp_path / "d2"))
    assert changed.vocab_sizes == ds.vocab_sizes                     # same shapes: only the data differ
    with pytest.raises(StateDictError, match=r"the data changed since this checkpoint.*c\.txt \(sha256"):
        Trainer(tiny_run(max_steps=3, eval_every=3), changed, tmp_path / "run2",
                quiet=True).restore(tmp_path / "run" / "last.npz")
    again = Trainer(tiny_run(max_steps=3, eval_every=3), ds, tmp_path / "run3", quiet=True)
    again.restore(tmp_path / "run" / "last.npz")                     # the same data resumes
    assert again.state.step == 3


def test_damaged_resume_state_is_refused_by_name(criteo, tmp_path):
    _train(criteo, tmp_path / "a", tiny_run(max_steps=3, eval_every=3))
    arrays, meta = adaref.io.load_npz(tmp_path / "a" / "last.npz")
    meta["loop"]["stray"] = 1
    adaref.io.save_npz(tmp_path / "bad.npz", arrays, meta)
    with pytest.raises(StateDictError, match=r"bad\.npz: the resume state .* is damaged: TypeError"):
        Trainer(tiny_run(max_steps=3, eval_every=3), criteo, tmp_path / "b", quiet=True).restore(tmp_path / "bad.npz")
    arrays["model.embedding.weight"] = arrays["model.embedding.weight"].copy()
    arrays["model.embedding.weight"][3, 1] = np.inf
    del meta["loop"]["stray"]
    adaref.io.save_npz(tmp_path / "inf.npz", arrays, meta)
    adaref.io.save_npz(tmp_path / "bare.npz", arrays, {})
    with pytest.raises(StateDictError, match=r"bare\.npz: not a resumable checkpoint"):
        Trainer(tiny_run(max_steps=3, eval_every=3), criteo, tmp_path / "d", quiet=True).restore(tmp_path / "bare.npz")
    with pytest.raises(StateDictError, match=r"tensor embedding.weight holds 1 NaN or infinite value\(s\), "
                                             r"the first at index \(3, 1\): inf"):
        Trainer(tiny_run(max_steps=3, eval_every=3), criteo, tmp_path / "c", quiet=True).restore(tmp_path / "inf.npz")


@pytest.mark.parametrize("rows,message", [
    (1, r"the train split is empty \(rows per split: train 0, val 0, test 1\)"),
    (40, r"the (val|test) split has 0 positives among \d+ rows: AUC needs both classes"),
])
def test_data_too_small_to_train_is_a_clear_data_error(tmp_path, capsys, rows, message):
    from adaref import train
    lines = [ln for ln in open(adaref.data.samples.sample_path("criteo")).read().splitlines() if ln[0] == "0"]
    src = tmp_path / "small.txt"
    src.write_text("\n".join(lines[:rows]) + "\n")
    assert train.main(["--data", str(src), "--dataset", "criteo", "--quiet", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "adaref.train: data error:" in err and "Traceback" not in err
    assert re.search(message, err)


def test_cli_refuses_damaged_files_and_reports_skipped_lines(criteo, tmp_path, capsys):
    from adaref import train
    for flags, message in ((["--seed", "-1"], "argument --seed: must be an integer >= 0, got '-1'"),
                           (["--sampl", "avazu"], "unrecognized arguments: --sampl")):   # no abbreviations
        with pytest.raises(SystemExit):
            train.main(["--sample", "criteo", *flags])
        assert message in capsys.readouterr().err
    assert train.main(["--sample", "criteo", "--quiet", "--train.xi", "nan"]) == 2
    assert "key 'xi' expects float (finite), got nan" in capsys.readouterr().err
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"data": "criteo"}))
    assert train.main(["--config", str(cfg), "--quiet"]) == 2
    assert "'data' must be an object of options, got 'criteo'" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit):
        train.main(["--sample", "criteo", "--out", str(tmp_path / "file")])
    assert "a file of that name exists" in capsys.readouterr().err
    run_dir = tmp_path / "run"
    _train(criteo, run_dir, tiny_run(max_steps=3, eval_every=3))
    with pytest.raises(SystemExit):
        train.main(["--sample", "criteo", "--out", str(run_dir)])
    assert f"already holds a run (config.json); choose another directory, or continue that run with --resume" \
        in capsys.readouterr().err
    (run_dir / "config.json").write_text("{broken")
    assert train.main(["--resume", str(run_dir), "--quiet"]) == 2
    assert f"--resume {run_dir / 'config.json'}: Expecting property name" in capsys.readouterr().err
    lines = open(adaref.data.samples.sample_path("criteo")).read().splitlines()[:3000]
    lines[9], lines[499] = "garbage", lines[499].replace("\t", ",")
    src = tmp_path / "bad.txt"
    src.write_text("\n".join(lines) + "\n")
    assert train.main(["--data", str(src), "--dataset", "criteo", "--on-bad-line", "skip", "--out",
                       str(tmp_path / "r2"), "--train.max_steps", "2", "--train.eval_every", "2",
                       "--train.batch_size", "256", "--model.dim", "4", "--model.num_layers", "2"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"skipped 2 bad line\(s\) of 3000: wrong number of fields: 2 \(first lines \S*bad\.txt:10, "
                     r"\S*bad\.txt:500\)", err)
    metrics = json.loads((tmp_path / "r2" / "metrics.json").read_text())
    assert metrics["data_lines"]["skipped"]["total"] == 2 and metrics["data_lines"]["encoded"] == 2998


def test_another_optimiser_by_flag_starts_from_its_own_defaults(capsys):
    from adaref import train
    parser, hints = train.build_parser()
    run = train.resolve_run(parser.parse_args(["--sample", "criteo", "--train.optimizer.name", "sgd"]), hints)
    assert run.train.optimizer.name == "sgd" and run.train.optimizer.options == {}   # not Adam's lr etc.
    run = train.resolve_run(parser.parse_args(["--sample", "criteo", "--train.optimizer.name", "sgd",
                                               "--train.optimizer.options", '{"lr": 0.5}']), hints)
    assert run.train.optimizer.options == {"lr": 0.5}
    assert train.main(["--sample", "criteo", "--quiet", "--train.optimizer.name", "gftrl"]) == 2
    assert ("configuration error: train.optimizer ('gftrl' on the weights parameters): GroupFTRL: parameter"
            in capsys.readouterr().err)


def test_a_nested_config_error_names_its_path_and_value(capsys):
    from adaref import train
    assert train.main(["--sample", "criteo", "--quiet", "--model.controller.gate.jitter", "2"]) == 2
    assert "configuration error: model.controller.gate: GateConfig: jitter must be in [0, 1), got 2.0" \
        in capsys.readouterr().err
    assert train.main(["--sample", "criteo", "--quiet", "--train.patience", "-1"]) == 2
    assert "train: TrainConfig: patience must be >= 0, got -1" in capsys.readouterr().err


def test_predictions_that_turn_non_finite_at_evaluation_are_a_divergence(criteo, tmp_path):
    trainer = Trainer(tiny_run(max_steps=3, eval_every=3), criteo, tmp_path, quiet=True)
    trainer._w_step(trainer._next_batch())
    trainer.model.estimators[0].linear.bias.data[...] = np.nan
    with pytest.raises(TrainingDiverged, match=r"step 1: evaluating on the val split: \d+ of \d+ "
                                               r"hard-exit predictions are NaN or infinite"):
        trainer._evaluate_and_checkpoint()


def test_the_evaluated_half_of_a_small_validation_split_is_checked(tmp_path):
    """With Algorithm 2 half of the validation split trains alpha; the half kept for
    evaluation must hold both classes, and the alpha half must not be empty."""
    lines = open(adaref.data.samples.sample_path("criteo")).read().splitlines()
    pos = [ln for ln in lines if ln[0] == "1"][:6]
    neg = [ln for ln in lines if ln[0] == "0"][:16]
    src = tmp_path / "tiny.txt"
    src.write_text("\n".join(neg[:8] + pos[:3] + neg[8:] + pos[3:]) + "\n")
    ds = load("criteo", input=str(src), preset="paper", seed=0, out=str(tmp_path / "d"))
    for seed in range(40):                       # some alpha split leaves one class to evaluate
        run = tiny_run(bilevel="on").replace(seed=seed)
        try:
            Trainer(run, ds, tmp_path / f"r{seed}", quiet=True)
        except TrainingDataError as e:
            assert re.search(r"the val split has \d+ positives among \d+ rows|too small to give the "
                             r"alpha step a half", str(e))
            break
    else:
        pytest.fail("no seed produced a one-class evaluation half")


def test_on_bad_line_with_null_overrides_in_a_config(tmp_path, capsys):
    from adaref import train
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"data": {"overrides": None}}))
    parser, hints = train.build_parser()
    run = train.resolve_run(parser.parse_args(["--sample", "criteo", "--config", str(cfg),
                                               "--on-bad-line", "skip"]), hints)
    assert run.data.overrides == {"read.on_bad_line": "skip"}


def test_rows_are_read_chunk_by_chunk_and_the_data_pages_released(criteo, tmp_path, monkeypatch):
    """The trainer copies a batch's rows from the memory maps in ascending order, a
    chunk at a time, and unmaps the data's file pages after each chunk: the copies are
    those of plain indexing, and on Linux the pages read do not stay resident."""
    import mmap
    import os

    from adaref.training import trainer as trainer_module

    trainer = Trainer(tiny_run(), criteo, tmp_path, quiet=True)
    rows = np.random.default_rng(0).permutation(len(criteo.labels))[:1000]
    calls = []
    original = type(criteo).release_pages
    monkeypatch.setattr(type(criteo), "release_pages", lambda self: (calls.append(1), original(self)))
    monkeypatch.setattr(trainer_module, "READ_CHUNK", 300)
    ids, labels = trainer._read(rows)
    np.testing.assert_array_equal(ids, np.asarray(criteo.ids)[rows])
    np.testing.assert_array_equal(labels, np.asarray(criteo.labels)[rows])
    assert len(calls) == 4                                   # 1000 rows in chunks of 300
    assert trainer._read(rows, ids=False)[0] is None
    if not (os.path.isfile("/proc/self/status") and hasattr(mmap, "MADV_DONTNEED")):
        return

    def file_pages_kb():
        status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
        return int(status["RssFile"].split()[0]) if "RssFile" in status else None

    before = file_pages_kb()
    if before is None:
        return
    np.asarray(criteo.ids).sum()                             # maps every page of the ids
    mapped = file_pages_kb()
    criteo.release_pages()
    assert file_pages_kb() <= mapped - 0.8 * criteo.ids.nbytes / 1024
