"""Readers: formats, .gz, CRLF, and every kind of bad input (strict and --on-bad-line skip)."""
import gzip
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adaref.data.__main__ import main
from adaref.data.config import ReadOptions
from adaref.data.readers import DataFormatError, RawReader
from adaref.data.schema import SCHEMAS

AVAZU_HEADER = SCHEMAS["avazu"].header
IPINYOU_HEADER = SCHEMAS["ipinyou"].header


def criteo_line(label="0", ints=None, cats=None):
    ints = ints if ints is not None else [str(i) for i in range(13)]
    cats = cats if cats is not None else [f"{i:08x}" for i in range(26)]
    return "\t".join([label] + list(ints) + list(cats))


def avazu_line(i=1, click="0"):
    return (f"{10**18 + i},{click},14102100,1005,0,1fbe01fe,f3845767,28905ebd,ecad2386,7801e8d9,07d7df22,"
            f"a99f214a,ddd2926e,44956a24,1,2,15706,320,50,1722,0,35,-1,79")


def ipinyou_line(click="0", tags='"10063,10006"'):
    return (f"910b91fb4652c453426dd1eb4ddf48df,277,121.32.131.*,216,217,2,9f29c106b1894764ef88815ff2d43e2a,"
            f"null,2578891183,468,60,OtherView,Na,7328,5,2259,{tags},{click}")


def write(tmp_path, name, text, mode="w"):
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, newline="")
    return str(p)


def read_all(paths, dataset, **opts):
    r = RawReader(paths, SCHEMAS[dataset], ReadOptions(**opts))
    recs = list(r)
    return r, recs


def test_criteo_values_missing_and_negative(tmp_path):
    ints = ["-2", ""] + ["7"] * 11
    cats = [""] + ["00ff00aa"] * 25
    p = write(tmp_path, "c.txt", criteo_line("1", ints, cats) + "\n" + criteo_line() + "\n")
    r, recs = read_all([p], "criteo")
    (rec,) = recs
    assert rec.labels.tolist() == [1.0, 0.0]
    assert rec.columns["I1"].values.tolist() == [-2, 0]
    assert rec.columns["I2"].missing.tolist() == [True, False]
    assert rec.columns["C1"].missing.tolist() == [True, False]
    assert rec.columns["C2"].values[0] == 0x00FF00AA
    assert r.lines_per_file == [2]


@given(st.lists(st.integers(-10**6, 10**9), min_size=1, max_size=30), st.sampled_from(["\n", "\r\n"]),
       st.booleans(), st.integers(1024, 4096))
def test_criteo_roundtrip_any_line_ending_gzip_and_chunk_size(tmp_path_factory, values, eol, gz, chunk):
    tmp = tmp_path_factory.mktemp("rt")
    lines = [criteo_line(str(v % 2), [str(v)] * 13) for v in values]
    data = (eol.join(lines) + eol).encode()
    p = tmp / "c.txt"
    p.write_bytes(gzip.compress(data) if gz else data)
    _, recs = read_all([str(p)], "criteo", chunk_bytes=chunk)
    got = np.concatenate([r.columns["I5"].values for r in recs]).tolist()
    assert got == values
    assert np.concatenate([r.data_index for r in recs]).tolist() == list(range(len(values)))


def test_last_line_without_newline_is_read(tmp_path):
    p = write(tmp_path, "c.txt", criteo_line() + "\n" + criteo_line("1"))
    _, recs = read_all([p], "criteo")
    assert sum(len(r.labels) for r in recs) == 2


