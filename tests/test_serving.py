"""Scoring new data: the encoder reproduces the prepared ids, a loaded run reproduces its
own metrics, and inconsistent run directories are refused by name."""
import contextlib
import io
import json
import shutil

import numpy as np
import pytest

import adaref
from adaref.data import load
from adaref.data.encode import Encoder
from adaref.data.readers import DataFormatError
from adaref.data.samples import sample_path, sample_paths
from adaref.metrics import auc
from adaref.serving import RunError
from adaref.train import main


@pytest.mark.parametrize("dataset", ["criteo", "avazu", "ipinyou"])
@pytest.mark.parametrize("preset", ["paper", "upstream"])
def test_encoding_the_training_file_again_gives_the_prepared_ids(tmp_path, dataset, preset):
    ds = load(dataset, sample=True, preset=preset, out=str(tmp_path / "d"))
    ids, labels = Encoder.from_prepared(ds.path).encode(sample_paths(dataset))
    np.testing.assert_array_equal(ids, np.asarray(ds.ids))
    np.testing.assert_array_equal(labels, np.asarray(ds.labels))


def test_unlabelled_lines_are_detected_and_get_nan_labels(tmp_path):
    ds = load("criteo", sample=True, out=str(tmp_path / "d"))
    lines = open(sample_path("criteo"), encoding="utf-8").read().splitlines()[:50]
    (tmp_path / "test.txt").write_text("".join(l.split("\t", 1)[1] + "\n" for l in lines))
    ids, labels = Encoder.from_prepared(ds.path).encode(tmp_path / "test.txt")
    np.testing.assert_array_equal(ids, np.asarray(ds.ids[:50]))
    assert np.isnan(labels).all()
    with pytest.raises(DataFormatError, match="test.txt:1"):       # told it is labelled: refused
        Encoder.from_prepared(ds.path).encode(tmp_path / "test.txt", labelled=True)


def test_unseen_levels_and_missing_values_get_the_oov_and_missing_ids(tmp_path):
    ds = load("criteo", sample=True, out=str(tmp_path / "d"))
    enc = Encoder.from_prepared(ds.path)
    line = open(sample_path("criteo"), encoding="utf-8").readline().rstrip("\n").split("\t")
    line[14] = "deadbeef"          # C1: a level the training split never saw
    line[1] = ""                   # I1 missing: its own id under the paper preset
    (tmp_path / "x.txt").write_text("\t".join(line) + "\n")
    ids, _ = enc.encode(tmp_path / "x.txt")
    c1, i1 = enc.field_names.index("C1"), enc.field_names.index("I1")
    assert ids[0, c1] == 0 and ids[0, i1] == 1
    np.testing.assert_array_equal(np.delete(ids[0], [c1, i1]), np.delete(np.asarray(ds.ids[0]), [c1, i1]))


def test_a_damaged_vocabulary_is_refused_by_name(tmp_path):
    ds = load("criteo", sample=True, out=str(tmp_path / "d"))
    shutil.copytree(ds.path, tmp_path / "copy")
    vocab = json.loads((tmp_path / "copy" / "vocab.json").read_text())
    vocab["fields"][20]["values"] = vocab["fields"][20]["values"][::-1]
    (tmp_path / "copy" / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(DataFormatError, match=r"vocab.json: field C\d+: values are not in ascending"):
        Encoder.from_prepared(tmp_path / "copy")


def _train(out, *flags):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["--sample", "criteo", "--out", str(out), "--quiet", *flags]) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    _train(root / "a", "--train.max_steps", "60", "--train.eval_every", "20")
    _train(root / "b", "--train.max_steps", "20", "--train.eval_every", "20")
    return root


def test_a_loaded_run_reproduces_its_test_metrics_from_raw_lines(runs):
    run = adaref.load_run(runs / "a")
    metrics = json.loads((runs / "a" / "metrics.json").read_text())
    assert run.weights == "best.npz" and run.step == metrics["best_step"]
    ids, labels = run.encode(sample_path("criteo"))
    test = load("criteo", sample=True).splits["test"]
    assert auc(labels[test], run.predict(ids[test])) == metrics["test"]["auc"]
    assert auc(labels[test], run.predict(ids[test], form="soft")) == metrics["test"]["auc_soft"]


def _copy(runs, tmp_path, name="a"):
    return shutil.copytree(runs / name, tmp_path / name)


def test_missing_best_weights_are_refused_when_the_metrics_come_from_them(runs, tmp_path):
    run = _copy(runs, tmp_path)
    (run / "best.npz").unlink()
    with pytest.raises(RunError, match=r"best.npz: missing, but .*metrics.json reports .* step"):
        adaref.load_run(run)


def test_best_weights_of_another_run_are_refused(runs, tmp_path):
    run = _copy(runs, tmp_path)
    shutil.copy(runs / "b" / "best.npz", run / "best.npz")
    with pytest.raises(RunError, match=r"best.npz: holds the weights of step 20, but .* best step"):
        adaref.load_run(run)


def test_a_config_that_does_not_match_the_weights_is_refused(runs, tmp_path):
    run = _copy(runs, tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["model"]["dim"] *= 2
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunError, match=r"best.npz: weights of another model .* model.dim"):
        adaref.load_run(run)


def test_a_vocabulary_of_other_data_is_refused(runs, tmp_path):
    run = _copy(runs, tmp_path)
    other = load("avazu", sample=True, out=str(tmp_path / "avazu"))
    shutil.copy(f"{other.path}/vocab.json", run / "data" / "vocab.json")
    with pytest.raises(RunError, match="vocab.json"):
        adaref.load_run(run)


def test_missing_run_and_bad_ids_are_clear_errors(runs, tmp_path):
    with pytest.raises(RunError, match="no such run directory"):
        adaref.load_run(tmp_path / "nothing")
    run = adaref.load_run(runs / "a")
    with pytest.raises(ValueError, match=r"ids must have shape \(B, 39\)"):
        run.predict(np.zeros((2, 3), dtype=np.int32))
    ids = np.zeros((2, 39), dtype=np.int64)
    ids[1, 5] = 10 ** 6
    with pytest.raises(ValueError, match=r"ids\[1, 5\] = 1000000 is outside field 5"):
        run.predict(ids)
