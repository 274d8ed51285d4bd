"""Foreign weights in and out (adaref.crosscheck.mapping) and the authors' TensorFlow
layout (adaref.crosscheck.upstream_tf): every op, every refusal, the PyTorch and the
TensorFlow conventions end to end."""
import json

import numpy as np
import pytest

from adaref.crosscheck.mapping import (Mapping, MappingError, Part, Rule, export_weights,
                                       identity_mapping, import_weights, torch_mapping)
from adaref.crosscheck.upstream_tf import (NUMERIC_BUCKETS, TF_EXPERT_ORDER, load_tf_dump,
                                           save_tf_dump, tf_field_order, tf_mapping)
from adaref.data import load
from adaref.model import AdaEnsemble, model_config

T = {"op": "transpose", "axes": [1, 0]}


def one(theirs, shape, ops=(), adaref="w"):
    return Mapping("m", (Rule(adaref, (Part(theirs, shape, tuple(ops)),)),))


def states_equal(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, ops, out_shape", [
    ((3, 2), [T], (2, 3)),
    ((2, 3, 4), [{"op": "transpose", "axes": [2, 0, 1]}], (4, 2, 3)),
    ((), [{"op": "reshape", "shape": [1]}], (1,)),
    ((2, 6), [{"op": "reshape", "shape": [3, 4]}], (3, 4)),
    ((4, 3), [{"op": "permute", "axis": 0, "index": [2, 0, 3, 1]}], (4, 3)),
    ((4, 3), [{"op": "permute", "axis": -1, "index": [1, 2, 0]}, T], (3, 4)),
    ((3, 2), [{"op": "rows", "index": [2, 0, 1]}], (3, 2)),
])
def test_every_op_round_trips(shape, ops, out_shape):
    m = one("a", shape, ops)
    a = np.random.default_rng(0).normal(size=shape)
    ours = m.to_adaref({"a": a})
    assert ours["w"].shape == out_shape == m.adaref_shapes()["w"]
    back = m.from_adaref(ours)
    assert np.array_equal(back["a"], a) and m.last_unrepresented == {}


def test_permute_and_rows_move_what_they_say():
    m = one("a", (3,), [{"op": "permute", "axis": 0, "index": [2, 0, 1]}])
    assert m.to_adaref({"a": np.array([10., 11., 12.])})["w"].tolist() == [12., 10., 11.]
    m = one("a", (2, 1), [{"op": "rows", "index": [-1, 1, 0], "fill": 7.0}])
    assert m.to_adaref({"a": np.array([[1.], [2.]])})["w"].ravel().tolist() == [7., 2., 1.]


def test_rows_leave_their_unused_rows_out_of_import_and_zero_on_export():
    m = one("a", (4, 2), [{"op": "rows", "index": [-1, 3, 0], "fill": 0.0}])
    a = np.arange(8.0).reshape(4, 2)
    ours = m.to_adaref({"a": a})
    assert ours["w"].tolist() == [[0, 0], [6, 7], [0, 1]]
    back = m.from_adaref(ours)["a"]
    assert back.tolist() == [[0, 1], [0, 0], [0, 0], [6, 7]]
    assert m.last_unrepresented == {"a": 4}          # their rows 1 and 2, 2 values each


def test_parts_concatenate_along_the_rule_axis():
    m = Mapping("cat", (Rule("w", (Part("a", (2, 3)), Part("b", (3, 2), (T,))), axis=0),))
    a, b = np.ones((2, 3)), np.arange(6.0).reshape(3, 2)
    ours = m.to_adaref({"a": a, "b": b})
    assert ours["w"].shape == (4, 3) and np.array_equal(ours["w"][2:], b.T)
    back = m.from_adaref(ours)
    assert np.array_equal(back["a"], a) and np.array_equal(back["b"], b)


def test_fused_qkv_is_sliced_into_three_parameters_and_packed_back():
    d, a = 4, 6
    rules = tuple(Rule(f"W{q}", (Part("attn/qkv/kernel", (d, 3 * a),
                                      ({"op": "slice", "axis": 1, "start": i * a, "stop": (i + 1) * a},)),))
                  for i, q in enumerate("qkv"))
    m = Mapping("fused", rules)
    packed = np.random.default_rng(1).normal(size=(d, 3 * a))
    ours = m.to_adaref({"attn/qkv/kernel": packed})
    assert [ours[k].shape for k in ("Wq", "Wk", "Wv")] == [(d, a)] * 3
    assert np.array_equal(ours["Wk"], packed[:, a:2 * a])
    back = m.from_adaref(ours)
    assert np.array_equal(back["attn/qkv/kernel"], packed) and m.last_unrepresented == {}