def test_avazu_and_ipinyou_forms(tmp_path):
    pa = write(tmp_path, "a.csv", AVAZU_HEADER + "\r\n" + avazu_line(1, "1") + "\r\n" + avazu_line(2) + "\r\n")
    _, (rec,) = read_all([pa], "avazu")
    assert rec.labels.tolist() == [1.0, 0.0]
    assert rec.columns["C20"].values.tolist() == [-1, -1]
    assert rec.columns["hour"].values.tolist() == [14102100, 14102100]
    pi = write(tmp_path, "i.csv", IPINYOU_HEADER + "\n" + ipinyou_line("1") + "\n" + ipinyou_line(tags="null") + "\n")
    r, (rec,) = read_all([pi], "ipinyou")
    assert rec.labels.tolist() == [1.0, 0.0]
    assert rec.columns["UserTag"].missing.tolist() == [False, True]
    assert rec.columns["URL"].missing.tolist() == [True, True]
    assert r.token_tables["UserTag"].tokens == ["10006,10063"]  # sorted tag set


# -- bad input: one case per kind, strict message and the skip-mode reason -----------------------
BAD_CRITEO = [
    (criteo_line(ints=["1", "2", "3", "4", "abc"] + ["0"] * 8), "field I5: expected an integer, got 'abc'",
     "field I5: expected an integer"),
    (criteo_line(ints=["1.5"] + ["0"] * 12), "field I1: expected an integer, got '1.5'", "field I1: expected an integer"),
    (criteo_line(ints=["+5"] + ["0"] * 12), "field I1: expected an integer, got '+5'", "field I1: expected an integer"),
    (criteo_line(label="2"), "field label: expected a label 0 or 1, got '2'", "field label: expected a label 0 or 1"),
    (criteo_line(label=""), "field label: expected a label 0 or 1, got ''", "field label: expected a label 0 or 1"),
    (criteo_line(cats=["ABCDEF12"] + ["0" * 8] * 25), "field C1: expected 8 lowercase hex digits, got 'ABCDEF12'",
     "field C1: expected 8 lowercase hex digits"),
    (criteo_line(cats=["abc"] + ["0" * 8] * 25), "field C1: expected 8 lowercase hex digits, got 'abc'",
     "field C1: expected 8 lowercase hex digits"),
    ("\t".join(criteo_line().split("\t")[:39]), "expected 40 tab-separated fields, got 39 (one short: an unlabelled file, such as a Kaggle test set?)", "wrong number of fields"),
    (criteo_line() + "\t", "expected 40 tab-separated fields, got 41", "wrong number of fields"),
    ("", "empty line", "empty line"),
]


@pytest.mark.parametrize("bad,message,reason", BAD_CRITEO)
def test_bad_criteo_line_strict_and_skip(tmp_path, bad, message, reason):
    p = write(tmp_path, "c.txt", criteo_line() + "\n" + bad + "\n" + criteo_line("1") + "\n")
    with pytest.raises(DataFormatError) as e:
        read_all([p], "criteo")
    assert str(e.value) == f"{p}:2: {message}"
    r, recs = read_all([p], "criteo", on_bad_line="skip")
    assert np.concatenate([x.labels for x in recs]).tolist() == [0.0, 1.0]
    assert np.concatenate([x.data_index for x in recs]).tolist() == [0, 2]
    assert r.bad.counts == {reason: 1}
    assert r.bad.first == {reason: [f"{p}:2"]}


@pytest.mark.parametrize("raw,reason", [(b"\x00", "NUL byte"), (b"\xff\xfe", "undecodable bytes")])
def test_nul_and_undecodable_bytes(tmp_path, raw, reason):
    line = criteo_line().encode().replace(b"00000003", b"000" + raw + b"3")
    p = write(tmp_path, "c.txt", criteo_line().encode() + b"\n" + line + b"\n")
    with pytest.raises(DataFormatError, match=rf":2: {reason}"):
        read_all([p], "criteo")
    r, _ = read_all([p], "criteo", on_bad_line="skip")
    assert r.bad.counts == {reason: 1}


def test_skip_counts_several_reasons_and_keeps_first_lines(tmp_path):
    lines = [criteo_line()] + [criteo_line(label="7")] * 7 + ["x"] * 2
    p = write(tmp_path, "c.txt", "\n".join(lines) + "\n")
    r, _ = read_all([p], "criteo", on_bad_line="skip", report_lines=3)
    assert r.bad.counts == {"field label: expected a label 0 or 1": 7, "wrong number of fields": 2}
    assert r.bad.first["field label: expected a label 0 or 1"] == [f"{p}:{i}" for i in (2, 3, 4)]
    assert r.bad.total == 9


