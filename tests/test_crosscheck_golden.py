"""``golden`` and ``compare``, library and command line: reproducible files, the shipped
golden sets, every verdict and error path, exit codes 0/1/2."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from adaref.crosscheck.__main__ import main
from adaref.crosscheck.compare import compare, load_golden
from adaref.io import load_npz

SHIPPED = Path(__file__).parent / "golden"
SMALL = ["--dim", "4", "--fields", "6", "--batch", "16", "--num-layers", "4"]


def golden(tmp_path, *extra, name="g"):
    out = tmp_path / name
    assert main(["golden", "--out", str(out), *SMALL, *extra]) == 0
    return out


def dump(directory) -> dict:
    _, tensors = load_golden(directory)
    return dict(tensors)


def save(tmp_path, arrays, name="theirs.npz"):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


# --- golden -------------------------------------------------------------------------
def test_same_arguments_same_bytes(tmp_path):
    a, b = golden(tmp_path, name="a"), golden(tmp_path, name="b")
    for f in ("weights.npz", "inputs.npz", "outputs.npz", "grads.npz", "manifest.json"):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    c = golden(tmp_path, "--seed", "1", name="c")
    assert (a / "weights.npz").read_bytes() != (c / "weights.npz").read_bytes()


@pytest.mark.parametrize("preset", ["paper", "upstream"])
def test_shipped_golden_sets_do_not_drift(tmp_path, preset):
    """Regenerate tests/golden/PRESET with the arguments it was made with: weights and
    inputs byte-identical (pure RNG), integer tensors equal, floats within 1e-11 of the
    shipped values (a change of the model's arithmetic moves them by far more; the
    slack only allows another machine's BLAS rounding)."""
    shipped = SHIPPED / preset
    new = golden(tmp_path, "--preset", preset)
    for f in ("weights.npz", "inputs.npz"):
        assert (shipped / f).read_bytes() == (new / f).read_bytes(), f
    m_old = json.loads((shipped / "manifest.json").read_text())
    m_new = json.loads((new / "manifest.json").read_text())
    for m in (m_old, m_new):
        m.pop("versions")
    assert m_old == m_new
    report = compare(shipped, dump(new), rtol=1e-11, atol=1e-13)
    assert report.agree, report.format(verbose=False)
    assert len(report.rows) == len(m_old["outputs"]) + len(m_old["gradients"])


def test_manifest_records_what_a_port_needs(tmp_path):
    m = json.loads((golden(tmp_path, "--preset", "upstream") / "manifest.json").read_text())
    assert m["preset"] == "upstream" and m["dtype"] == "float64" and m["k"] == 3
    assert m["lambdas"] == {"lambda1": 1.0, "lambda2": 1.0, "z": 1.0}
    assert m["gradient_form"] == "hard" and m["forms"] == ["soft", "hard"]
    assert m["tolerances"] == {"rtol": 1e-9, "atol": 1e-12}
    assert len(m["vocab_sizes"]) == 6 and m["config"]["gate"]["combine"] == "unweighted"
    w, _ = load_npz(Path(m["spec"] and tmp_path / "g") / "weights.npz")
    assert [p["name"] for p in m["spec"]["parameters"]] == list(w)
    inputs, _ = load_npz(tmp_path / "g" / "inputs.npz")
    assert inputs["ids"].dtype == np.int64 and set(np.unique(inputs["labels"])) == {0.0, 1.0}


def test_weights_are_off_their_initial_values(tmp_path):
    w, _ = load_npz(golden(tmp_path) / "weights.npz")
    for name, a in w.items():
        if name.endswith(("bias", ".b", "bc", "bo", "bq", "bk", "bv", "beta")):
            assert np.all(a != 0), name                    # a bias on the wrong side shows
        if name.endswith(("gain", "gamma")):
            assert np.all(a != 1), name


def test_float32_golden(tmp_path):
    out = golden(tmp_path, "--dtype", "float32")
    manifest, tensors = load_golden(out)
    assert manifest["tolerances"] == {"rtol": 2e-3, "atol": 1e-5}
    assert all(t.dtype == np.float32 for n, t in tensors.items() if t.dtype.kind == "f")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The Criteo sample prepared under the paper preset: (directory, data set)."""
    from adaref.data import load

    out = tmp_path_factory.mktemp("prepared") / "data"
    return out, load("criteo", sample=True, preset="paper", out=str(out))


def test_golden_from_prepared_data(tmp_path, prepared):
    directory, data = prepared
    out = tmp_path / "g"
    assert main(["golden", "--out", str(out), "--dim", "4", "--num-layers", "2", "--batch", "8",
                 "--data", str(directory)]) == 0
    inputs, _ = load_npz(out / "inputs.npz")
    ids, labels = data.subset("test")
    assert np.array_equal(inputs["ids"], ids[:8]) and np.array_equal(inputs["labels"], labels[:8])
    assert json.loads((out / "manifest.json").read_text())["vocab_sizes"] == data.vocab_sizes
    assert main(["golden", "--out", str(tmp_path / "h"), "--batch", "100000",
                 "--data", str(directory)]) == 2
    assert main(["golden", "--out", str(tmp_path / "h"), "--preset", "upstream",
                 "--data", str(directory)]) == 2        # paper-prepared data, upstream model


@pytest.mark.parametrize("argv, message", [
    (["--k", "6"], "k = 6 must be in [1, 5]"),
    (["--preset", "paper", "--config", "x.json"], "not both"),
    (["--config", "/nonexistent/config.json"], "No such file"),
    (["--preset", "upstream", "--num-layers", "2"], "depth_prior"),
    (["--data", "/nonexistent"], "--data /nonexistent"),
])
def test_golden_usage_errors(tmp_path, capsys, argv, message):
    assert main(["golden", "--out", str(tmp_path / "g"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


NOT_JSON = "{'model': 1"


@pytest.mark.parametrize("command", ["spec", "golden"])
@pytest.mark.parametrize("argv, message", [
    (["--config", "{tmp}/bad.json"], "--config {tmp}/bad.json: not JSON: "),
    (["--config", "{tmp}/list.json"], "--config {tmp}/list.json: "),
    (["--config", "{tmp}"], "--config {tmp}: Is a directory"),
    (["--preset", "upstream", "--num-layers", "3"], "--num-layers 3: this model's depth prior has 4 entries"),
    (["--dim", "100000"], "model.dim = 100000, model.num_layers = 4 with 39 fields: at least"),
    (["--vocab", "100000000000000"], "model.dim = 16, model.num_layers = 4 with 39 fields: at least"),
])
def test_config_errors_of_spec_and_golden(tmp_path, capsys, command, argv, message):
    """--config that is not JSON (or not a config), and --dim/--num-layers/--vocab the
    model refuses (the memory check says what it would need): one line, exit 2."""
    (tmp_path / "bad.json").write_text(NOT_JSON)
    (tmp_path / "list.json").write_text("[1, 2]")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    out = ["--out", str(tmp_path / "out")] if command == "golden" else []
    assert main([command, *out, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"adaref.crosscheck {command}: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    if "model.dim" in message and "out of memory" in err:
        return                                   # a machine whose free memory is unknown to adaref
    assert message.replace("{tmp}", str(tmp_path)) in err, err


def test_spec_of_prepared_data(tmp_path, capsys, prepared):
    directory, data = prepared
    assert main(["spec", "--dim", "4", "--num-layers", "2", "--data", str(directory), "--k", "2"]) == 0
    spec = json.loads(capsys.readouterr().out)
    assert spec["vocab_sizes"] == data.vocab_sizes and spec["dims"]["F"] == len(data.vocab_sizes)
    shapes = {e["name"]: e["shape"] for e in spec["forms"]["soft"]}
    assert shapes["layers.0.gate.topk"].startswith("(n_l, 2)"), shapes["layers.0.gate.topk"]


@pytest.mark.parametrize("argv, message", [
    (["--data", "/nonexistent"], "--data /nonexistent: "),
    (["--data", str(SHIPPED / "paper")],
     f"--data {SHIPPED / 'paper'}: {SHIPPED / 'paper'}: is a golden set, not a prepared data directory"),
    (["--k", "6"], "--k 6: must be in [1, 5] (the model's experts)"),
    (["--preset", "upstream", "--k", "9"], "--k 9: must be in [1, 5]"),
])
def test_spec_usage_errors(capsys, argv, message):
    assert main(["spec", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert "delete" not in err                         # never advises deleting a golden set


def test_golden_to_an_unwritable_place(tmp_path, capsys):
    (tmp_path / "file").write_text("a file")
    assert main(["golden", "--out", str(tmp_path / "file" / "g"), *SMALL]) == 2
    err = capsys.readouterr().err
    assert f"--out {tmp_path / 'file' / 'g'}: Not a directory" in err and "Traceback" not in err, err


@pytest.mark.parametrize("command, argv", [
    ("spec", ["spec", "--preset", "paper"]),
    ("golden", ["golden", "--out", "x"]),
    ("compare", ["compare", "g", "t.npz"]),
    ("test", ["test", "m:f"]),
])
@pytest.mark.parametrize("error, code, message", [
    (MemoryError(), 2, "out of memory (a smaller --batch or model?)"),
    (KeyboardInterrupt(), 130, "interrupted"),
    (PermissionError(13, "Permission denied", "/somewhere/file"), 2, "/somewhere/file: Permission denied"),
    (OSError(28, "No space left on device"), 2, ": No space left on device"),
])
def test_memory_interrupt_and_os_errors(monkeypatch, capsys, command, argv, error, code, message):
    """Whatever a command is doing, these end it with one line and the documented exit
    status (2, or 130 for an interrupt), never a traceback."""
    import adaref.crosscheck.__main__ as cli

    def raises(args):
        raise error
    monkeypatch.setattr(cli, f"cmd_{command}", raises)
    assert main(argv) == code
    out = capsys.readouterr()
    assert message in out.err, out.err
    assert out.err.startswith(f"adaref.crosscheck {command}: ") and out.err.count("\n") == 1
    assert "Traceback" not in out.err + out.out


def test_golden_refuses_a_foreign_directory(tmp_path, capsys):
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "notes.txt").write_text("mine")
    assert main(["golden", "--out", str(tmp_path / "g"), *SMALL]) == 2
    assert "not a golden set" in capsys.readouterr().err
    (tmp_path / "f").write_text("a file")
    assert main(["golden", "--out", str(tmp_path / "f"), *SMALL]) == 2


def test_golden_from_a_run_config(tmp_path):
    from adaref.model import model_config

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model": model_config("paper", dim=4, num_layers=2).to_dict()}))
    assert main(["golden", "--out", str(tmp_path / "g"), "--config", str(path), "--fields", "3"]) == 0
    path.write_text(json.dumps({"model": {"dim": 4, "colour": 1}}))
    assert main(["golden", "--out", str(tmp_path / "h"), "--config", str(path)]) == 2


# --- compare --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("golden")
    return golden(tmp)


def run_compare(capsys, *argv):
    code = main(["compare", *map(str, argv)])
    return code, capsys.readouterr()


def test_identical_dump_agrees(small, tmp_path, capsys):
    code, out = run_compare(capsys, small, save(tmp_path, dump(small)))
    assert code == 0 and "AGREE" in out.out and "first divergence" not in out.out


def test_first_divergence_is_the_earliest_in_forward_order(small, tmp_path, capsys):
    t = dump(small)
    t["soft.layers.2.output"] = t["soft.layers.2.output"] + 1e-3          # later
    busy = [n for n in t if n.startswith("soft.layers.1.experts.") and n.endswith(".output") and t[n].size][-1]
    t[busy] = t[busy] * 1.001
    code, out = run_compare(capsys, small, save(tmp_path, t), "--quiet")
    assert code == 1
    assert f"first divergence: {busy}: values" in out.out
    assert "soft.layers.0" not in out.out                                  # quiet: no table


def test_tolerance_is_the_dtype_s(small, tmp_path, capsys):
    t = dump(small)
    t["soft.prob"] = t["soft.prob"] * (1 + 1e-11)                         # within 1e-9
    assert run_compare(capsys, small, save(tmp_path, t))[0] == 0
    t["soft.prob"] = t["soft.prob"] * (1 + 1e-7)
    assert run_compare(capsys, small, save(tmp_path, t))[0] == 1
    assert run_compare(capsys, small, save(tmp_path, t), "--rtol", "1e-6")[0] == 0


@pytest.mark.parametrize("change, status, words", [
    (lambda t: t.update({"grad.layers.0.experts.cross.W": t["grad.layers.0.experts.cross.W"].T.copy()}),
     "values", "grad.layers.0.experts.cross.W"),
    (lambda t: t.update({"soft.layers.0.gate.logits": t["soft.layers.0.gate.logits"].T.copy()}),
     "shape", "the transpose would match"),
    (lambda t: t.update({"soft.layers.0.output": t["soft.layers.0.output"].reshape(16, -1)}),
     "shape", "reshape or flatten order"),
    (lambda t: t.pop("soft.embedding"), "missing", "first missing: soft.embedding (not in their dump"),
    (lambda t: t.update({"soft.prob": np.where(np.arange(16) == 3, np.nan, t["soft.prob"])}),
     "nonfinite", "1 value(s) where the NaN/infinity pattern differs; first at (3,): theirs nan, golden is finite"),
    (lambda t: t.update({"soft.prob": t["soft.prob"].astype(np.float32)}), "dtype", "--dtype float32"),
    (lambda t: t.update({"soft.layers.0.gate.topk": t["soft.layers.0.gate.topk"][:, ::-1].copy()}),
     "integers", "differ; first at"),
    (lambda t: t.update({"hard.controller.exit_depth": t["hard.controller.exit_depth"].astype(str)}),
     "dtype", "is not numeric"),
    (lambda t: t.update({"hard.controller.exit_depth": t["hard.controller.exit_depth"] + 0.5}),
     "dtype", "golden integer"),
    (lambda t: t.update({"soft.layers.0.output": np.transpose(t["soft.layers.0.output"], (0, 2, 1)).copy()}),
     "shape", "their axes in the order (0, 2, 1) would match"),
])
def test_each_failure_is_named(small, tmp_path, capsys, change, status, words):
    t = dump(small)
    change(t)
    code, out = run_compare(capsys, small, save(tmp_path, t))
    assert code == 1
    first = [l for l in out.out.splitlines() if l.startswith(("first divergence", "first missing"))][0]
    assert f": {status}:" in first or status == "missing"
    if words:
        assert words in first


def test_extra_names_are_noted_with_a_suggestion(small, tmp_path, capsys):
    t = dump(small)
    t["soft.layers.0.gate.logit"] = t.pop("soft.layers.0.gate.logits")
    code, out = run_compare(capsys, small, save(tmp_path, t))
    assert code == 1
    assert "their 'soft.layers.0.gate.logit' is not a golden tensor; ignored (did you mean " \
           "soft.layers.0.gate.logits?)" in out.out


def test_names_map_only_and_allow_missing(small, tmp_path, capsys):
    t = dump(small)
    t["mine/prob"] = t.pop("hard.prob")
    theirs = save(tmp_path, t)
    (tmp_path / "map.json").write_text(json.dumps({"mine/prob": "hard.prob"}))
    assert run_compare(capsys, small, theirs, "--names", tmp_path / "map.json")[0] == 0
    only = save(tmp_path, {k: v for k, v in dump(small).items() if k.startswith("hard.")}, "hard.npz")
    assert run_compare(capsys, small, only)[0] == 1
    assert run_compare(capsys, small, only, "--only", "hard.*")[0] == 0
    code, out = run_compare(capsys, small, only, "--allow-missing")
    assert code == 0 and "absent (allowed)" in out.out


@pytest.mark.parametrize("make, message", [
    (lambda d, tmp: (tmp / "nothing", d), "not a directory"),
    (lambda d, tmp: (d, tmp / "missing.npz"), "no such file"),
    (lambda d, tmp: (d, (tmp / "text.npz", (tmp / "text.npz").write_text("hello"))[0]), "not a .npz file"),
    (lambda d, tmp: (d, (tmp / "obj.npz", np.savez(tmp / "obj.npz", a=np.array([{}], dtype=object)))[0]),
     "refusing to unpickle"),
])
def test_compare_usage_errors(small, tmp_path, capsys, make, message):
    golden_dir, theirs = make(small, tmp_path)
    code, out = run_compare(capsys, golden_dir, theirs)
    assert code == 2 and message in out.err and "Traceback" not in out.err


def test_incomplete_golden_and_bad_map(small, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in ("weights.npz", "inputs.npz", "outputs.npz", "manifest.json"):
        (broken / f).write_bytes((small / f).read_bytes())
    code, out = run_compare(capsys, broken, save(tmp_path, dump(small)))
    assert code == 2 and "missing grads.npz" in out.err
    (tmp_path / "map.json").write_text("[1, 2]")
    code, out = run_compare(capsys, small, save(tmp_path, dump(small)), "--names", tmp_path / "map.json")
    assert code == 2 and "must be a JSON object" in out.err
    code, out = run_compare(capsys, small, save(tmp_path, dump(small)), "--only", "nothing.*")
    assert code == 2 and "matches no golden tensor" in out.err


@pytest.mark.parametrize("manifest, message", [
    (b"{not json", "manifest.json: unreadable: "),
    (b"\xff\xfe\x00garbage", "manifest.json: unreadable: "),
    (b"[1, 2, 3]", "manifest.json: not a golden manifest (format 'adaref.crosscheck.golden/1')"),
    (b'{"format": "adaref.data/1"}', "manifest.json: not a golden manifest"),
    (b'{"format": "adaref.crosscheck.golden/1", "dtype": "float16"}', "dtype 'float16' is not one of"),
])
def test_compare_refuses_an_unreadable_or_foreign_manifest(small, tmp_path, capsys, manifest, message):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in ("weights.npz", "inputs.npz", "outputs.npz", "grads.npz"):
        (broken / f).write_bytes((small / f).read_bytes())
    (broken / "manifest.json").write_bytes(manifest)
    code, out = run_compare(capsys, broken, save(tmp_path, dump(small)))
    assert code == 2 and f"{broken / 'manifest.json'}" in out.err and message in out.err, out.err
    assert "Traceback" not in out.err and out.err.count("\n") == 1


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "absent.json", "absent.json: cannot read the name map: No such file or directory"),
    (lambda tmp: tmp, "cannot read the name map: Is a directory"),
    (lambda tmp: (tmp / "m.json", (tmp / "m.json").write_text("{'a': 'b'}"))[0], "the name map is not JSON: "),
    (lambda tmp: (tmp / "m.json", (tmp / "m.json").write_bytes(b"\xff\xfe"))[0], "the name map is not JSON: "),
    (lambda tmp: (tmp / "m.json", (tmp / "m.json").write_text('{"a": 1}'))[0], "must be a JSON object"),
])
def test_compare_refuses_a_bad_names_file(small, tmp_path, capsys, make, message):
    theirs = save(tmp_path, dump(small))
    code, out = run_compare(capsys, small, theirs, "--names", make(tmp_path))
    assert code == 2 and message in out.err and "Traceback" not in out.err, out.err


def test_golden_refuses_a_golden_set_with_other_files_and_a_non_float_dtype(tmp_path, capsys):
    from adaref.crosscheck.golden import GoldenError, make_golden
    from adaref.model import model_config

    out = golden(tmp_path)
    (out / "notes.txt").write_text("mine")
    assert main(["golden", "--out", str(out), *SMALL]) == 2
    err = capsys.readouterr().err
    assert "a golden set with other files in it (notes.txt); choose another --out" in err
    assert (out / "notes.txt").read_text() == "mine"
    with pytest.raises(GoldenError, match="dtype must be float32 or float64, got int32"):
        make_golden(tmp_path / "x", model_config("paper", dim=2, num_layers=4), vocab_sizes=[3, 3],
                    dtype=np.int32)


# --- CLI --------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["spec", "golden", "compare", "test"])
def test_help_for_every_command(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert "usage: python -m adaref.crosscheck " + command in capsys.readouterr().out


def test_no_command_and_abbreviations(capsys):
    assert main([]) == 2
    with pytest.raises(SystemExit) as e:
        main(["golden", "--out", "x", "--bat", "3"])
    assert e.value.code == 2


def test_spec_command(tmp_path, capsys):
    assert main(["spec", "--preset", "upstream", "--fields", "38", "--out", str(tmp_path / "s.json")]) == 0
    assert "spec: 147 parameters" in capsys.readouterr().out
    spec = json.loads((tmp_path / "s.json").read_text())
    params = {p["name"]: p for p in spec["parameters"]}
    assert params["layers.0.experts.cross.W"]["shape"] == [608, 608]
    assert params["layers.0.experts.conv.Wc"]["layout"].startswith("(K, C, O)")
    assert params["controller.gate.tau"]["equation"] == "eqs. 7-11"
    assert spec["forms"]["hard"][0]["name"] == "embedding"
    assert main(["spec", "--dim", "4", "--num-layers", "2", "--fields", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["dims"]["F"] == 3


def test_spec_to_an_unwritable_path(tmp_path, capsys):
    assert main(["spec", "--out", str(tmp_path / "no" / "such" / "dir.json")]) == 2
    err = capsys.readouterr().err
    assert "dir.json: No such file or directory" in err and "Traceback" not in err


def test_import_adaref_and_the_toolkit_without_torch():
    """`import adaref` (and the toolkit, and even torch_port's module) never needs torch."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"
            "import adaref, adaref.crosscheck, adaref.crosscheck.torch_port, adaref.crosscheck.__main__\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_test_command_self_check_and_bad_factory(capsys):
    assert main(["test", "adaref.crosscheck.reference:build", "--examples", "5"]) == 0
    assert "PASS: 5 configurations" in capsys.readouterr().out
    assert main(["test", "adaref.crosscheck.reference"]) == 2
    assert "expected MODULE:FACTORY" in capsys.readouterr().err
    assert main(["test", "adaref.nonexistent:build"]) == 2
    assert main(["test", "adaref.crosscheck.reference:nothing"]) == 2