@pytest.mark.parametrize("ops, message", [
    ([{"op": "flip"}], r"'w' <- 'a' op 0: unknown op 'flip'; known: transpose"),
    ([{"op": "permute", "axis": 5, "index": [0, 1, 2]}],
     r"'w' <- 'a' op 0: permute axis 5 is not an axis of shape \(3, 2\)"),
    ([{"op": "transpose", "axes": [0, 0]}], r"'w' <- 'a' op 0: transpose axes \[0, 0\] do not permute"),
    ([{"op": "reshape", "shape": [5]}], r"'w' <- 'a' op 0: cannot reshape \(3, 2\) to \(5,\)"),
    ([{"op": "permute", "axis": 0, "index": [0, 0, 1]}],
     r"'w' <- 'a' op 0: permute index must be a permutation of 0..2"),
    ([{"op": "slice", "axis": 1, "start": 0, "stop": 3}], r"'w' <- 'a' op 0: slice \[0, 3\) is not inside axis 1"),
    ([{"op": "rows", "index": [0, 3]}], r"'w' <- 'a' op 0: rows index must be a list of row numbers in \[-1, 3\)"),
    ([{"op": "rows", "index": [1, -1, 1]}], r"'w' <- 'a' op 0: rows index uses a row of theirs twice"),
    ([{"op": "permute", "axis": 0, "index": [0.0, 1.0, 2.0]}], r"permute index must hold integers, got float64"),
    ([{"op": "rows", "index": ["0", "1"]}], r"rows index must hold integers, got <U1"),
    (["transpose"], r"part 'a': every op must be an object like \{\"op\": \"transpose\""),
])
def test_bad_ops_are_refused_naming_the_rule_and_array(ops, message):
    with pytest.raises(MappingError, match=message):
        one("a", (3, 2), ops)


def test_two_rules_for_one_parameter_and_parts_that_do_not_concatenate():
    with pytest.raises(MappingError, match=r"'w' is produced by rules 0 and 1"):
        Mapping("m", (Rule("w", (Part("a", (2,)),)), Rule("w", (Part("b", (2,)),))))
    with pytest.raises(MappingError, match=r"the parts of 'w' have shapes \[\(2, 3\), \(2, 4\)\]"):
        Mapping("m", (Rule("w", (Part("a", (2, 3)), Part("b", (2, 4)))),))
    with pytest.raises(MappingError, match=r"mapping 'm': rule for 'w' has no parts"):
        Mapping("m", (Rule("w", ()),))
    with pytest.raises(MappingError, match=r"'a' is given shapes \(2,\) and \(3,\)"):
        Mapping("m", (Rule("w", (Part("a", (2,)),)), Rule("v", (Part("a", (3,)),)))).their_shapes()


def test_import_refuses_missing_unused_and_misshapen_arrays_naming_them():
    m = one("dense/kernel", (3, 2), [T])
    with pytest.raises(MappingError, match=r"1 array\(s\) the mapping needs are not among theirs: dense/kernel"):
        m.to_adaref({})
    with pytest.raises(MappingError, match=r"1 of their arrays are used by no rule: dense/extra"):
        m.to_adaref({"dense/kernel": np.zeros((3, 2)), "dense/extra": np.zeros(1)})
    with pytest.raises(MappingError, match=r"their 'dense/kernel' has shape \(2, 3\), the rule for 'w' "
                                           r"expects \(3, 2\) \(the transpose would match\)"):
        m.to_adaref({"dense/kernel": np.zeros((2, 3))})
    with pytest.raises(MappingError, match=r"has shape \(4, 2\), the rule for 'w' expects \(3, 2\)$"):
        m.to_adaref({"dense/kernel": np.zeros((4, 2))})