def test_avazu_bad_hour_and_bad_hex(tmp_path):
    bad_hour = avazu_line().replace("14102100", "14132100")
    p = write(tmp_path, "a.csv", AVAZU_HEADER + "\n" + bad_hour + "\n")
    with pytest.raises(DataFormatError, match=r"a.csv:2: field hour: expected an hour YYMMDDHH, got '14132100'"):
        read_all([p], "avazu")
    p = write(tmp_path, "b.csv", AVAZU_HEADER + "\n" + avazu_line().replace("1fbe01fe", "1fbe01f") + "\n")
    with pytest.raises(DataFormatError, match=r"b.csv:2: field site_id: expected 8 lowercase hex digits"):
        read_all([p], "avazu")


def test_ipinyou_wrong_field_count_and_bad_quoting_in_quoted_csv(tmp_path):
    p = write(tmp_path, "i.csv", IPINYOU_HEADER + "\n" + ipinyou_line(tags="10063,10006") + "\n")
    with pytest.raises(DataFormatError, match=r"i.csv:2: expected 18 comma-separated fields, got 19"):
        read_all([p], "ipinyou")
    p = write(tmp_path, "j.csv", IPINYOU_HEADER + "\n" + ipinyou_line() + "\n" + ipinyou_line(tags='"10063"x') + "\n")
    with pytest.raises(DataFormatError, match=r"j.csv:3: malformed CSV quoting"):
        read_all([p], "ipinyou")
    r, recs = read_all([p], "ipinyou", on_bad_line="skip")
    assert r.bad.counts == {"malformed CSV quoting": 1} and len(recs[0].labels) == 1


@pytest.mark.parametrize("dataset,content,message,mode", [
    ("criteo", "", "f: empty file", "skip"),
    ("avazu", "", "f: empty file", "skip"),
    ("avazu", criteo_line() + "\n", r"f:1: not an avazu file \(wrong header\)", "skip"),
    ("ipinyou", AVAZU_HEADER + "\n" + avazu_line() + "\n", r"f:1: not an ipinyou file \(wrong header\)", "skip"),
    ("criteo", AVAZU_HEADER + "\n" + avazu_line() + "\n", "f:1: expected 40 tab-separated fields, got 1", "error"),
])
def test_file_is_not_what_dataset_says(tmp_path, dataset, content, message, mode):
    p = write(tmp_path, "f", content)
    with pytest.raises(DataFormatError, match=message):
        read_all([p], dataset, on_bad_line=mode)


