"""The competing models of §4.1.3 train through the same trainer, CLI and run artefacts."""
import contextlib
import io
import json

import numpy as np
import pytest

import adaref
from adaref.data import load
from adaref.data.samples import sample_path
from adaref.io import load_npz
from adaref.metrics import auc
from adaref.train import main


def _main(*flags):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(flags))
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("name", ["lr", "fm", "dcn"])
def test_a_baseline_trains_and_its_run_can_be_loaded_and_scored(tmp_path, name):
    code, out, _ = _main("--sample", "criteo", "--model", name, "--out", str(tmp_path / "r"),
                         "--train.max_steps", "40")
    assert code == 0, out
    assert f"{name}, test split" in out and "exit depth" not in out
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["baseline"]["name"] == name and config["train"]["bilevel"] == "off"
    optimiser = "ftrl" if name in ("lr", "fm") else "adam"                 # §4.1.4
    assert config["train"]["optimizer"]["name"] == optimiser
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["test"]["auc_soft"] is None and metrics["test"]["depth_fractions"] == []
    assert (tmp_path / "r" / "curves.png").exists() and not (tmp_path / "r" / "k.png").exists()
    run = adaref.load_run(tmp_path / "r")
    ids, labels = run.encode(sample_path("criteo"))
    test = load("criteo", sample=True).splits["test"]
    assert auc(labels[test], run.predict(ids[test])) == metrics["test"]["auc"]


def test_a_baseline_with_algorithm_2_is_refused_by_name(tmp_path):
    code, _, err = _main("--sample", "criteo", "--model", "fm", "--bilevel", "on", "--out", str(tmp_path / "r"))
    assert code == 2 and "no gates" in err and "bilevel off" in err


def test_an_unknown_model_name_lists_the_known_ones(tmp_path):
    code, _, err = _main("--sample", "criteo", "--model", "gbdt", "--out", str(tmp_path / "r"))
    assert code == 2 and "unknown model 'gbdt'" in err and "dcn_v2" in err


def test_baseline_options_reach_the_model_and_unknown_keys_are_refused(tmp_path):
    code, out, _ = _main("--sample", "criteo", "--model", "dnn", "--baseline.options", '{"hidden": [16]}',
                         "--out", str(tmp_path / "a"), "--train.max_steps", "20")
    assert code == 0
    run = adaref.load_run(tmp_path / "a")
    assert run.model.config.hidden == (16,)
    code, _, err = _main("--sample", "criteo", "--model", "dnn", "--baseline.options", '{"hiden": [16]}',
                         "--out", str(tmp_path / "b"))
    assert code == 2 and "unknown key 'hiden'" in err


def test_a_baseline_run_resumes_to_the_same_weights(tmp_path):
    flags = ["--sample", "criteo", "--model", "deepfm", "--train.max_steps", "30", "--quiet"]
    assert _main(*flags, "--out", str(tmp_path / "whole"))[0] == 0
    from adaref.training.config import RunConfig
    from adaref.training.trainer import Trainer, TrainingInterrupted

    run = RunConfig.from_dict(json.loads((tmp_path / "whole" / "config.json").read_text()))
    ds = load("criteo", sample=True, seed=run.seed)
    with pytest.raises(TrainingInterrupted):
        Trainer(run, ds, tmp_path / "cut", quiet=True).fit(stop_after=13)
    resumed = Trainer(run, ds, tmp_path / "cut", quiet=True)
    resumed.restore(tmp_path / "cut" / "last.npz")
    resumed.fit()
    whole, _ = load_npz(tmp_path / "whole" / "last.npz")             # the last weights of each
    for key, value in resumed.model.state_dict().items():
        np.testing.assert_array_equal(value, whole[f"model.{key}"], err_msg=key)
