"""Transforms, vocabularies and the id layout of both presets."""
import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adaref.data import load
from adaref.data.config import DataOptions, preset_options
from adaref.data.transforms import authors_log, bucketize, quantile_edges, winners_log
from adaref.data.vocab import FieldVocab, KeyCounter


@given(st.lists(st.integers(-10**6, 10**12), min_size=1, max_size=50))
def test_numeric_transforms_match_their_formulas(values):
    v = np.array(values, dtype=np.int64)
    assert winners_log(v).tolist() == [math.floor(math.log(x) ** 2) if x > 2 else x for x in values]
    assert authors_log(v).tolist() == [math.floor(math.log(x * x + 1)) for x in values]


@given(st.lists(st.integers(-50, 50), min_size=1, max_size=200), st.integers(2, 12))
def test_quantile_bins_are_monotone_and_balanced(values, n_bins):
    keys, counts = np.unique(np.array(values), return_counts=True)
    edges = quantile_edges(keys, counts, n_bins)
    assert len(edges) <= n_bins - 1 and np.all(np.diff(edges) > 0)
    bins = bucketize(np.array(values), edges)
    order = np.argsort(values, kind="stable")
    assert np.all(np.diff(bins[order]) >= 0)  # monotone in the value
    if len(keys) == len(values):  # no ties: every bin holds at most ceil(n / n_bins) + 1 values
        assert np.bincount(bins).max() <= math.ceil(len(values) / n_bins) + 1


@given(st.lists(st.lists(st.integers(0, 30), max_size=40), min_size=1, max_size=6))
def test_key_counter_matches_unique_counts(chunks):
    c = KeyCounter(merge_floor=4)
    for ch in chunks:
        c.add(np.array(ch, dtype=np.int64))
    keys, counts = c.result()
    flat = np.array([x for ch in chunks for x in ch], dtype=np.int64)
    k2, c2 = np.unique(flat, return_counts=True)
    assert keys.tolist() == k2.tolist() and counts.tolist() == c2.tolist()


def test_vocab_ids_threshold_oov_and_missing():
    keys, counts = np.array([10, 20, 30]), np.array([5, 1, 2])
    v = FieldVocab.categorical("C", keys, counts, min_count=2)
    assert v.size == 3  # OOV + {10, 30}
    ids = v.encode(np.array([10, 20, 30, 99, 10]), np.array([False, False, False, False, True]))
    assert ids.tolist() == [1, 0, 2, 0, 0]
    n = FieldVocab.categorical("I", keys, counts, min_count=2, missing_own_id=True)
    assert n.size == 4 and n.encode(np.array([30, 0]), np.array([False, True])).tolist() == [3, 1]


def criteo_file(tmp_path, rows):
    lines = []
    for label, i1, c1 in rows:
        ints = [i1] + ["1"] * 12
        lines.append("\t".join([label] + ints + [c1] + ["0000000a"] * 25))
    p = tmp_path / "c.txt"
    p.write_text("\n".join(lines) + "\n")
    return str(p)


def test_presets_differ_as_documented(tmp_path):
    # 10 lines; with upstream's options and the positional split, lines 1-8 are train
    # (the upstream preset's own interleaved split trains on positions 0-800 of every
    # 1,000 lines, i.e. all of a 10-line file: tested in test_upstream_split_is_interleaved).
    rows = [("0", "", "aaaaaaaa")] * 3 + [("1", "100", "aaaaaaaa")] * 3 + [("0", "-3", "bbbbbbbb")] * 2 \
        + [("1", "5", "cccccccc"), ("0", "", "")]
    p = criteo_file(tmp_path, rows)
    over = {"transform.rare_threshold": 2}
    paper = load("criteo", input=p, preset="paper", out=str(tmp_path / "p"), overrides=over,
                 options=None)
    up = load("criteo", input=p, preset="upstream", out=str(tmp_path / "u"),
              overrides={"transform.rare_threshold": 1, "split.kind": "positional"})
    assert paper.manifest["oov_embedding"] == "learned" and up.manifest["oov_embedding"] == "zero"
    assert len(paper.field_names) == 39 and len(up.field_names) == 38 and "I13" not in up.field_names
    assert up.splits["train"].tolist() == list(range(8)) and up.splits["val"].tolist() == []
    # upstream: missing I1 is read as 0 -> floor(ln(1)) = 0, the same level as a zero
    up_i1 = np.asarray(up.ids[:, 0])
    assert up_i1[0] == up_i1[1] == up_i1[2] != 0
    # -3 and 3 would share a level under authors_log; -3 is kept (count 2 > 1)
    assert up_i1[6] != 0
    # upstream: the last line (test, empty C1) and unseen C1 'cccccccc' (line 9, test) -> id 0
    assert up.ids[9, 12] == 0 and up.ids[8, 12] == 0
    # paper: missing I1 has its own id 1, not the OOV id 0; empty C1 is OOV 0
    assert set(np.asarray(paper.ids[[0, 1, 2, 9], 0]).tolist()) <= {1}
    assert paper.ids[9, 13] == 0


