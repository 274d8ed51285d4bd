"""python -m adaref.experiments: every command with --quick on the Criteo sample writes its
files, with the paper's numbers beside adaref's; done runs are reused, interrupted ones
resumed; the grid chooses by validation AUC."""
import contextlib
import csv
import io
import json

import numpy as np
import pytest

from adaref.experiments import paper
from adaref.experiments.cli import main
from adaref.experiments.models import BASELINES
from adaref.metrics import auc, log_loss


def _main(*flags):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(flags))
    return code, out.getvalue(), err.getvalue()


def _quick(out, command, *more):
    code, stdout, stderr = _main(command, "--sample", "criteo", "--seeds", "0", "--quick", "--out", str(out), *more)
    assert code == 0, stdout + stderr
    return json.loads((out / f"{command}.json").read_text()), stdout


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    """One output directory shared by the commands, as a user would: Table 1 first."""
    folder = tmp_path_factory.mktemp("experiments")
    _quick(folder, "table1")
    return folder


def test_table1_has_every_model_and_the_papers_numbers_beside(out):
    result = json.loads((out / "table1.json").read_text())
    assert [r["name"] for r in result["rows"]] == list(BASELINES) + ["adaensemble"]
    text = (out / "table1.md").read_text()
    assert "| Model | AUC | log-loss | FLOPs/example | paper AUC (criteo) | paper log-loss | setting |" in text
    assert "| AdaEnsemble |" in text and "| 0.8132 | 0.4394 |" in text and "| 0.7924 | 0.4577 |" in text
    assert paper.SCALE_NOTE in text
    with open(out / "table1.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 14 and {r["status"] for r in rows} == {"trained"}
    assert all(0 < float(r["test_auc"]) < 1 for r in rows)
    # the chosen setting of every model is recorded (quick: the default one alone)
    assert result["grid"]["fm"]["chosen"] == {"alpha": 0.05} and result["grid"]["dnn"]["chosen"] == {"lr": 0.001}
    assert result["grid"]["dnn"]["mode"] == "default" and result["trained"] == 14


def test_a_runs_saved_predictions_score_as_its_metrics(out):
    row = json.loads((out / "table1.json").read_text())["runs"][-1]
    folder = out / row["dir"]
    metrics = json.loads((folder / "metrics.json").read_text())
    from adaref.experiments.data import DataSpec, load_data

    ds = load_data(DataSpec("sample", "criteo"), 0, out)
    y = np.asarray(ds.labels[ds.splits["test"]], dtype=np.float64)
    assert auc(y, np.load(folder / "test_predictions.npy")) == pytest.approx(metrics["test"]["auc"], abs=1e-12)


def test_table2_rows_and_the_ensemble_is_the_mean_of_the_single_experts(out):
    result, _ = _quick(out, "table2")
    labels = [r["label"] for r in result["rows"]]
    assert labels == ["SparseMoE(k=1)", "SparseMoE(k=2)", "SparseMoE(k=3)", "SparseMoE(k=4)", "DenseMoE",
                      "Ensemble", "Dense Expert Only", "Cross Expert Only", "Polynomial Expert Only",
                      "CNN Expert Only", "MHSA Expert Only"]
    assert (out / "table2.png").stat().st_size > 0 and "| 12.15M |" in (out / "table2.md").read_text()
    runs = {r["label"]: r for r in result["runs"]}
    assert runs["SparseMoE(k=1)"]["k"] == 1 and runs["DenseMoE"]["k"] == 5      # fixed k
    singles = [runs[f"{e} Expert Only"] for e in ("Dense", "Cross", "Polynomial", "CNN", "MHSA")]
    probs = np.mean([np.load(out / r["dir"] / "test_predictions.npy") for r in singles], axis=0)
    from adaref.experiments.data import DataSpec, load_data

    ds = load_data(DataSpec("sample", "criteo"), 0, out)
    y = np.asarray(ds.labels[ds.splits["test"]], dtype=np.float64)
    ensemble = result["rows"][labels.index("Ensemble")]
    assert ensemble["auc"] == pytest.approx(auc(y, probs)) and ensemble["log_loss"] == pytest.approx(log_loss(y, probs))
    assert ensemble["flops"] == pytest.approx(sum(r["mean_flops"] for r in singles))


def test_table3_table4_and_figure4_reuse_table1s_adaensemble(out):
    ada = next(r for r in json.loads((out / "table1.json").read_text())["runs"] if r["name"] == "adaensemble")
    t3, _ = _quick(out, "table3")
    assert t3["trained"] == 1 and t3["reused"] == 1                      # only w/o controller is new
    assert [r["label"] for r in t3["rows"]] == ["w/ controller", "w/o controller"]
    assert "(blank)" in (out / "table3.md").read_text()                  # the paper's missing AUC
    t4, _ = _quick(out, "table4")
    assert t4["trained"] == 0 and t4["per_seed"]["0"] == ada["depth_fractions"]
    assert "| paper (Criteo, L = 4) | 6.53% | 19.36% | 66.43% | 7.68% |" in (out / "table4.md").read_text()
    f4, _ = _quick(out, "figure4")
    assert f4["trained"] == 0 and (out / "figure4_s0.png").stat().st_size > 0
    seed0 = f4["per_seed"][0]
    assert sum(t["examples"] for t in seed0["top_routes"]) <= seed0["examples"] == 2037
    assert seed0["reached"][0] == 1.0                                   # every example reaches layer 1


def test_figure5_quick(out):
    result, _ = _quick(out, "figure5")
    assert [(r["layers"], r["k"]) for r in result["depth"]] == [(1, 3), (2, 3)]
    assert [(r["layers"], r["k"]) for r in result["k"]] == [(2, 1), (2, 2)]
    assert (out / "figure5.png").stat().st_size > 0 and "figure5.png" in (out / "figure5.md").read_text()


def test_a_second_invocation_trains_nothing(out):
    _quick(out, "table2")
    again, stdout = _quick(out, "table2")
    assert again["trained"] == 0 and again["reused"] == 11 and "trained in" not in stdout


def test_an_interrupted_run_is_resumed_and_a_foreign_config_refused(tmp_path):
    from adaref.experiments.data import DataSpec, base_run
    from adaref.experiments.models import baseline
    from adaref.experiments.runner import Runner, RunMismatch
    from adaref.training.trainer import Trainer, TrainingInterrupted

    spec = DataSpec("sample", "criteo")
    run = baseline(base_run(spec, tmp_path), "lr").run.replace(
        train=baseline(base_run(spec, tmp_path), "lr").run.train.replace(max_steps=8, eval_every=4))
    runner = Runner(tmp_path, spec, log=None)
    folder = runner.run_dir(run, "lr")
    with pytest.raises(TrainingInterrupted):
        Trainer(run, runner.dataset(0), folder, quiet=True).fit(stop_after=5)
    record = runner.run(run, "lr", "LR")
    assert record.status == "resumed" and record.metrics["steps"] == 8 and runner.trained == 1
    whole = Runner(tmp_path / "b", spec, log=None).run(run, "lr", "LR")
    assert whole.metrics["test"] == record.metrics["test"]              # as if never interrupted
    config = json.loads((folder / "config.json").read_text())
    config["train"]["max_steps"] = 9
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunMismatch, match="config.json differs"):
        Runner(tmp_path, spec, log=None).run(run, "lr", "LR")