def test_export_refuses_unmapped_missing_misshapen_and_double_writes():
    m = one("a", (3,))
    with pytest.raises(MappingError, match=r"adaref parameter\(s\) extra are mapped by no rule"):
        m.from_adaref({"w": np.zeros(3), "extra": np.zeros(1)})
    with pytest.raises(MappingError, match=r"adaref arrays lack w"):
        m.from_adaref({})
    with pytest.raises(MappingError, match=r"adaref 'w' has shape \(4,\), the rule gives \(3,\)"):
        m.from_adaref({"w": np.zeros(4)})
    twice = Mapping("m", (Rule("w", (Part("a", (3,)),)), Rule("v", (Part("a", (3,)),))))
    with pytest.raises(MappingError, match=r"their 'a' is written twice \(by 'v' and an earlier rule\)"):
        twice.from_adaref({"w": np.zeros(3), "v": np.zeros(3)})


def test_import_weights_refuses_a_model_parameter_no_rule_covers():
    model = AdaEnsemble(model_config("paper", dim=4, num_layers=2), [5, 7, 3], rng=np.random.default_rng(0))
    full = identity_mapping(model)
    partial = Mapping("partial", tuple(r for r in full.rules if r.adaref != "estimators.1.linear.bias"))
    arrays = {k: v for k, v in model.state_dict().items() if k != "estimators.1.linear.bias"}
    with pytest.raises(MappingError, match=r"1 adaref parameter\(s\) are mapped by no rule: estimators.1.linear.bias"):
        import_weights(model, arrays, partial)
    extra = Mapping("extra", full.rules + (Rule("nowhere.W", (Part("x", (2,)),)),))
    with pytest.raises(MappingError, match=r"rule\(s\) for nowhere.W, which the model does not have"):
        import_weights(model, {**model.state_dict(), "x": np.zeros(2)}, extra)
    bias = "estimators.1.linear.bias"
    wrong = Mapping("wrong", tuple(r if r.adaref != bias else Rule(bias, (Part(bias, (2,)),)) for r in full.rules))
    with pytest.raises(MappingError, match=r"mapping 'wrong': estimators.1.linear.bias comes out \(2,\), "
                                           r"the model's is \(1,\)"):
        import_weights(model, {**model.state_dict(), bias: np.zeros(2)}, wrong)


def test_json_round_trip_and_load_errors(tmp_path):
    m = Mapping("demo", (Rule("w", (Part("a", (3, 2), (T, {"op": "rows", "index": np.array([1, -1]), "fill": 0.0})),
                                    Part("b", (4, 3))), axis=0),
                         Rule("tau", (Part("t", (), ({"op": "reshape", "shape": [1]},)),))))
    doc = json.loads(json.dumps(m.to_json()))                # the ndarray index becomes a list
    back = Mapping.from_json(doc)
    assert back.to_json() == m.to_json() and back.adaref_shapes() == {"w": (6, 3), "tau": (1,)}
    arrays = {"a": np.arange(6.0).reshape(3, 2), "b": np.ones((4, 3)), "t": np.array(2.0)}
    assert all(np.array_equal(back.to_adaref(arrays)[k], v) for k, v in m.to_adaref(arrays).items())
    m.save(tmp_path / "m.json")
    assert Mapping.load(tmp_path / "m.json").to_json() == m.to_json()
    plain = one("a", (3, 2), [{"op": "rows", "index": [2, -1, 0]}, T])
    assert Mapping.from_json(json.loads(json.dumps(plain.to_json()))) == plain
    with pytest.raises(MappingError, match=r"nope.json: cannot read the mapping"):
        Mapping.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(MappingError, match=r"bad.json: not JSON"):
        Mapping.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"format": "something/1"}')
    with pytest.raises(MappingError, match=r"other.json: not a mapping \(expected \"format\": "
                                           r"\"adaref.crosscheck.mapping/1\"\)"):
        Mapping.load(tmp_path / "other.json")
    (tmp_path / "rules.json").write_text(json.dumps({"format": "adaref.crosscheck.mapping/1",
                                                     "rules": [{"adaref": "w"}]}))
    with pytest.raises(MappingError, match=r"rules.json: malformed rule \(KeyError"):
        Mapping.load(tmp_path / "rules.json")


# ---------------------------------------------------------------------------------
# the PyTorch convention
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize("config", [model_config("paper", dim=4, num_layers=2), model_config("upstream", dim=4)],
                         ids=["paper", "upstream"])
