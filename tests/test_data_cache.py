"""Splits (exact sizes, seeded, byte-identical) and the cache (manifest, reuse, rebuild, atomicity)."""
import hashlib
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adaref.data import DataFormatError, load, prepare
from adaref.data.config import SplitOptions, preset_options
from adaref.data.splits import BLOCK, SplitAssigner, split_sizes


def criteo_text(n, seed=0):
    rng = np.random.Generator(np.random.PCG64(seed))
    lines = []
    for i in range(n):
        ints = [str(x) if x >= 0 else "" for x in rng.integers(-1, 50, 13)]
        cats = [f"{x:08x}" for x in rng.integers(0, 6, 26)]
        lines.append("\t".join([str(int(rng.random() < 0.3))] + ints + cats))
    return "\n".join(lines) + "\n"


@pytest.fixture
def small_criteo(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text(criteo_text(300))
    return str(p)


@given(st.integers(1, 3 * BLOCK), st.integers(0, 2**32))
def test_random_split_sizes_are_exact(n, seed):
    a = SplitAssigner(SplitOptions(seed=seed), [n])
    idx = np.arange(n)
    codes = np.concatenate([a.codes_for(idx[i:i + 40_000]) for i in range(0, n, 40_000)])
    assert tuple(np.bincount(codes, minlength=3).tolist()) == split_sizes(n, (0.7, 0.1, 0.2))


def test_random_split_is_seeded_and_uniform():
    n = 20_000
    codes = [SplitAssigner(SplitOptions(seed=s), [n]).codes_for(np.arange(n)) for s in (1, 1, 2)]
    assert codes[0].tobytes() == codes[1].tobytes() and codes[0].tobytes() != codes[2].tobytes()
    # train fraction stays near 0.7 in every tenth of the file (no positional bias)
    parts = codes[0].reshape(10, -1)
    assert np.all(np.abs((parts == 0).mean(axis=1) - 0.7) < 0.03)


def test_by_file_split():
    a = SplitAssigner(SplitOptions(kind="by_file"), [3, 2])
    assert a.codes_for(np.arange(5)).tolist() == [0, 0, 0, 2, 2]
    with pytest.raises(ValueError, match="at least two input files"):
        SplitAssigner(SplitOptions(kind="by_file"), [5])


def test_same_seed_gives_byte_identical_arrays_whatever_the_chunk_size(tmp_path, small_criteo):
    a = load("criteo", input=small_criteo, out=str(tmp_path / "a"), seed=7)
    b = load("criteo", input=small_criteo, out=str(tmp_path / "b"), seed=7, overrides={"read.chunk_bytes": 1024})
    c = load("criteo", input=small_criteo, out=str(tmp_path / "c"), seed=8)
    for name in ("ids.npy", "labels.npy", "split.npy", "vocab.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "split.npy").read_bytes() != (tmp_path / "c" / "split.npy").read_bytes()
    assert {k: len(v) for k, v in a.splits.items()} == {"train": 210, "val": 30, "test": 60}
    assert a.manifest["options"]["read"]["chunk_bytes"] != b.manifest["options"]["read"]["chunk_bytes"]
    del c


def test_manifest_contents(tmp_path, small_criteo):
    ds = load("criteo", input=small_criteo, out=str(tmp_path / "o"))
    m = ds.manifest
    src = m["sources"][0]
    assert src["size"] == os.path.getsize(small_criteo)
    assert src["sha256"] == hashlib.sha256(open(small_criteo, "rb").read()).hexdigest()
    assert m["options"] == preset_options("paper", "criteo").to_dict()
    assert m["field_names"][:2] == ["I1", "I2"] and len(m["vocab_sizes"]) == 39
    assert m["rows"]["encoded"] == 300 and m["rows"]["skipped"]["total"] == 0
    labels = np.asarray(ds.labels)
    assert m["positive_rate"] == pytest.approx(labels.mean(), abs=1e-6)
    assert m["splits"]["test"]["positives"] == int(labels[ds.splits["test"]].sum())
    assert ds.ids.dtype == np.int32 and ds.labels.dtype == np.float32
    assert isinstance(ds.ids, np.memmap)
    assert np.all(np.asarray(ds.ids) < np.array(ds.vocab_sizes)) and np.asarray(ds.ids).min() >= 0


def test_cache_reused_and_rebuilt_on_any_change(tmp_path, small_criteo):
    out = str(tmp_path / "o")
    opts = preset_options("paper", "criteo")
    m1 = prepare("criteo", small_criteo, opts, out)
    stamp = os.stat(os.path.join(out, "ids.npy")).st_mtime_ns
    m2 = prepare("criteo", small_criteo, opts, out)
    assert m1["reused"] is False and m2["reused"] is True
    assert os.stat(os.path.join(out, "ids.npy")).st_mtime_ns == stamp
    m3 = prepare("criteo", small_criteo, opts.with_values({"transform.n_bins": 5}), out)
    assert m3["reused"] is False and m3["cache_key"] != m1["cache_key"]
    with open(small_criteo, "a") as f:
        f.write(criteo_text(1, seed=9))
    m4 = prepare("criteo", small_criteo, opts.with_values({"transform.n_bins": 5}), out)
    assert m4["reused"] is False and m4["rows"]["encoded"] == 301


def test_failed_rebuild_leaves_the_old_cache_intact(tmp_path, small_criteo):
    out = tmp_path / "o"
    opts = preset_options("paper", "criteo")
    prepare("criteo", small_criteo, opts, str(out))
    before = (out / "manifest.json").read_bytes()
    with open(small_criteo, "a") as f:
        f.write("1\tnot-a-number" + "\t" * 38 + "\n")
    with pytest.raises(DataFormatError, match=r"c.txt:301: field I1: expected an integer, got 'not-a-number'"):
        prepare("criteo", small_criteo, opts, str(out))
    assert (out / "manifest.json").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["c.txt", "o"]  # no temporary directory left behind


def test_gzip_input_gives_the_same_encoding(tmp_path, small_criteo):
    import gzip
    gz = tmp_path / "c.txt.gz"
    gz.write_bytes(gzip.compress(open(small_criteo, "rb").read()))
    a = load("criteo", input=small_criteo, out=str(tmp_path / "a"))
    b = load("criteo", input=str(gz), out=str(tmp_path / "b"))
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.split_codes, b.split_codes)
    assert b.manifest["sources"][0]["data_lines"] == 300


def test_never_replaces_a_directory_that_is_not_an_encoded_data_set(tmp_path, small_criteo):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="refusing to replace"):
        prepare("criteo", small_criteo, preset_options("paper", "criteo"), str(out))
    assert (out / "notes.txt").read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["c.txt", "mine"]