def test_rare_threshold_counts_training_split_only(tmp_path):
    # 'dddddddd' appears 3 times, all in the last 20 % (upstream test split): it must be OOV.
    rows = [("0", "1", "aaaaaaaa")] * 12 + [("1", "1", "dddddddd")] * 3
    p = criteo_file(tmp_path, rows)
    ds = load("criteo", input=p, preset="upstream", out=str(tmp_path / "u"),
              overrides={"transform.rare_threshold": 0, "split.kind": "positional"})
    assert ds.splits["test"].tolist() == [12, 13, 14]
    assert np.asarray(ds.ids[12:, 12]).tolist() == [0, 0, 0]
    assert ds.vocab_sizes[12] == 2  # OOV + aaaaaaaa
    vocab = ds.vocab()["fields"][12]
    assert vocab["values"] == ["aaaaaaaa"] and vocab["train_counts"] == [12]


def test_quantile_numeric_and_avazu_hour_options(tmp_path):
    # iPinYou paper preset with the prices kept: equal-frequency bins, missing-id 1, bins from id 2
    from adaref.data.samples import sample_paths
    ds = load("ipinyou", input=sample_paths("ipinyou"), out=str(tmp_path / "i"),
              overrides={"transform.rare_threshold": 2, "transform.n_bins": 4, "transform.drop_fields": []})
    j = ds.field_names.index("PayingPrice")
    ids = np.asarray(ds.ids[:, j])
    train = ids[ds.splits["train"]]
    assert ds.vocab_sizes[j] == 2 + 4 and ids.min() >= 2
    counts = np.bincount(train - 2)
    assert counts.min() > 0.1 * len(train)  # roughly equal-frequency on train
    # Avazu hour_of_day adds one field with values 0..23
    a = load("avazu", sample=True, out=str(tmp_path / "a"), overrides={"transform.avazu_hour": "hour_of_day"})
    assert a.field_names[0] == "hour_of_day" and len(a.field_names) == 22
    assert json.load(open(f"{a.path}/vocab.json"))["fields"][0]["values"] == ["0"]


@pytest.mark.parametrize("preset", ["paper", "upstream"])
def test_ipinyou_prices_are_not_features_by_default(tmp_path, preset):
    """The clearing price is known only after the auction and [38] uses neither price:
    both presets leave them out (F = 14); drop_fields=[] keeps all 16 columns."""
    ds = load("ipinyou", sample=True, out=str(tmp_path / "d"), preset=preset)
    assert len(ds.field_names) == 14
    assert not {"BiddingPrice", "PayingPrice", "BidID", "IsClick"} & set(ds.field_names)
    kept = load("ipinyou", sample=True, out=str(tmp_path / "k"), preset=preset,
                overrides={"transform.drop_fields": []})
    assert len(kept.field_names) == 16 and {"BiddingPrice", "PayingPrice"} <= set(kept.field_names)


def test_drop_fields_must_name_a_field(tmp_path):
    with pytest.raises(ValueError, match="drop_fields names 'I14'"):
        load("criteo", sample=True, out=str(tmp_path / "x"), overrides={"transform.drop_fields": ["I14"]})


def test_options_reject_unknown_keys_and_wrong_types():
    with pytest.raises(ValueError, match="unknown option 'n_bin'"):
        DataOptions.from_dict({"transform": {"n_bin": 3}})
    with pytest.raises(ValueError, match="unknown section 'splits'"):
        DataOptions.from_dict({"splits": {}})
    with pytest.raises(ValueError, match="'rare_threshold' expects int"):
        DataOptions.from_dict({"transform": {"rare_threshold": "20"}})
    with pytest.raises(ValueError, match="must be one of"):
        DataOptions.from_dict({"split": {"kind": "shuffled"}})
    o = preset_options("paper", "criteo")
    assert DataOptions.from_dict(o.to_dict()) == o


def test_upstream_split_is_interleaved_and_keeps_rare_numeric_levels(tmp_path):
    """The authors' criteo_split.py: position p of each block of 1,000 lines trains if
    p / 1000 <= 0.8; their numeric bins are never thresholded (only C1..C26 are)."""
    rows = [("0", str(3 + (i % 7) * 40), "aaaaaaaa") for i in range(2100)]
    p = criteo_file(tmp_path, rows)
    up = load("criteo", input=p, preset="upstream", out=str(tmp_path / "u"))
    assert up.manifest["options"]["split"]["kind"] == "interleaved"
    test = up.splits["test"]
    assert test.tolist() == list(range(801, 1000)) + list(range(1801, 2000))
    assert len(up.splits["train"]) == 801 + 801 + 100
    # with a threshold above every count, the numeric levels still get their own ids
    strict = load("criteo", input=p, preset="upstream", out=str(tmp_path / "s"),
                  overrides={"transform.rare_threshold": 10_000})
    levels = {int(np.floor(np.log(v * v + 1))) for v in (3 + 40 * np.arange(7))}   # authors_log
    assert np.all(np.asarray(strict.ids[:, 0]) != 0) and strict.vocab_sizes[0] == 1 + len(levels)
    assert np.all(np.asarray(strict.ids[:, 12]) == 0)               # C1 is thresholded
    paper = load("criteo", input=p, preset="paper", out=str(tmp_path / "p"),
                 overrides={"transform.rare_threshold": 10_000})
    assert np.all(np.asarray(paper.ids[:, 0]) == 0)                 # paper thresholds numerics too
