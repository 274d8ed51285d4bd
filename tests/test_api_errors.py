"""Bad input to the public API is refused at the entry point, with a message naming the
argument (or config field) and the bad value, instead of running on silently or failing
deep inside NumPy."""
import re

import numpy as np
import pytest

from adaref import data
from adaref.config import ConfigError
from adaref.data.config import OptionsError
from adaref.metrics import auc, log_loss
from adaref.model import AdaEnsemble, model_config
from adaref.model.config import GateConfig, KScheduleConfig, ModelConfig
from adaref.nn import Embedding, Linear

VOCAB = [5, 7, 3]
IDS = np.array([[1, 2, 0], [4, 6, 2]])


def _model(**changes):
    cfg = model_config("paper", dim=4, num_layers=2, **changes)
    return AdaEnsemble(cfg, VOCAB, rng=np.random.default_rng(0))


# -- 1. empty batch --------------------------------------------------------------------
@pytest.mark.parametrize("training, form", [(False, None), (True, "soft"), (True, "straight_through"),
                                            (True, "hard")])
def test_empty_batch_is_refused_in_every_form(training, form):
    model = _model().train(training)
    with pytest.raises(ValueError, match=re.escape("AdaEnsemble: the batch is empty (ids of shape (0, 3))")):
        model(np.zeros((0, 3), int), k=2, rng=np.random.default_rng(1), form=form)


def test_empty_batch_is_refused_without_controller():
    cfg = model_config("paper", dim=4, num_layers=2)
    model = AdaEnsemble(cfg.replace(controller={**cfg.controller.to_dict(), "enabled": False}), VOCAB,
                        rng=np.random.default_rng(0)).eval()
    with pytest.raises(ValueError, match="AdaEnsemble: the batch is empty"):
        model(np.zeros((0, 3), int), k=2)


# -- 2. rng ----------------------------------------------------------------------------
@pytest.mark.parametrize("rng", [None, 0, np.random.RandomState(0)])
def test_model_refuses_a_non_generator_rng(rng):
    with pytest.raises(TypeError, match=r"AdaEnsemble: rng must be a numpy\.random\.Generator "
                                        r"\(pass rng=numpy\.random\.default_rng\(seed\)\), got "):
        AdaEnsemble(model_config("paper", dim=4, num_layers=2), VOCAB, rng=rng)


def test_layers_refuse_a_non_generator_rng():
    with pytest.raises(TypeError, match="Embedding: rng must be a numpy.random.Generator.*got None"):
        Embedding([3, 5], dim=4, rng=None)
    with pytest.raises(TypeError, match="glorot_uniform: rng must be a numpy.random.Generator.*got None"):
        Linear(4, 2, rng=None)


# -- 3. step ---------------------------------------------------------------------------
def test_negative_step_is_refused_naming_it_numpy_integers_work():
    model = _model().eval()
    assert model(IDS, step=np.int64(0)).k == model(IDS, step=0).k == 5
    assert model.k_schedule(np.uint32(10_000)) == 3
    with pytest.raises(ValueError, match="AdaEnsemble: step must be a non-negative integer .*got -5$"):
        model(IDS, step=-5)
    with pytest.raises(ValueError, match="KSchedule: step must be a non-negative integer .*got -1$"):
        model.k_schedule(-1)


@pytest.mark.parametrize("step", [float("nan"), 2.5, 3.0, True, None])
def test_non_integer_step_is_refused(step):
    model = _model().eval()
    with pytest.raises(TypeError, match=r"AdaEnsemble: step must be a non-negative integer .*got "
                                        + re.escape(f"{step!r} ({type(step).__name__})")):
        model(IDS, step=step)
    with pytest.raises(TypeError, match="KSchedule: step must be a non-negative integer"):
        model.k_schedule(step)


# -- 4. k ------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [2.5, 2.0, True, np.float64(2.0)])
def test_non_integer_k_is_refused(k):
    with pytest.raises(TypeError, match=r"AdaEnsemble: k must be an integer in \[1, 5\] .*got "
                                        + re.escape(f"{k!r} ({type(k).__name__})")):
        _model().eval()(IDS, k=k)


@pytest.mark.parametrize("k", [0, 6, -1])
def test_out_of_range_k_is_refused_by_the_model(k):
    with pytest.raises(ValueError, match=rf"AdaEnsemble: k must be an integer in \[1, 5\] .*got {k}$"):
        _model().eval()(IDS, k=k)


def test_numpy_integer_k_runs_as_that_k():
    out = _model().eval()(IDS, k=np.int64(2))
    assert type(out.k) is int and out.k == 2
    assert all(int(r.mask.sum(axis=1).max()) == 2 for r in out.routing.layers)


# -- 5. vocabulary sizes ---------------------------------------------------------------
@pytest.mark.parametrize("sizes, shown", [([2.7, 3, 5], "2.7 (float) at index 0"),
                                          ([5, 3.0, 5], "3.0 (float) at index 1"),
                                          ([5, 7, True], "True (bool) at index 2")])