class FakeRunner:
    """Validation AUC rises as lr falls; test AUC the other way round."""

    def __init__(self):
        self.calls = []

    def run(self, run, name, label, setting=None):
        from adaref.experiments.runner import RunRecord

        lr = run.train.optimizer.options["lr"]
        self.calls.append((name, run.seed, lr))
        metrics = {"best_val": {"val_auc": 0.7 - lr}, "test": {"auc": 0.7 + lr, "log_loss": 0.5, "mean_flops": 1.0}}
        return RunRecord(name, label, run.seed, dict(setting or {}), f"{name}/s{run.seed}-{lr}", "trained", 0.0,
                         metrics)


def test_the_grid_chooses_by_validation_auc_at_the_first_seed_then_runs_every_seed():
    from adaref.experiments.grid import Tuner
    from adaref.experiments.models import ada_variant, adaensemble, baseline
    from adaref.training.config import sample_defaults

    fake = FakeRunner()
    tuner = Tuner(fake, [3, 1, 2])
    records = tuner.runs(baseline(sample_defaults(), "dnn"))
    assert tuner.results["dnn"].chosen == {"lr": 3e-4}                   # best validation, worse test
    assert fake.calls[:2] == [("dnn", 3, 1e-3), ("dnn", 3, 3e-4)]       # searched at the first seed only
    assert [(r.seed, r.setting) for r in records] == [(3, {"lr": 3e-4}), (1, {"lr": 3e-4}), (2, {"lr": 3e-4})]
    base = sample_defaults()
    tuner.runs(ada_variant(base, "single-pin", "PIN", k=1, controller=False, experts=("pin",)), adaensemble(base))
    assert [c for c in fake.calls if c[0] == "adaensemble"] == [("adaensemble", 3, 1e-3), ("adaensemble", 3, 3e-4)]
    assert {c[2] for c in fake.calls if c[0] == "single-pin"} == {3e-4}  # the variant takes AdaEnsemble's choice
    grid = tuner.to_dict()["dnn"]
    assert grid["trials"][1] == {"setting": {"lr": 3e-4}, "val_auc": pytest.approx(0.7 - 3e-4), "dir": "dnn/s3-0.0003"}


