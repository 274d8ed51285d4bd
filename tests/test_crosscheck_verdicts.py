"""Verdicts and refusals of the cross-check toolkit on awkward inputs (found by an
outside review): nothing compared, damaged golden sets, non-finite golden values, byte
order, axis permutations, unprefixed dumps, name collisions, overlapping mappings,
values a mapping cannot carry, factories that cannot build."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from adaref.crosscheck import Mapping, MappingError, Part, Rule
from adaref.crosscheck.__main__ import main
from adaref.crosscheck.compare import check_tensor, compare, load_golden
from adaref.crosscheck.golden import GoldenError
from adaref.crosscheck.suite import SuiteError, run_suite
from adaref.io import save_npz

SMALL = ["--dim", "4", "--fields", "5", "--batch", "12", "--num-layers", "2"]


@pytest.fixture(scope="module")
def gold(tmp_path_factory):
    out = tmp_path_factory.mktemp("v") / "g"
    assert main(["golden", "--out", str(out), *SMALL]) == 0
    return out


def tensors(gold):
    return dict(load_golden(gold)[1])


def test_nothing_compared_is_not_agreement(gold, tmp_path, capsys):
    np.savez(tmp_path / "one.npz", x=np.zeros(2))
    assert main(["compare", str(gold), str(tmp_path / "one.npz"), "--allow-missing"]) == 1
    assert "NOTHING COMPARED" in capsys.readouterr().out
    t = {k: v for k, v in tensors(gold).items() if k.startswith("hard.")}
    report = compare(gold, t, allow_missing=True)
    assert report.agree and len(report.compared) == len(t)
    assert "absent from their dump, allowed" in report.format(verbose=False)


def test_a_damaged_golden_set_is_refused(gold, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(gold, bad)
    save_npz(bad / "outputs.npz", {"soft.embedding": tensors(gold)["soft.embedding"]})
    assert main(["compare", str(bad), str(tmp_path / "x.npz")]) == 2
    assert "not the outputs manifest.json lists" in capsys.readouterr().err
    shutil.copy(gold / "outputs.npz", bad / "outputs.npz")
    (bad / "grads.npz").write_text("not a zip")
    assert main(["compare", str(bad), str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err
    assert f"{bad / 'grads.npz'}: not a .npz file" in err and "Traceback" not in err, err
    shutil.copy(gold / "grads.npz", bad / "grads.npz")
    m = json.loads((bad / "manifest.json").read_text())
    for informational in ("versions", "source", "spec", "preset", "seed"):
        del m[informational]                       # checked when present, not needed by compare
    (bad / "manifest.json").write_text(json.dumps(m))
    assert compare(bad, tensors(gold)).agree
    for dtype in (["x"], "float16", None):
        m["dtype"] = dtype
        (bad / "manifest.json").write_text(json.dumps(m))
        with pytest.raises(GoldenError, match="dtype"):
            load_golden(bad)


@pytest.mark.parametrize("field, value, message", [
    ("forms", 5, "field 'forms' is 5, expected a list of form names"),
    ("forms", "soft", "field 'forms' is 'soft', expected a list of form names"),
    ("forms", [1, 2], "field 'forms' is [1, 2], expected a list of form names"),
    ("forms", None, "field 'forms' is None, expected a list of form names"),
    ("gradient_form", ["soft"], "field 'gradient_form' is ['soft'], expected a form name"),
    ("gradient_form", "sideways", "field 'gradient_form' is 'sideways', not one of its forms"),
    ("outputs", {"a": 1}, "field 'outputs' is {'a': 1}, expected a list of tensor names"),
    ("gradients", "grad.x", "field 'gradients' is 'grad.x', expected a list of tensor names"),
    ("vocab_sizes", [3, "4"], "field 'vocab_sizes' is [3, '4'], expected a list of positive integers"),
    ("k", True, "field 'k' is True, expected a positive integer"),
    ("batch", 2.5, "field 'batch' is 2.5, expected a positive integer"),
    ("config", [], "field 'config' is [], expected a JSON object"),
    ("preset", 3, "field 'preset' is 3, expected a preset name or null"),
    ("spec", "x" * 50, "field 'spec' is a str, expected a JSON object"),
    ("forms", "<delete>", "has no field 'forms' (a list of form names)"),
    ("gradient_form", "<delete>", "has no field 'gradient_form'"),
])
def test_a_manifest_field_of_the_wrong_type_is_a_damaged_golden_set(gold, tmp_path, capsys, field, value,
                                                                     message):
    """One line naming manifest.json and the field, exit 2 (as for any damaged golden
    set), never a TypeError from deep inside compare."""
    bad = tmp_path / "bad"
    shutil.copytree(gold, bad)
    m = json.loads((bad / "manifest.json").read_text())
    if value == "<delete>":
        del m[field]
    else:
        m[field] = value
    (bad / "manifest.json").write_text(json.dumps(m))
    np.savez(tmp_path / "theirs.npz", **tensors(gold))
    assert main(["compare", str(bad), str(tmp_path / "theirs.npz"), "--form", "soft"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{bad / 'manifest.json'}: {message}" in err and "the golden set is damaged" in err, err
    assert main(["compare", str(bad), str(tmp_path / "theirs.npz")]) == 2
    with pytest.raises(GoldenError, match=field):
        load_golden(bad)


def test_golden_never_overwrites_another_manifest(tmp_path, capsys):
    d = tmp_path / "data"
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps({"format": "adaref.data/1"}))
    assert main(["golden", "--out", str(d), *SMALL]) == 2
    assert "not a golden set" in capsys.readouterr().err
    assert json.loads((d / "manifest.json").read_text()) == {"format": "adaref.data/1"}


def test_golden_data_that_is_a_golden_set(gold, tmp_path, capsys):
    assert main(["golden", "--out", str(tmp_path / "x"), "--data", str(gold)]) == 2
    assert "is a golden set, not a prepared data directory" in capsys.readouterr().err


def test_golden_config_from_a_golden_manifest(gold, tmp_path):
    assert main(["golden", "--out", str(tmp_path / "again"), "--config", str(gold / "manifest.json"),
                 "--fields", "5", "--batch", "12"]) == 0
    for f in ("weights.npz", "outputs.npz", "grads.npz"):
        assert (gold / f).read_bytes() == (tmp_path / "again" / f).read_bytes()


@pytest.mark.parametrize("golden, theirs, ok", [
    ([1.0, np.inf, 2.0], [1.0, 3.0, 2.0], False),
    ([1.0, np.inf, 2.0], [5.0, np.inf, -7.0], False),        # the finite values still count
    ([1.0, np.inf, 2.0], [1.0, np.inf, 2.0], True),
    ([1.0, np.nan, 2.0], [1.0, 3.0, 2.0], False),
    ([1.0, np.nan, 2.0], [1.0, np.nan, 2.0], True),
    ([np.inf], [-np.inf], False),
])
def test_non_finite_golden_values(golden, theirs, ok):
    row = check_tensor("x", np.array(theirs), np.array(golden), 1e-9, 1e-12)
    assert row.ok == ok, row


def test_byte_order_is_not_a_dtype(gold):
    g = tensors(gold)["soft.prob"]
    assert check_tensor("p", g.astype(">f8"), g, 1e-9, 1e-12).ok
    assert "--dtype float32" in check_tensor("p", g.astype(">f4"), g, 1e-9, 1e-12).message


def test_hints_for_permuted_axes_and_square_transposes():
    g = np.random.default_rng(0).normal(size=(4, 3, 2))
    assert "(0, 2, 1) would match" in check_tensor("x", np.transpose(g, (0, 2, 1)), g, 1e-9, 1e-12).message
    w = np.random.default_rng(1).normal(size=(3, 3))
    assert "their transpose matches" in check_tensor("w", w.T.copy(), w, 1e-9, 1e-12).message


def test_an_unprefixed_dump_and_form(gold, tmp_path, capsys):
    hard = {k[len("hard."):]: v for k, v in tensors(gold).items() if k.startswith("hard.")}
    np.savez(tmp_path / "serving.npz", **hard)
    assert main(["compare", str(gold), str(tmp_path / "serving.npz"), "--quiet"]) == 1
    assert "pass --form soft or --form expected or --form hard" in capsys.readouterr().out
    assert main(["compare", str(gold), str(tmp_path / "serving.npz"), "--form", "hard"]) == 0
    assert main(["compare", str(gold), str(tmp_path / "serving.npz"), "--form", "full"]) == 2


def test_name_collisions_and_unknown_renames(gold):
    t = tensors(gold)
    t["mine"] = t["soft.prob"] + 1
    with pytest.raises(GoldenError, match="end up named 'soft.prob'"):
        compare(gold, t, names={"mine": "soft.prob"})
    with pytest.raises(GoldenError, match="does not hold"):
        compare(gold, tensors(gold), names={"nothing": "soft.prob"})


def test_gradients_are_compared_in_backpropagation_order(gold):
    t = tensors(gold)
    grads = [n for n in t if n.startswith("grad.")]
    assert grads[0].startswith("grad.estimators.1") and grads[-2:] == ["grad.embedding", "grad.embedding.weight"]
    pin = "grad.layers.1.experts.pin.W"                  # a defect in layer 1's VJP corrupts layer 0 too
    t[pin] = t[pin] * 1.01
    for n in grads:
        if n.startswith(("grad.layers.0", "grad.embedding", "grad.controller")):
            t[n] = t[n] * 1.01 + 1e-3
    assert compare(gold, t).first_divergence.name == pin


def test_mapping_refuses_overlapping_reads_and_reports_what_it_cannot_carry():
    qkv = (6, 2)
    m = Mapping("fused", (Rule("q", (Part("qkv", qkv, ({"op": "slice", "axis": 0, "start": 0, "stop": 2},)),)),
                          Rule("k", (Part("qkv", qkv, ({"op": "slice", "axis": 0, "start": 2, "stop": 4},)),)),
                          Rule("v", (Part("qkv", qkv, ({"op": "slice", "axis": 0, "start": 2, "stop": 4},)),))))
    with pytest.raises(MappingError, match="read twice, by the rules for 'k' and 'v'"):
        m.to_adaref({"qkv": np.zeros(qkv)})
    rows = Mapping("rows", (Rule("table", (Part("t", (3, 2), ({"op": "rows", "index": [-1, 0, 2]},)),)),))
    rows.to_adaref({"t": np.ones((3, 2))})
    assert rows.last_unread == {"t": 2}                        # their row 1 is not used
    rows.from_adaref({"table": np.arange(1.0, 7.0).reshape(3, 2)})
    assert rows.last_dropped == {"table": 2} and rows.last_unrepresented == {"t": 2}
    with pytest.raises(MappingError, match="concatenates along axis 5"):
        Mapping("ax", (Rule("a", (Part("x", (2, 2)), Part("y", (2, 2))), axis=5),))
    with pytest.raises(MappingError, match="not numbers"):
        Mapping("s", (Rule("a", (Part("x", (2,)),)),)).to_adaref({"x": np.array(["a", "b"])})


def _no_port(config, vocab_sizes, weights, dtype):
    raise ImportError("needs a library this machine lacks")


def test_a_factory_that_cannot_build_is_a_usage_error():
    with pytest.raises(SuiteError, match="cannot build a port: ImportError: needs a library"):
        run_suite(_no_port, examples=3)


def test_an_empty_npz_is_an_npz(gold, tmp_path, capsys):
    np.savez(tmp_path / "empty.npz")
    assert main(["compare", str(gold), str(tmp_path / "empty.npz")]) == 1
    assert "NOTHING COMPARED" in capsys.readouterr().out


# --- the property suite: ports that break the protocol ---------------------------------
FACTORIES = '''
from adaref.crosscheck.reference import AdarefPort

class NoForward:
    def gradients(self, *a, **kw):
        return {}

class ForwardNotCallable:
    forward = 3

class GradientsNotCallable(AdarefPort):
    gradients = None

def nothing(config, vocab_sizes, weights, dtype):
    return object()

def none(config, vocab_sizes, weights, dtype):
    return None

def no_forward(config, vocab_sizes, weights, dtype):
    return NoForward()

def forward_not_callable(config, vocab_sizes, weights, dtype):
    return ForwardNotCallable()

def gradients_not_callable(config, vocab_sizes, weights, dtype):
    return GradientsNotCallable(config, vocab_sizes, weights, dtype)
'''


@pytest.mark.parametrize("factory, message", [
    ("nothing", "the factory returned <object object at "),
    ("none", "the factory returned None, not a port: it has no method forward(ids, labels, *, k, form, lambdas)"),
    ("no_forward", "NoForward object at"),
    ("forward_not_callable", "not a port: it has no method forward("),
    ("gradients_not_callable", "not a port: it has a 'gradients' attribute that is not a method"),
])
def test_a_factory_that_returns_no_port_is_a_usage_error(tmp_path, monkeypatch, capsys, factory, message):
    """Checked against the adapter protocol before any case runs: exit 2 naming what is
    missing, not a 'disagreement' found by the cases."""
    (tmp_path / "xc_factories.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["test", f"xc_factories:{factory}", "--examples", "3"]) == 2
    out = capsys.readouterr()
    assert message in out.err and "adapter protocol" in out.err and "Traceback" not in out.err, out.err
    assert "FAIL" not in out.out and "configurations" not in out.out


class _Port:
    """adaref itself (the reference port), with one defect chosen by a subclass."""

    def __init__(self, config, vocab_sizes, weights, dtype):
        from adaref.crosscheck.reference import AdarefPort
        self.ref = AdarefPort(config, vocab_sizes, weights, dtype)

    def forward(self, ids, labels, *, k, form, lambdas):
        return self.ref.forward(ids, labels, k=k, form=form, lambdas=lambdas)

    def gradients(self, ids, labels, *, k, form, lambdas):
        return self.ref.gradients(ids, labels, k=k, form=form, lambdas=lambdas)


class _LeavesOut(_Port):
    def forward(self, ids, labels, **kw):
        out = super().forward(ids, labels, **kw)
        del out["loss.total"]
        return out


class _AddsOne(_Port):
    def forward(self, ids, labels, **kw):
        return {**super().forward(ids, labels, **kw), "layers.9.output": np.zeros(1)}


class _Raises(_Port):
    def forward(self, ids, labels, **kw):
        raise RuntimeError("boom in forward")


class _GradientsRaise(_Port):
    def gradients(self, ids, labels, **kw):
        raise FloatingPointError("boom in gradients")


class _NotAMapping(_Port):
    def forward(self, ids, labels, **kw):
        return [1, 2, 3]


class _NoGradients:
    def __init__(self, *args):
        self.port = _Port(*args)

    def forward(self, ids, labels, **kw):
        return self.port.forward(ids, labels, **kw)


def _fails_deep(config, vocab_sizes, weights, dtype):
    """Builds the suite's one-layer trial port, refuses any deeper model."""
    if config.num_layers > 1:
        raise NotImplementedError("one layer only")
    return _Port(config, vocab_sizes, weights, dtype)