def test_non_integer_vocab_sizes_are_refused(sizes, shown):
    with pytest.raises(TypeError, match=r"AdaEnsemble: vocab_sizes must be positive integers, got "
                                        + re.escape(shown)):
        AdaEnsemble(model_config("paper", dim=4, num_layers=2), sizes, rng=np.random.default_rng(0))
    with pytest.raises(TypeError, match="Embedding: vocab_sizes must be positive integers"):
        Embedding(sizes, dim=4, rng=np.random.default_rng(0))


def test_vocab_sizes_must_be_a_sequence_of_integers_numpy_ones_included():
    with pytest.raises(TypeError, match="AdaEnsemble: vocab_sizes must be a sequence of positive integers"):
        AdaEnsemble(model_config("paper", dim=4, num_layers=2), 5, rng=np.random.default_rng(0))
    model = AdaEnsemble(model_config("paper", dim=4, num_layers=2), np.array(VOCAB, dtype=np.int32),
                        rng=np.random.default_rng(0))
    assert model.vocab_sizes == VOCAB and all(type(v) is int for v in model.vocab_sizes)


# -- 6. activation names ---------------------------------------------------------------
def test_unknown_gate_activation_is_a_config_error():
    msg = "GateConfig: activation='foo' is not an activation; choose one of relu, gelu"
    with pytest.raises(ConfigError, match=msg):
        GateConfig(activation="foo")
    with pytest.raises(ConfigError, match=msg):
        ModelConfig.from_dict({"gate": {"activation": "foo"}})
    with pytest.raises(ConfigError, match=msg):
        ModelConfig.from_dict({"controller": {"gate": {"activation": "foo"}}})
    assert GateConfig(activation="gelu_tanh").activation == "gelu_tanh"


# -- 7. k schedule ---------------------------------------------------------------------
def test_piecewise_k_above_the_number_of_experts_is_a_config_error():
    with pytest.raises(ConfigError, match=re.escape("MoEConfig: schedule.boundaries k values must be in "
                                                    "[1, 5] (the number of experts), got ((0, 9),)")):
        ModelConfig.from_dict({"moe": {"schedule": {"kind": "piecewise", "boundaries": [[0, 9]]}}})
    with pytest.raises(ConfigError, match=re.escape("must be in [1, 2]")):
        ModelConfig.from_dict({"moe": {"experts": ["dense", "cross"], "schedule": {
            "kind": "piecewise", "k": 2, "boundaries": [[0, 2], [10, 3]]}}})


@pytest.mark.parametrize("boundaries, msg", [
    (((0, 0),), "piecewise boundaries k values must be >= 1, got ((0, 0),)"),
    (((0, 3), (5, -1)), "piecewise boundaries k values must be >= 1"),
    (((0, 3), (0, 2)), "with strictly ascending steps, got ((0, 3), (0, 2))"),
    (((0,),), "piecewise boundaries must be ((0, k0), (s1, k1), ...)"),
])
def test_bad_piecewise_boundaries_are_config_errors(boundaries, msg):
    with pytest.raises(ConfigError, match="KScheduleConfig: .*" + re.escape(msg)):
        KScheduleConfig(kind="piecewise", k=2, boundaries=boundaries)


# -- 8. metrics ------------------------------------------------------------------------
@pytest.mark.parametrize("probs, shown", [([0.1, 1.5], "1.5 at index 1"), ([-0.1, 0.5], "-0.1 at index 0"),
                                          ([0.5, np.inf], "inf at index 1")])
def test_log_loss_refuses_probabilities_outside_0_1(probs, shown):
    with pytest.raises(ValueError, match=r"probs must be probabilities in \[0, 1\], got " + re.escape(shown)):
        log_loss([0, 1], probs)


def test_metric_messages_name_the_argument_and_show_the_value():
    with pytest.raises(ValueError, match=r"labels must be 0 or 1, got 2\.0$"):
        auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"scores must be numbers \(could not convert string to float: 'x'\)"):
        auc([0, 1], [0.1, "x"])
    with pytest.raises(ValueError, match=r"probs must be numbers"):
        log_loss([0, 1], [0.1, "x"])
    with pytest.raises(ValueError, match=r"labels must be numbers"):
        log_loss(["a", 1], [0.1, 0.2])


# -- 9. data.load input ----------------------------------------------------------------
@pytest.mark.parametrize("value, shown", [(5, "5 (int)"), ([5], "5 (int) in the list"),
                                          ({"a": 1}, "{'a': 1} (dict)")])
def test_load_refuses_an_input_that_is_not_paths(value, shown, tmp_path):
    with pytest.raises(TypeError, match=r"load: input must be a path or a list of paths, got "
                                        + re.escape(shown)):
        data.load("criteo", input=value, out=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_load_refuses_an_empty_input_list(tmp_path):
    with pytest.raises(OptionsError, match="load: input is an empty list"):
        data.load("criteo", input=[], out=str(tmp_path / "out"))
