"""The property suite (``python -m adaref.crosscheck test``) against the shipped PyTorch
port: it passes, and deliberately broken copies of the port fail with the right first
divergent tensor after shrinking (a missing ReLU, a transposed weight, a wrong tie
rule, a bias on the wrong side)."""
from __future__ import annotations

import io
import re

import pytest
import torch

from adaref.crosscheck import torch_port as tp
from adaref.crosscheck.__main__ import main
from adaref.crosscheck.suite import run_suite


def suite(**kw):
    out = io.StringIO()
    result = run_suite(tp.build, out=out, **kw)
    return result, out.getvalue()


def test_the_port_passes_the_suite(capsys):
    assert main(["test", "adaref.crosscheck.torch_port:build", "--examples", "25", "--seed", "7"]) == 0
    assert "PASS: 25 configurations agree on every named intermediate and gradient" in capsys.readouterr().out


def without_relu(p, cfg, x, x0):
    """The conv expert with its Conv1D ReLU left out."""
    return tp.conv_expert(p, cfg.replace(activation="linear"), x, x0)


def transposed_pin(p, cfg, x, x0):
    """The polynomial expert reading its square W transposed (the (in, out)/(out, in) slip)."""
    return tp.pin_expert({**p, "W": p["W"].T}, cfg, x, x0)


def bias_inside(p, cfg, x, x0):
    """The cross expert with the bias on the other side of the Hadamard product."""
    return tp.cross_expert(p, cfg.replace(bias="inside" if cfg.bias == "outside" else "outside"), x, x0)


def highest_index_wins(g, k):
    """Top-k where, among equal scores, the highest index wins."""
    n = g.shape[-1]
    order = torch.sort(g.flip(-1), dim=-1, descending=True, stable=True).indices[..., :k]
    return torch.zeros_like(g, dtype=torch.bool).scatter(-1, n - 1 - order, True)


@pytest.mark.parametrize("expert, broken, presets, first", [
    ("conv", without_relu, ("paper",), r"layers\.\d\.experts\.conv\.output"),
    ("pin", transposed_pin, ("paper", "upstream"), r"layers\.\d\.experts\.pin\.output"),
    ("cross", bias_inside, ("paper", "upstream"), r"layers\.\d\.experts\.cross\.output"),
])
def test_a_broken_expert_is_named(monkeypatch, expert, broken, presets, first):
    monkeypatch.setitem(tp.EXPERTS, expert, broken)
    result, text = suite(examples=30, seed=0, presets=presets)
    assert not result.passed, text
    assert re.fullmatch(first, result.first.name), text
    assert "smallest failing configuration" in text and result.first.name in text
    assert result.case.num_layers == 1 and result.case.fields <= 3 and result.case.batch <= 4   # shrunk


def test_float32_cases_still_catch_a_defect(monkeypatch):
    """The float32 allowance (4 x adaref's own float32 rounding) does not hide a defect."""
    monkeypatch.setitem(tp.EXPERTS, "pin", transposed_pin)
    result, text = suite(examples=30, seed=0, dtypes=("float32",))
    assert not result.passed and result.case.dtype == "float32", text
    assert re.fullmatch(r"layers\.\d\.experts\.pin\.output", result.first.name), text


def test_a_wrong_tie_rule_is_named(monkeypatch):
    monkeypatch.setattr(tp, "topk_mask", highest_index_wins)
    result, text = suite(examples=40, seed=0, dtypes=("float64",))
    assert not result.passed, text
    assert re.fullmatch(r"controller\.exit_depth|layers\.\d\.gate\.topk", result.first.name), text
    assert result.case.tied_experts or result.case.shallow       # only a tie tells the rules apart