_calls = {"n": 0}


class _Flaky(_Port):
    """Its first answer differs from every later answer to the same case."""

    def forward(self, ids, labels, **kw):
        out = super().forward(ids, labels, **kw)
        _calls["n"] += 1
        if _calls["n"] == 1:
            out["prob"] = out["prob"] + 1e-3
        return out


def _suite(factory, **kw):
    import io
    out = io.StringIO()
    result = run_suite(factory, examples=kw.pop("examples", 6), seed=0, dtypes=("float64",), out=out, **kw)
    return result, out.getvalue()


@pytest.mark.parametrize("factory, name, status, words", [
    (_LeavesOut, "loss.total", "missing", "the port did not return it"),
    (_AddsOne, "layers.9.output", "extra", "adaref does not record it"),
    (_Raises, "(port.forward)", "error", "RuntimeError: boom in forward"),
    (_GradientsRaise, "(port.gradients)", "error", "FloatingPointError: boom in gradients"),
    (_NotAMapping, "(port.forward)", "error", "TypeError"),
    (_fails_deep, "(port build)", "error", "NotImplementedError: one layer only"),
])
def test_the_suite_names_a_port_s_protocol_faults(factory, name, status, words):
    result, text = _suite(factory, gradients=factory is _GradientsRaise)   # forward only: faster shrinking
    assert not result.passed and result.first.name == name and result.first.status == status, text
    assert words in result.first.message and "smallest failing configuration" in text, text
    assert f"first divergent tensor: {name}: {status}: " in text
    if factory is _fails_deep:
        assert result.case.num_layers == 2                       # shrunk to the smallest deep model