def test_cli_strict_error_exit_code_and_no_partial_cache(tmp_path, capsys):
    p = write(tmp_path, "c.txt", criteo_line() + "\n" + criteo_line(ints=["1", "2", "3", "4", "abc"] + ["0"] * 8) + "\n")
    out = tmp_path / "out"
    rc = main(["prepare", "--dataset", "criteo", "--input", p, "--out", str(out), "--quiet"])
    assert rc == 1
    assert f"{p}:2: field I5: expected an integer, got 'abc'" in capsys.readouterr().err
    assert not out.exists()
    assert [f for f in os.listdir(tmp_path) if f.startswith(".out")] == []
    rc = main(["prepare", "--dataset", "criteo", "--input", p, "--out", str(out), "--quiet", "--on-bad-line", "skip"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "skipped 1: field I5: expected an integer" in text and f"{p}:2" in text
    assert np.load(out / "labels.npy").shape == (1,)


def test_cli_skip_with_no_valid_line_fails(tmp_path, capsys):
    p = write(tmp_path, "c.txt", "a,b,c\n1,2,3\n")
    rc = main(["prepare", "--dataset", "criteo", "--input", p, "--out", str(tmp_path / "o"), "--quiet",
               "--on-bad-line", "skip"])
    assert rc == 1
    assert "no valid data line" in capsys.readouterr().err


def test_truncated_gzip_is_a_data_error(tmp_path):
    data = gzip.compress(("\n".join(criteo_line() for _ in range(200)) + "\n").encode())
    p = write(tmp_path, "c.txt.gz", data[: len(data) // 2])
    with pytest.raises(DataFormatError, match="c.txt.gz: cannot read"):
        read_all([p], "criteo")


_BAD_KINDS = {
    "int": lambda: criteo_line(ints=["x1"] + ["0"] * 12),
    "label": lambda: criteo_line(label="3"),
    "hex": lambda: criteo_line(cats=["zzzzzzzz"] + ["0" * 8] * 25),
    "short": lambda: "0\t1\t2",
}


@given(st.lists(st.one_of(st.integers(0, 10**6), st.sampled_from(sorted(_BAD_KINDS))), min_size=1, max_size=60),
       st.integers(1024, 3000))
def test_skip_keeps_exactly_the_good_lines_and_strict_stops_at_the_first_bad(tmp_path_factory, kinds, chunk):
    tmp = tmp_path_factory.mktemp("mix")
    lines = [criteo_line(ints=[str(k)] * 13) if isinstance(k, int) else _BAD_KINDS[k]() for k in kinds]
    p = tmp / "c.txt"
    p.write_text("\n".join(lines) + "\n")
    r, recs = read_all([str(p)], "criteo", on_bad_line="skip", chunk_bytes=chunk)
    good = [k for k in kinds if isinstance(k, int)]
    got = np.concatenate([x.columns["I3"].values for x in recs]).tolist() if recs else []
    assert got == good
    assert r.bad.total == len(kinds) - len(good)
    first_bad = next((i for i, k in enumerate(kinds) if not isinstance(k, int)), None)
    if first_bad is None:
        read_all([str(p)], "criteo", chunk_bytes=chunk)
    else:
        with pytest.raises(DataFormatError, match=rf"c.txt:{first_bad + 1}: "):
            read_all([str(p)], "criteo", chunk_bytes=chunk)


def test_a_directory_is_not_a_data_file(tmp_path):
    from adaref.data import DataFormatError, load
    with pytest.raises(DataFormatError, match="is a directory; give the data file itself"):
        load("criteo", input=str(tmp_path), out=str(tmp_path / "out"))


def test_a_line_one_field_short_suggests_an_unlabelled_file(tmp_path):
    from adaref.data import DataFormatError, load
    from adaref.data.samples import sample_path
    line = open(sample_path("criteo")).readline()
    (tmp_path / "test.txt").write_text(line.split("\t", 1)[1])            # the label column removed
    with pytest.raises(DataFormatError, match=r"test\.txt:1: .*expected 40 tab-separated fields, got 39 "
                                              r"\(one short: an unlabelled file"):
        load("criteo", input=str(tmp_path / "test.txt"), out=str(tmp_path / "out"))


@pytest.mark.parametrize("name", ["criteo", "avazu"])
def test_a_utf8_byte_order_mark_is_not_data(tmp_path, name):
    """A file that starts with EF BB BF encodes exactly as the same file without it."""
    from adaref.data import load
    from adaref.data.samples import sample_path
    lines = open(sample_path(name), "rb").read().splitlines(keepends=True)[:400]
    (tmp_path / "plain").write_bytes(b"".join(lines))
    (tmp_path / "bom").write_bytes(b"\xef\xbb\xbf" + b"".join(lines))
    plain = load(name, input=str(tmp_path / "plain"), out=str(tmp_path / "p"))
    marked = load(name, input=str(tmp_path / "bom"), out=str(tmp_path / "b"))
    np.testing.assert_array_equal(np.asarray(marked.ids), np.asarray(plain.ids))
    np.testing.assert_array_equal(np.asarray(marked.labels), np.asarray(plain.labels))
