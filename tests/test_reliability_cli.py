"""Reliability of the command lines (issue 15, classes 7, 8, 11): every failure maps to
its documented exit status with a one-line message naming the file, flag or key."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from adaref import train
from adaref.io import load_npz, save_npz
from adaref.model import AdaEnsemble, model_config
from adaref.nn import StateDictError

FAST = ["--sample", "criteo", "--quiet", "--train.max_steps", "6", "--train.eval_every", "3", "--model.dim", "4"]


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


# -- class 8: configuration -------------------------------------------------------------
def test_a_config_file_that_is_not_utf8_is_a_configuration_error(tmp_path, capsys):
    cfg = tmp_path / "run.json"
    cfg.write_bytes(b'{"seed": 1, "train": {"batch_size": "\xff\xfe"}}')
    assert train.main(["--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    _one_line_error(capsys, f"--config {cfg}: not UTF-8 text (byte 0xff at offset 37)")
    assert not (tmp_path / "r").exists()


def test_a_config_file_nested_beyond_reason_is_a_configuration_error(tmp_path, capsys):
    cfg = tmp_path / "deep.json"
    for depth in (40, 100_000):
        cfg.write_text('{"train": {"optimizer": {"options": ' + "[" * depth + "]" * depth + "}}}")
        assert train.main(["--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
        _one_line_error(capsys, f"--config {cfg}: nested deeper than 16 levels")


@pytest.mark.parametrize("flag, value, needle", [
    ("--model.dim", "1000000", "model.dim = 1000000, model.num_layers = 2 with 39 fields: at least"),
    ("--model.num_layers", "100000", "model.dim = 8, model.num_layers = 100000 with 39 fields: at least"),
    ("--model.gate.tau_init", "1e-300", "GateConfig: tau_init must be in [0.0001, 10000], got 1e-300"),
    ("--model.controller.gate.tau_init", "1e300", "tau_init must be in [0.0001, 10000], got 1e+300"),
    ("--train.xi", "1e308", "TrainConfig: xi must be in [0, 1], got 1e+308"),
])
def test_absurd_option_values_are_refused_up_front_with_exit_2(tmp_path, capsys, flag, value, needle):
    start = time.perf_counter()
    assert train.main(["--sample", "criteo", "--out", str(tmp_path / "r"), flag, value]) == 2
    err = _one_line_error(capsys, "configuration error", needle)
    if "model.dim" in needle or "num_layers" in needle:
        assert "GB for training" in err and "GB of memory available" in err
    assert time.perf_counter() - start < 10 and not (tmp_path / "r").exists()


# -- class 7: file-system faults and Ctrl-C ----------------------------------------------------
def test_a_write_failure_during_training_is_exit_1_naming_the_path_with_the_checkpoint_intact(
        tmp_path, capsys, monkeypatch):
    from adaref.training import trainer

    out = tmp_path / "run"
    real = trainer.Trainer._write_history
    calls = []

    def disk_full(self):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", str(self.dir / ".history.csv.tmp"))
        real(self)

    monkeypatch.setattr(trainer.Trainer, "_write_history", disk_full)
    assert train.main(FAST + ["--out", str(out)]) == 1
    _one_line_error(capsys, "adaref.train: file error:", ".history.csv.tmp: No space left on device")
    arrays, meta = load_npz(out / "last.npz")                     # the previous checkpoint, intact
    assert meta["loop"]["step"] == 3 and not (out / ".adaref.lock").exists()
    monkeypatch.undo()
    assert train.main(["--resume", str(out), "--quiet"]) == 0


def test_ctrl_c_while_the_data_is_prepared_exits_130_without_a_traceback(tmp_path, capsys, monkeypatch):
    import adaref.data

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(adaref.data, "load", interrupted)
    assert train.main(FAST + ["--out", str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err
    assert "interrupted; nothing was trained yet" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()                         # the claim is undone


def test_ctrl_c_while_plotting_exits_130_and_the_run_stays_resumable(tmp_path, capsys, monkeypatch):
    import adaref.training.plots

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(adaref.training.plots, "write_plots", interrupted)
    out = tmp_path / "run"
    assert train.main(FAST + ["--out", str(out)]) == 130
    assert f"continue with --resume {out}" in capsys.readouterr().err
    monkeypatch.undo()
    assert train.main(["--resume", str(out), "--quiet"]) == 0


def test_a_real_sigint_during_data_preparation_exits_130(tmp_path):
    big = tmp_path / "big.txt"
    line = open(os.path.join(os.path.dirname(train.__file__), "..", "data_samples", "criteo_sample.txt")).readline()
    big.write_text(line * 400_000)
    proc = subprocess.Popen([sys.executable, "-m", "adaref.train", "--data", str(big), "--dataset", "criteo",
                             "--out", str(tmp_path / "run")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, text=True)
    time.sleep(3)
    proc.send_signal(2)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err


# -- class 11: the public API raises the package's own errors ---------------------------------------
@pytest.mark.parametrize("change, message", [
    (lambda m: m["model"].pop("config"), "model metadata lacks config"),
    (lambda m: m["model"].__setitem__("config", "x"), "model config is not valid"),
    (lambda m: m["model"].__setitem__("vocab_sizes", "abc"), "vocab_sizes is not a list of positive integers"),
    (lambda m: m["model"].__setitem__("vocab_sizes", [5.0, 7, 3]), "vocab_sizes is not a list of positive"),
    (lambda m: m["model"].__setitem__("dtype", 5), "dtype is 5, not float32 or float64"),
    (lambda m: m["model"]["config"].__setitem__("dim", "4"), "key 'dim' expects int"),
    (lambda m: m["model"].__setitem__("vocab_sizes", [10**12, 7, 3]), "at least"),
])
def test_from_checkpoint_with_bad_metadata_raises_state_dict_error(tmp_path, change, message):
    model = AdaEnsemble(model_config("paper", dim=4, num_layers=2), [5, 7, 3], rng=np.random.default_rng(0))
    model.save(tmp_path / "m.npz")
    arrays, meta = load_npz(tmp_path / "m.npz")
    change(meta)
    save_npz(tmp_path / "bad.npz", arrays, meta)
    with pytest.raises(StateDictError, match=r"bad\.npz: .*" + message.replace("(", r"\(").replace("[", r"\[")):
        AdaEnsemble.from_checkpoint(tmp_path / "bad.npz")


def test_npz_members_with_huge_headers_or_sizes_are_refused_before_reading(tmp_path):
    import zipfile

    from adaref.io import NpzError

    p = tmp_path / "forged.npz"
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000,), }"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("w.npy", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header)
    with pytest.raises(NpzError, match=r"member 'w\.npy' declares shape \(100000000000,\) float64 "
                                       r"\(800\.00 GB\) but holds 0 bytes"):
        load_npz(p)
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("w.npy", b"\x93NUMPY\x02\x00" + (1 << 30).to_bytes(4, "little") + b" " * 100)
    with pytest.raises(NpzError, match=r"member 'w\.npy' has a header of 1,073,741,824 bytes \(limit 10,000\)"):
        load_npz(p)
    model = AdaEnsemble(model_config("paper", dim=4, num_layers=2), [5, 7, 3], rng=np.random.default_rng(0))
    arrays = {**model.state_dict(), "extra": np.zeros(10)}
    save_npz(tmp_path / "extra.npz", arrays, {"model": model.checkpoint_meta()})
    with pytest.raises(NpzError, match=r"unexpected array 'extra' \(80 bytes\)"):
        model.load(tmp_path / "extra.npz")