def test_bad_options_are_refused_by_name(tmp_path):
    code, _, err = _main("table1", "--sample", "criteo", "--quick", "--out", str(tmp_path), "--set", "model.num_layer=3")
    assert code == 2 and "model.num_layers" in err
    with pytest.raises(SystemExit):
        _main("table1", "--sample", "criteo", "--models", "lr,gbdt")
    help_text = io.StringIO()
    with contextlib.redirect_stdout(help_text), pytest.raises(SystemExit):
        main(["--help"])
    assert all(c in help_text.getvalue() for c in ("table1", "table2", "table3", "table4", "figure4", "figure5"))


def test_planted_data_and_a_raw_file_are_sources_too(tmp_path):
    code, stdout, err = _main("table1", "--planted", "20000", "--seeds", "0", "--quick", "--models", "lr",
                              "--out", str(tmp_path / "p"))
    assert code == 0, err
    result = json.loads((tmp_path / "p" / "table1.json").read_text())
    assert result["data"]["kind"] == "planted" and 0.5 < result["bayes_optimal"]["auc"] < 1
    assert "Bayes-optimal on this test split" in (tmp_path / "p" / "table1.md").read_text()
    from adaref.data.samples import sample_path

    code, _, err = _main("table1", "--data", str(sample_path("criteo")), "--dataset", "criteo", "--seeds", "0",
                         "--quick", "--models", "lr", "--out", str(tmp_path / "f"))
    assert code == 0, err
    run = json.loads((tmp_path / "f" / "table1.json").read_text())["runs"][0]
    config = json.loads((tmp_path / "f" / run["dir"] / "config.json").read_text())
    assert config["data"]["sample"] is False and config["train"]["batch_size"] == 4096   # the paper preset


def test_a_run_held_by_another_process_is_refused_and_an_unstarted_one_started_again(tmp_path):
    from adaref.experiments.data import DataSpec, base_run
    from adaref.experiments.models import baseline
    from adaref.experiments.runner import Runner
    from adaref.training.rundir import RunDirectoryBusy, claim

    spec = DataSpec("sample", "criteo")
    run = baseline(base_run(spec, tmp_path), "lr").run
    run = run.replace(train=run.train.replace(max_steps=4, eval_every=4))
    runner = Runner(tmp_path, spec, log=None)
    folder = runner.run_dir(run, "lr")
    held = claim(folder)
    try:
        with pytest.raises(RunDirectoryBusy):
            runner.run(run, "lr", "LR")
    finally:
        held.release()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(run.to_dict()))      # stopped before any checkpoint
    (folder / "history.csv").write_text("stale\n")
    record = runner.run(run, "lr", "LR")
    assert record.status == "trained" and record.metrics["steps"] == 4
    assert "stale" not in (folder / "history.csv").read_text()
