"""Modules: names, state dicts, saving without pickle, deterministic initialisation."""
import os
import zipfile
from dataclasses import dataclass

import numpy as np
import pytest

import adaref
import adaref.io
from adaref import Tensor, ops
from adaref.config import Config, ConfigError
from adaref.io import NpzError, load_npz, save_npz
from adaref.nn import (Activation, Embedding, LayerNorm, Linear, Module, ModuleDict, ModuleList,
                       Parameter, StateDictError)


class Expert(Module):
    def __init__(self, rng):
        super().__init__()
        self.W = Parameter(rng.normal(size=(2, 2)))


class Layer(Module):
    def __init__(self, rng):
        super().__init__()
        self.experts = ModuleDict({"cross": Expert(rng), "dense": Expert(rng)})
        self.norm = LayerNorm(2)


class Model(Module):
    def __init__(self, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.embedding = Embedding([3, 4], dim=2, rng=rng)
        self.layers = ModuleList([Layer(rng), Layer(rng)])
        self.head = Linear(2, 1, rng=rng)


def test_dotted_names_in_definition_order():
    names = [n for n, _ in Model().named_parameters()]
    assert names[:5] == ["embedding.weight", "layers.0.experts.cross.W", "layers.0.experts.dense.W",
                         "layers.0.norm.gain", "layers.0.norm.bias"]
    assert "layers.1.experts.cross.W" in names and names[-2:] == ["head.weight", "head.bias"]
    m = Model()
    assert m.layers[1].experts["cross"] is m.layers[1].experts.cross and len(m.layers) == 2
    assert m.num_parameters() == sum(p.size for p in m.parameters())


def test_shared_parameter_listed_once_and_train_eval_recurse():
    m = Model()
    m.layers[1].experts.cross.W = m.layers[0].experts.cross.W
    assert len(m.parameters()) == len({id(p) for p in m.parameters()})
    m.eval()
    assert not m.layers[1].experts.dense.training
    m.train()
    assert m.layers[0].norm.training


def test_same_seed_same_weights_different_seed_different_weights():
    a, b, c = Model(0).state_dict(), Model(0).state_dict(), Model(1).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["layers.0.experts.cross.W"], c["layers.0.experts.cross.W"])


def test_state_dict_round_trip_and_errors_name_the_tensor():
    src, dst = Model(0), Model(1)
    dst.load_state_dict(src.state_dict())
    assert all(np.array_equal(v, dst.state_dict()[k]) for k, v in src.state_dict().items())
    state = src.state_dict()
    with pytest.raises(StateDictError, match="missing tensor.*head.bias"):
        dst.load_state_dict({k: v for k, v in state.items() if k != "head.bias"})
    with pytest.raises(StateDictError, match="unexpected tensor.*extra"):
        dst.load_state_dict({**state, "extra": np.ones(1)})
    with pytest.raises(StateDictError, match=r"head.weight has shape \(3, 1\), the module expects \(2, 1\)"):
        dst.load_state_dict({**state, "head.weight": np.ones((3, 1))})
    with pytest.raises(StateDictError, match="head.bias has dtype float32"):
        dst.load_state_dict({**state, "head.bias": np.ones(1, np.float32)})


def test_load_state_dict_copies_in_place():
    m = Model()
    w = m.head.weight.data
    m.load_state_dict(Model(3).state_dict())
    assert m.head.weight.data is w