def test_two_builds_of_the_same_directory_both_land(tmp_path):
    from adaref.data.cache import BuildDir
    final = tmp_path / "d"
    a, b = BuildDir(str(final)), BuildDir(str(final))
    for build, text in ((a, "a"), (b, "b")):
        with open(os.path.join(build.path, "manifest.json"), "w") as f:
            f.write(text)
    a.commit()
    b.commit()
    assert (final / "manifest.json").read_text() == "b"
    assert sorted(os.listdir(tmp_path)) == ["d"]


def test_a_damaged_cache_is_reported_with_the_way_to_rebuild_it(tmp_path, small_criteo):
    """Opening reused arrays checks them against manifest.json: a truncated or reshaped
    array, or labels that are not 0/1, name the file and say how to rebuild."""
    out = str(tmp_path / "enc")
    ds = load("criteo", input=small_criteo, out=out)
    n, f = ds.ids.shape
    ids_path = os.path.join(out, "ids.npy")
    good = open(ids_path, "rb").read()
    open(ids_path, "wb").write(good[: len(good) // 2])
    with pytest.raises(DataFormatError, match=r"ids\.npy: the prepared data is damaged .*--rebuild"):
        load("criteo", input=small_criteo, out=out)
    np.save(ids_path, np.zeros((n - 1, f), np.int32))
    with pytest.raises(DataFormatError, match=rf"do not match manifest\.json \(ids \({n - 1}, {f}\).*"
                                              rf"the manifest says {n} rows of {f} fields"):
        load("criteo", input=small_criteo, out=out)
    open(ids_path, "wb").write(good)
    labels = np.load(os.path.join(out, "labels.npy"))
    labels[3] = np.nan
    np.save(os.path.join(out, "labels.npy"), labels)
    with pytest.raises(DataFormatError, match=r"labels\.npy: row 3 holds nan, not a 0/1 click"):
        load("criteo", input=small_criteo, out=out)
    assert load("criteo", input=small_criteo, out=out, rebuild=True).labels.shape == (n,)