def test_torch_mapping_export_then_import_is_bit_exact(config):
    sizes = [5, 7, 3, 4]
    model = AdaEnsemble(config, sizes, rng=np.random.default_rng(0))
    mapping = torch_mapping(config, sizes)
    theirs = export_weights(model, mapping)
    assert theirs["layers.0.experts.conv.Wc"].shape == model.layers[0].experts.conv.Wc.shape[::-1]
    assert np.array_equal(theirs["layers.0.gate.reduce.weight"], model.layers[0].gate.reduce.weight.data.T)
    fresh = AdaEnsemble(config, sizes, rng=np.random.default_rng(1))
    assert not states_equal(fresh.state_dict(), model.state_dict())
    import_weights(fresh, theirs, mapping)
    assert states_equal(fresh.state_dict(), model.state_dict())
    assert mapping.last_unrepresented == {}


# ---------------------------------------------------------------------------------
# the authors' TensorFlow model
# ---------------------------------------------------------------------------------
F, D = 38, 16
# the layout of a dump: structural name -> shape (Criteo, F = 38, D = 16), written out
LAYER = {"gate/hidden/kernel": (608, 38), "gate/hidden/bias": (38,), "gate/proj/kernel": (38, 16),
         "gate/proj/bias": (16,), "gate/expert_embedding": (5, 16), "gate/temperature": (),
         "gated_dense/dense/kernel": (608, 608), "gated_dense/dense/bias": (608,),
         "gated_dense/g1/kernel": (608, 38), "gated_dense/g1/bias": (38,),
         "gated_dense/g2/kernel": (38, 608), "gated_dense/g2/bias": (608,),
         "cross/kernel": (608, 608), "cross/bias": (608,), "poly/kernel": (608, 608),
         "cnn/embed/kernel": (608, 19), "cnn/embed/bias": (19,), "cnn/conv/kernel": (4, 1, 16),
         "cnn/conv/bias": (16,), "cnn/out/kernel": (128, 608), "cnn/out/bias": (608,),
         **{f"mha/{q}/kernel": (16, 8) for q in "qkv"}, **{f"mha/{q}/bias": (8,) for q in "qkvo"},
         "mha/o/kernel": (8, 8), "mha/inorm/gamma": (8,), "mha/inorm/beta": (8,),
         "mha/out/kernel": (304, 608), "mha/out/bias": (608,),
         "estimator/kernel": (608, 1), "estimator/bias": (1,)}
EXIT = {"exit_gate/hidden/kernel": (608, 38), "exit_gate/hidden/bias": (38,), "exit_gate/proj/kernel": (38, 16),
        "exit_gate/proj/bias": (16,), "exit_gate/expert_embedding": (4, 16), "exit_gate/temperature": ()}
LAYOUT = {**{f"L{l}/{k}": s for l in range(4) for k, s in LAYER.items()}, **EXIT}
# TF positions of two fields (sorted by name + "_embedding": C10..C19, C1, C20..C26, C2,
# C3..C9, I10_bin, I11_bin, I12_bin, I1_bin, ..., I9_bin); adaref keeps I1..I12, C1..C26
TF_POS = {"C1": 10, "I1": 29, "C10": 0, "I9": 37}
ADA_POS = {"C1": 12, "I1": 0, "C10": 21, "I9": 8}


def randomise(model, seed):
    """Every parameter random (biases, gains and tau included); OOV rows stay zero."""
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        p.data[...] = rng.normal(scale=0.1, size=p.shape) + (1.0 if name.endswith(("tau", "gamma")) else 0.0)
    model.embedding.weight.data[model.embedding.offsets[:-1]] = 0.0
    return model


def first_appearance(ds, f):
    """Kept ids of field f in order of first appearance in the training split (plain loop)."""
    order, seen = [], set()
    for i in np.asarray(ds.ids[ds.splits["train"], f]).tolist():
        if i != 0 and i not in seen:
            seen.add(i)
            order.append(i)
    return order


def numeric_bins(ds, name):
    entry = next(e for e in ds.vocab()["fields"] if e["name"] == name)
    return [int(v.split()[1]) for v in entry["values"]]       # "level b" -> b, for ids 1, 2, ...