def test_save_load_npz_with_meta_and_atomic_write(tmp_path):
    m = Model(0)
    path = tmp_path / "ckpt.npz"
    m.save(path, meta={"preset": "paper", "D": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.npz"]      # no temp file left
    other = Model(5)
    assert other.load(path) == {"preset": "paper", "D": 2}
    assert np.array_equal(other.head.weight.data, m.head.weight.data)


def test_write_json_replaces_the_document_whole(tmp_path):
    import json

    from adaref.io import write_json

    path = tmp_path / "results.json"
    write_json(path, {"runs": [1, 2]})
    write_json(path, {"runs": [3]})
    assert json.loads(path.read_text()) == {"runs": [3]}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temp file left


def test_load_refuses_pickles_truncation_and_mismatch(tmp_path):
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, w=np.array([{"a": 1}], dtype=object))
    with pytest.raises(NpzError, match="'w' is an object array; refusing to unpickle"):
        load_npz(pickled)
    good = tmp_path / "good.npz"
    Model(0).save(good)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(NpzError, match="truncated.npz: not a valid .npz"):
        Model(0).load(truncated)
    with pytest.raises(NpzError, match="no such file"):
        load_npz(tmp_path / "missing.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_text("not an archive")
    with pytest.raises(NpzError, match=r"garbage.npz: not a .npz file \(no zip header"):
        load_npz(garbage)
    with pytest.raises(StateDictError, match=r"good.npz: load_state_dict: tensor head.weight"):
        m = Model(0)
        m.head = Linear(3, 1, rng=np.random.default_rng(0))
        m.load(good)
    with pytest.raises(NpzError, match="dtype object"):
        save_npz(tmp_path / "x.npz", {"w": np.array([None])})


def test_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    Model(0).save(path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(adaref.io, "write_npz", boom)
    with pytest.raises(KeyboardInterrupt):
        Model(1).save(path)
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def test_linear_layernorm_embedding_gradients():
    rng = np.random.default_rng(0)
    lin, ln = Linear(3, 4, rng=rng), LayerNorm(4)
    x = rng.normal(size=(2, 5, 3))
    assert adaref.gradcheck_module(lambda x: ln(lin(x)), lin, x)
    ln.gain.data[:] = rng.normal(size=4)
    assert adaref.gradcheck_module(lambda x: ln(x) * ln(x), ln, rng.normal(size=(3, 4)))
    emb = Embedding([3, 5, 2], dim=4, rng=rng)
    ids = np.array([[0, 4, 1], [2, 4, 0]])
    assert adaref.gradcheck_module(lambda: (emb(ids) ** 2).sum(axis=-1), emb)


def test_embedding_offsets_and_field_tables():
    emb = Embedding([3, 5], dim=2, rng=np.random.default_rng(0))
    assert emb.weight.shape == (8, 2)
    x = emb(np.array([[2, 4]])).data
    np.testing.assert_array_equal(x[0, 0], emb.field_table(0)[2])
    np.testing.assert_array_equal(x[0, 1], emb.field_table(1)[4])
    emb(np.array([[2, 4], [1, 1]])).sum().backward()
    np.testing.assert_array_equal(emb.weight.grad.rows, [1, 2, 4, 7])   # offsets 0 and 3


def test_embedding_zero_oov_row_embeds_to_zero_and_gets_no_gradient():
    emb = Embedding([3, 5], dim=2, rng=np.random.default_rng(0), oov="zero")
    ids = np.array([[0, 2], [1, 0]])
    x = emb(ids)
    assert np.all(x.data[0, 0] == 0) and np.all(x.data[1, 1] == 0)
    x.sum().backward()
    dense = adaref.tensor.dense(emb.weight.grad)
    assert np.all(dense[[0, 3]] == 0) and np.all(dense[[1, 5]] == 1)
    learned = Embedding([3, 5], dim=2, rng=np.random.default_rng(0), oov="learned")
    assert np.any(learned(ids).data[0, 0] != 0)


def test_embedding_rejects_bad_ids_naming_row_and_field():
    emb = Embedding([3, 5], dim=2, rng=np.random.default_rng(0))
    with pytest.raises(IndexError, match=r"id 5 at row 1, field 1 is outside \[0, 5\)"):
        emb(np.array([[0, 1], [0, 5]]))
    with pytest.raises(adaref.ShapeError, match=r"shape \(B, 2\)"):
        emb(np.array([0, 1]))
    with pytest.raises(TypeError, match="integers"):
        emb(np.array([[0.0, 1.0]]))


def test_float32_modules_stay_float32():
    rng = np.random.default_rng(0)
    lin = Linear(3, 2, rng=rng, dtype=np.float32)
    emb = Embedding([4], dim=3, rng=rng, dtype=np.float32)
    y = lin(emb(np.array([[1], [2]])))
    assert y.dtype == np.float32
    y.sum().backward()
    assert lin.weight.grad.dtype == np.float32 and emb.weight.grad.dtype == np.float32


def test_activation_by_name():
    x = Tensor(np.array([-1.0, 1.0]))
    np.testing.assert_array_equal(Activation("linear")(x).data, x.data)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        Activation("swish")


@dataclass(frozen=True)
class _Cfg(Config):
    k: int = 3
    eps: float = 0.01
    name: str = "paper"


def test_config_rejects_unknown_keys_and_wrong_types():
    assert _Cfg.from_dict({"k": 2, "eps": 1}).eps == 1.0
    with pytest.raises(ConfigError, match="unknown key 'kk'"):
        _Cfg.from_dict({"kk": 2})
    with pytest.raises(ConfigError, match="key 'k' expects int, got 2.5"):
        _Cfg.from_dict({"k": 2.5})
    with pytest.raises(ConfigError, match="key 'k' expects int, got True"):
        _Cfg.from_dict({"k": True})
    cfg = _Cfg()
    with pytest.raises(Exception):
        cfg.k = 4
    assert cfg.replace(k=1).k == 1 and cfg.to_dict() == {"k": 3, "eps": 0.01, "name": "paper"}