def test_a_port_without_gradients_is_checked_forward_only():
    result, text = _suite(_NoGradients, examples=3)
    assert "the port has no gradients method; comparing forward passes only" in text
    assert result.passed and "PASS: 3 configurations agree on every named intermediate\n" in text, text


def test_a_flaky_port_is_reported_as_such():
    _calls["n"] = 0
    result, text = _suite(_Flaky)
    assert not result.passed, text
    assert "FAIL: the port gave different answers to the same case when it was run again" in text
    assert "a failing configuration:" in text and "first divergent tensor: prob: values" in text


def test_an_error_inside_the_suite_is_reported_not_raised(monkeypatch):
    """adaref itself failing on a generated case (never seen; the branch exists so that
    such a bug is reported with its configuration rather than as a traceback)."""
    import adaref.crosscheck.suite as suite

    def broken(*args, **kw):
        raise ArithmeticError("adaref broke")
    monkeypatch.setattr(suite, "forward", broken)
    result, text = _suite(_Port, examples=2, gradients=False)
    assert not result.passed and "FAIL: ArithmeticError: adaref broke" in text, text


def test_the_suite_without_hypothesis(monkeypatch, capsys):
    import sys
    monkeypatch.setitem(sys.modules, "hypothesis", None)
    assert main(["test", "adaref.crosscheck.reference:build"]) == 2
    err = capsys.readouterr().err
    assert "the property suite needs Hypothesis: pip install 'adaref[test]'" in err and "Traceback" not in err