@pytest.fixture(scope="module")
def tf(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tf") / "criteo-upstream")
    ds = load("criteo", sample=True, preset="upstream", out=out)
    model = randomise(AdaEnsemble(model_config("upstream", dim=D), ds.vocab_sizes, rng=np.random.default_rng(0)), 1)
    mapping = tf_mapping(model, out)
    return ds, out, model, mapping, export_weights(model, mapping)


def test_tf_dump_has_the_layout_names_and_shapes(tf):
    ds, _, _, mapping, dump = tf
    shapes = {k: v.shape for k, v in dump.items()}
    assert len(LAYOUT) == 146 and sum(int(np.prod(s)) for s in LAYOUT.values()) == 5_853_979
    assert {k: s for k, s in shapes.items() if not k.startswith("emb/")} == LAYOUT
    emb = {k: s for k, s in shapes.items() if k.startswith("emb/")}
    assert emb == {f"emb/{n}": ((NUMERIC_BUCKETS if n.startswith("I") else v - 1), D)
                   for n, v in zip(ds.field_names, ds.vocab_sizes)}
    assert emb["emb/C1"] == (77, 16) and emb["emb/I1"] == (64, 16)
    # unseen numeric bins are the only values export cannot fill
    assert set(mapping.last_unrepresented) == {f"emb/I{i}" for i in range(1, 13)}
    assert mapping.last_unrepresented["emb/I1"] == (64 - len(numeric_bins(ds, "I1"))) * D


def test_tf_export_then_import_is_bit_exact_and_the_same_function(tf, tmp_path):
    ds, out, model, mapping, dump = tf
    fresh = AdaEnsemble(model_config("upstream", dim=D), ds.vocab_sizes, rng=np.random.default_rng(5))
    import_weights(fresh, dump, mapping)
    assert states_equal(fresh.state_dict(), model.state_dict())
    ids = np.asarray(ds.ids[:300])
    assert np.array_equal(fresh.eval()(ids).prob.data, model.eval()(ids).prob.data)
    # through a float32 file, and through the mapping's JSON
    save_tf_dump(tmp_path / "dump.npz", dump)
    loaded = load_tf_dump(tmp_path / "dump.npz")
    assert loaded.keys() == dump.keys() and all(a.dtype == np.float32 for a in loaded.values())
    again = Mapping.from_json(json.loads(json.dumps(mapping.to_json())))
    import_weights(fresh, loaded, again)
    assert all(np.array_equal(fresh.state_dict()[k], v.astype(np.float32).astype(np.float64))
               for k, v in model.state_dict().items())


def test_tf_field_order_is_sorted_embedding_column_names(tf):
    ds = tf[0]
    order = tf_field_order(ds.field_names, ds.manifest["field_kinds"])
    names = [ds.field_names[i] for i in order]
    assert names[:12] == ["C10", "C11", "C12", "C13", "C14", "C15", "C16", "C17", "C18", "C19", "C1", "C20"]
    assert names[-12:] == ["I10", "I11", "I12", "I1", "I2", "I3", "I4", "I5", "I6", "I7", "I8", "I9"]
    assert all(names[TF_POS[n]] == n and ds.field_names[ADA_POS[n]] == n for n in TF_POS)


@pytest.mark.parametrize("theirs, adaref, group", [
    ("L0/cross/kernel", "layers.0.experts.cross.W", (D, D)),
    ("L1/poly/kernel", "layers.1.experts.pin.W", (D, D)),
    ("L2/mha/out/kernel", "layers.2.experts.mhsa.Wf", (8, D)),        # rows: f*P + p
    ("L3/gated_dense/dense/kernel", "layers.3.experts.dense.W", (D, D)),
])
def test_a_tf_field_position_lands_at_the_adaref_field(tf, theirs, adaref, group):
    ds, _, _, mapping, dump = tf
    g_in, g_out = group
    one_hot = np.zeros_like(dump[theirs])
    one_hot[TF_POS["C1"] * g_in + 3, TF_POS["I1"] * g_out + 5] = 1.0
    one_hot[TF_POS["I9"] * g_in + 1, TF_POS["C10"] * g_out + 2] = 2.0
    fresh = AdaEnsemble(model_config("upstream", dim=D), ds.vocab_sizes, rng=np.random.default_rng(2))
    got = import_weights(fresh, {**dump, theirs: one_hot}, mapping)[adaref]
    expect = np.zeros_like(got)
    expect[ADA_POS["C1"] * g_in + 3, ADA_POS["I1"] * g_out + 5] = 1.0
    expect[ADA_POS["I9"] * g_in + 1, ADA_POS["C10"] * g_out + 2] = 2.0
    assert np.array_equal(got, expect)


def test_tf_expert_rows_land_at_the_adaref_experts(tf):
    ds, out, model, mapping, dump = tf
    marked = dump["L2/gate/expert_embedding"].copy()
    marked[1] = 9.0                                            # TF row 1: Cross
    marked[2] = -9.0                                           # TF row 2: PolynomialInteraction
    got = mapping.to_adaref({**dump, "L2/gate/expert_embedding": marked})["layers.2.gate.embeddings"]
    names = model.config.moe.experts                           # dense, conv, mhsa, pin, cross
    assert np.all(got[names.index("cross")] == 9.0) and np.all(got[names.index("pin")] == -9.0)
    # another adaref order
    cfg = model_config("upstream", dim=4)
    cfg = cfg.replace(moe=cfg.moe.replace(experts=("mhsa", "cross", "conv", "pin", "dense")))
    other = AdaEnsemble(cfg, ds.vocab_sizes, rng=np.random.default_rng(0))
    m2 = tf_mapping(other, out)
    theirs = export_weights(other, m2)
    assert np.array_equal(theirs["L0/gate/expert_embedding"][[TF_EXPERT_ORDER.index(e) for e in cfg.moe.experts]],
                          other.layers[0].gate.embeddings.data)


def test_tf_embedding_rows_land_at_the_adaref_ids(tf):
    ds, _, _, mapping, dump = tf
    offsets = np.concatenate([[0], np.cumsum(ds.vocab_sizes)])
    marked = dict(dump)
    for name in ("C1", "C3", "I1", "I10"):
        marked[f"emb/{name}"] = np.arange(len(dump[f"emb/{name}"]), dtype=float)[:, None] + 1 + np.zeros(D)
    table = mapping.to_adaref(marked)["embedding.weight"]
    for name in ("C1", "C3"):                                 # TF row r: the r-th level to appear
        f = ds.field_names.index(name)
        order = first_appearance(ds, f)
        assert len(order) == ds.vocab_sizes[f] - 1
        got = table[offsets[f]:offsets[f + 1], 0]
        assert got[0] == 0 and all(got[i] == r + 1 for r, i in enumerate(order))
    for name in ("I1", "I10"):                                # TF row b: bin value b
        f = ds.field_names.index(name)
        got = table[offsets[f]:offsets[f + 1], 0]
        assert got[0] == 0 and got[1:].tolist() == [b + 1 for b in numeric_bins(ds, name)]


def test_the_tf_ordered_model_is_the_same_function(tf):
    """An adaref model laid out as TF is (fields in TF order, experts in TF order, ids =
    TF rows + 1) loaded straight from the dump, without the mapping's permutations,
    computes what the original does on the re-coded ids."""
    ds, _, model, mapping, dump = tf
    kinds = ds.manifest["field_kinds"]
    order = tf_field_order(ds.field_names, kinds)
    tf_names = [ds.field_names[a] for a in order]
    cfg = model_config("upstream", dim=D)
    prior = tuple(cfg.moe.expert_prior[cfg.moe.experts.index(e)] for e in TF_EXPERT_ORDER)
    cfg = cfg.replace(moe=cfg.moe.replace(experts=TF_EXPERT_ORDER, expert_prior=prior))
    sizes = [len(dump[f"emb/{n}"]) + 1 for n in tf_names]
    twin = AdaEnsemble(cfg, sizes, rng=np.random.default_rng(3))
    state = {r.adaref: dump[r.parts[0].theirs].reshape(model.state_dict()[r.adaref].shape)
             for r in mapping.rules if r.adaref != "embedding.weight"}
    state["embedding.weight"] = np.concatenate([np.vstack([np.zeros((1, D)), dump[f"emb/{n}"]]) for n in tf_names])
    twin.load_state_dict(state)

    ids = np.asarray(ds.ids[:400])
    recode = []
    for a in order:
        if kinds[a] == "numeric":
            lut = np.array([0] + [b + 1 for b in numeric_bins(ds, ds.field_names[a])])
        else:
            lut = np.zeros(ds.vocab_sizes[a], dtype=np.int64)
            lut[first_appearance(ds, a)] = np.arange(ds.vocab_sizes[a] - 1) + 1
        recode.append(lut[ids[:, a]])
    ids_tf = np.stack(recode, axis=1)
    mine, theirs = model.eval()(ids), twin.eval()(ids_tf)
    np.testing.assert_allclose(theirs.prob.data, mine.prob.data, rtol=1e-10, atol=1e-13)
    assert np.array_equal(theirs.routing.exit_depth, mine.routing.exit_depth)


def test_tf_mapping_refuses_a_model_that_is_not_upstream(tf):
    ds, out = tf[0], tf[1]
    paper = AdaEnsemble(model_config("paper", dim=4), ds.vocab_sizes, rng=np.random.default_rng(0))
    with pytest.raises(MappingError, match=r"not the upstream structure.*embedding_oov is 'learned' "
                                           r"\(upstream: 'zero'\).*moe.norm is 'layernorm'.*gate.temperature"):
        tf_mapping(paper, out)
    cfg = model_config("upstream", dim=4)
    normed = AdaEnsemble(cfg.replace(moe=cfg.moe.replace(norm="layernorm")), ds.vocab_sizes,
                         rng=np.random.default_rng(0))
    with pytest.raises(MappingError, match=r"moe.norm is 'layernorm' \(upstream: 'none'\)$"):
        tf_mapping(normed, out)
    four = AdaEnsemble(cfg.replace(moe=cfg.moe.replace(experts=("dense", "conv", "mhsa", "pin"),
                                                       expert_prior=())), ds.vocab_sizes, rng=np.random.default_rng(0))
    with pytest.raises(MappingError, match=r"moe.experts is \('dense', 'conv', 'mhsa', 'pin'\)"):
        tf_mapping(four, out)
    opts = AdaEnsemble(cfg.replace(expert_options={"mhsa": {"heads": 2}}), ds.vocab_sizes,
                       rng=np.random.default_rng(0))
    with pytest.raises(MappingError, match=r"expert 'mhsa' heads is 2 \(upstream: 4\)"):
        tf_mapping(opts, out)


def test_tf_mapping_refuses_data_that_is_not_upstream_or_does_not_fit(tf, tmp_path):
    ds, out = tf[0], tf[1]
    cfg = model_config("upstream", dim=4)
    model = AdaEnsemble(cfg, ds.vocab_sizes, rng=np.random.default_rng(0))
    with pytest.raises(MappingError, match=r"not a prepared data directory"):
        tf_mapping(model, tmp_path)
    paper = load("criteo", sample=True, preset="paper", out=str(tmp_path / "paper"))
    with pytest.raises(MappingError, match=r"paper was prepared under preset 'paper'"):
        tf_mapping(AdaEnsemble(cfg, paper.vocab_sizes, rng=np.random.default_rng(0)), tmp_path / "paper")
    sizes = list(ds.vocab_sizes)
    sizes[14] += 1                                            # C3
    with pytest.raises(MappingError, match=r"differ for 1 field\(s\): C3 \(data 567, model 568\)"):
        tf_mapping(AdaEnsemble(cfg, sizes, rng=np.random.default_rng(0)), out)
    with pytest.raises(MappingError, match=r"has 38 fields, the model 37"):
        tf_mapping(AdaEnsemble(cfg, sizes[:37], rng=np.random.default_rng(0)), out)


def test_load_tf_dump_refuses_pickles_and_non_float_arrays(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with open(tmp_path / "pickled.npz", "wb") as fh:
        np.savez(fh, w=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"object array; refusing to unpickle"):
        load_tf_dump(tmp_path / "pickled.npz")
    np.savez(tmp_path / "ints.npz", w=np.zeros(3, dtype=np.int32))
    with pytest.raises(MappingError, match=r"non-float array\(s\) w \(int32\)"):
        load_tf_dump(tmp_path / "ints.npz")


def _edit_json(path, change):
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def _field(doc, name):
    return next(e for e in doc["fields"] if e["name"] == name)


@pytest.mark.parametrize("file, change, message", [
    ("manifest.json", lambda m: m.pop("field_kinds"), r"manifest.json lists no field_kinds for its 38 fields"),
    ("manifest.json", lambda m: m.update(field_kinds=m["field_kinds"][:5]), r"lists no field_kinds for its 38"),
    ("vocab.json", lambda v: _field(v, "I1")["values"].__setitem__(3, "three"),
     r"vocab.json field 'I1' has value 'three', not a bin level \('level b'\); was it prepared with "
     r"numeric_transform authors_log\?"),
    ("vocab.json", lambda v: _field(v, "I2")["values"].__setitem__(0, "level 64"),
     r"field 'I2' has bin value 64, outside the 64 buckets of the TensorFlow identity column"),
    ("vocab.json", lambda v: _field(v, "I2")["values"].__setitem__(0, "level -1"), r"has bin value -1, outside"),
    ("vocab.json", lambda v: _field(v, "C9").update(name="C9x"), r"vocab.json has no field 'C9'"),
    ("vocab.json", lambda v: _field(v, "C9").update(first_id=2),
     r"field 'C9' has first_id 2 and size 4 in vocab.json; the upstream layout is id 0 = OOV"),
    ("vocab.json", lambda v: _field(v, "C9").update(size=5), r"field 'C9' has first_id 1 and size 5"),
    ("vocab.json", lambda v: _field(v, "I1")["values"].pop(), r"field 'I1': vocab.json lists 10 values for 11 kept ids"),
])
def test_tf_mapping_refuses_a_damaged_upstream_data_directory(tf, tmp_path, file, change, message):
    """Each refusal of the data directory's field kinds and vocabulary, on a copy of a
    real upstream directory with one thing changed by hand."""
    import shutil
    ds, out, model = tf[0], tf[1], tf[2]
    copy = tmp_path / "data"
    shutil.copytree(out, copy)
    _edit_json(copy / file, change)
    with pytest.raises(MappingError, match=message):
        tf_mapping(model, copy)


def test_tf_mapping_refuses_kept_ids_the_training_split_never_shows(tf, monkeypatch):
    import adaref.crosscheck.upstream_tf as up
    ds, out, model = tf[0], tf[1], tf[2]
    real = up.train_first_appearance

    def drops_c9_id_2(ds, fields, chunk=1 << 20):
        order = real(ds, fields, chunk)
        c9 = ds.field_names.index("C9")
        order[c9] = order[c9][order[c9] != 2]
        return order
    monkeypatch.setattr(up, "train_first_appearance", drops_c9_id_2)
    with pytest.raises(MappingError, match=r"field 'C9': 1 kept id\(s\) never occur in the training split of .* "
                                           r"\(e.g. id 2\); the data is inconsistent, prepare it again"):
        tf_mapping(model, out)


def test_train_first_appearance_reads_in_chunks_and_stops_early(tf):
    """Chunked reading gives the same order as one chunk; a field whose ids have all been
    seen is skipped, and reading stops once every field's are."""
    from adaref.crosscheck.upstream_tf import train_first_appearance
    ds = tf[0]
    for names in (("C6", "C20", "C22"), ("C9", "C3", "C20")):    # every id of these shows / C9's 0 never does
        fields = [ds.field_names.index(n) for n in names]
        whole = train_first_appearance(ds, fields)
        for chunk in (7, 100, 1000):
            parts = train_first_appearance(ds, fields, chunk=chunk)
            assert all(np.array_equal(parts[f], whole[f]) for f in fields), chunk
        c20 = ds.field_names.index("C20")
        assert sorted(whole[c20].tolist()) == list(range(ds.vocab_sizes[c20]))


def test_tf_mapping_refuses_what_it_has_no_counterpart_for(tf, monkeypatch):
    """Guards for models the structure check cannot exclude: a parameter with no TF name
    and a field axis that is not F * group."""
    import adaref.crosscheck.upstream_tf as up
    ds, out, model = tf[0], tf[1], tf[2]
    with pytest.raises(MappingError, match=r"tf_mapping: expected an adaref AdaEnsemble, got object"):
        tf_mapping(object(), out)
    real = model.named_parameters
    extra = next(iter(model.parameters()))
    monkeypatch.setattr(model, "named_parameters", lambda: [*real(), ("layers.0.norm.gain", extra)])
    with pytest.raises(MappingError, match=r"no TensorFlow counterpart is known for layers.0.norm.gain"):
        tf_mapping(model, out)
    with pytest.raises(MappingError, match=r"w has shape \(5, 3\); axis 0 should run over F\*D = 4 \(field-major\)"):
        up._rule("w", "t/w", (5, 3), (5, 3), {0: "D"}, {"D": [0, 1, 2, 3]})
