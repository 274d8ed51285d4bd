"""Reliability of the data pipeline (issue 15, classes 3, 4, 8 (.gz), 9, 10): inputs that
change while prepared, damaged prepared data, corrupt gzip, over-long lines and fields,
paths that are not regular files."""
import csv
import gzip
import io
import os
import subprocess
import sys

import numpy as np
import pytest

from adaref.data import DataFormatError, load
from adaref.data import pipeline
from adaref.data.config import OptionsError, ReadOptions
from adaref.data.samples import sample_path

CRITEO = open(sample_path("criteo")).read().splitlines()[:1500]


@pytest.fixture
def small(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("\n".join(CRITEO) + "\n")
    return p


# -- class 3: an input that changes while it is prepared --------------------------------
def _flip_labels(path):
    lines = path.read_text().splitlines()
    path.write_text("\n".join(("0" if ln[0] == "1" else "1") + ln[1:] for ln in lines) + "\n")  # same size


@pytest.mark.parametrize("change", ["rewritten in place", "appended to", "renamed over"])
def test_an_input_changing_during_prepare_is_refused_and_nothing_written(small, tmp_path, monkeypatch, change):
    count_pass = pipeline._count_pass

    def changing(*args, **kwargs):
        result = count_pass(*args, **kwargs)
        if change == "rewritten in place":
            _flip_labels(small)
        elif change == "appended to":
            with open(small, "a") as fh:
                fh.write(CRITEO[0] + "\n")
        else:
            other = tmp_path / "new.txt"
            other.write_text(small.read_text())
            os.replace(other, small)
        return result

    monkeypatch.setattr(pipeline, "_count_pass", changing)
    out = tmp_path / "out"
    with pytest.raises(DataFormatError, match=r"c\.txt: the input changed while it was being prepared "
                                              r"\(during pass 1\): .*nothing was written"):
        load("criteo", input=str(small), out=str(out))
    assert not out.exists() and not [n for n in os.listdir(tmp_path) if n.startswith(".out")]


# -- class 4: a reused prepared data set is checked --------------------------------------
@pytest.mark.parametrize("array, row, value, message", [
    ("ids.npy", 17, 10**6, r"ids\.npy: row 17 holds id 1000000 for field \w+, outside its vocabulary"),
    ("ids.npy", 3, -2, r"ids\.npy: row 3 holds id -2 for field"),
    ("split.npy", 5, 7, r"split\.npy: row 5 holds split code 7, not 0 \(train\), 1 \(val\) or 2 \(test\)"),
    ("labels.npy", 9, 0.5, r"labels\.npy: row 9 holds 0\.5, not a 0/1 click"),
])
def test_a_damaged_prepared_data_set_is_refused_naming_the_file_and_the_fix(small, tmp_path, array, row, value,
                                                                          message):
    out = tmp_path / "out"
    load("criteo", input=str(small), out=str(out))
    arr = np.load(out / array, mmap_mode="r+")
    if arr.ndim == 2:
        arr[row, 4] = value
    else:
        arr[row] = value
    arr.flush()
    del arr
    with pytest.raises(DataFormatError, match=message + r".*--rebuild"):
        load("criteo", input=str(small), out=str(out))             # reused: same input and options


def test_split_counts_must_match_the_manifest(small, tmp_path):
    out = tmp_path / "out"
    load("criteo", input=str(small), out=str(out))
    arr = np.load(out / "split.npy", mmap_mode="r+")
    arr[np.flatnonzero(np.asarray(arr) == 0)[0]] = 2
    arr.flush()
    del arr
    with pytest.raises(DataFormatError, match=r"split\.npy: \d+ train rows, but manifest\.json says \d+"):
        load("criteo", input=str(small), out=str(out))


# -- class 8: a corrupt (not truncated) .gz ----------------------------------------------
def test_a_corrupt_gzip_input_is_a_data_error_with_exit_1(small, tmp_path, capsys):
    from adaref.data.__main__ import main

    raw = bytearray(gzip.compress(small.read_bytes()))
    raw[len(raw) // 2:len(raw) // 2 + 64] = bytes(64)                 # damaged in the middle
    p = tmp_path / "c.txt.gz"
    p.write_bytes(bytes(raw))
    assert main(["prepare", "--dataset", "criteo", "--input", str(p), "--out", str(tmp_path / "o"),
                 "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "c.txt.gz: corrupt gzip data" in err and "Traceback" not in err


# -- class 9: over-long lines and fields ---------------------------------------------------
def _with_long_field(lines, i, j, size, delimiter):
    fields = lines[i].split(delimiter)
    fields[j] = "a" * size
    return lines[:i] + [delimiter.join(fields)] + lines[i + 1:]


def test_an_over_long_field_or_line_is_a_bad_line_naming_the_limit(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("\n".join(_with_long_field(CRITEO, 4, 20, 10_000, "\t")) + "\n")
    with pytest.raises(DataFormatError, match=r"c\.txt:5: field C7: 10,000 bytes, longer than "
                                              r"read\.max_field_bytes = 4,096"):
        load("criteo", input=str(p), out=str(tmp_path / "o"))
    p.write_text("\n".join(_with_long_field(CRITEO, 4, 20, 200_000, "\t")) + "\n")
    with pytest.raises(DataFormatError, match=r"c\.txt:5: line longer than read\.max_line_bytes = 65,536"):
        load("criteo", input=str(p), out=str(tmp_path / "o"))
    ds = load("criteo", input=str(p), out=str(tmp_path / "o"), on_bad_line="skip")
    assert ds.manifest["rows"]["skipped"]["by_reason"] == {"line too long": 1}
    assert len(ds.labels) == len(CRITEO) - 1


def test_an_over_long_line_without_a_line_end_is_refused_before_it_is_held(tmp_path):
    p = tmp_path / "c.txt"
    p.write_bytes(("\n".join(CRITEO[:10]) + "\n").encode() + b"x" * (3 << 20))
    with pytest.raises(DataFormatError, match=r"c\.txt:11: line longer than read\.max_line_bytes = 65,536 bytes "
                                              r"\(no line end"):
        load("criteo", input=str(p), out=str(tmp_path / "o"), overrides={"read.chunk_bytes": 1 << 20})


def test_the_limits_are_options_checked_by_name():
    assert ReadOptions().max_field_bytes == 4096 and ReadOptions().max_line_bytes == 65536
    with pytest.raises(OptionsError, match=r"max_field_bytes must be in \[64, max_line_bytes"):
        ReadOptions(max_field_bytes=10, max_line_bytes=100)


IPINYOU = open(sample_path("ipinyou")).read().splitlines()


def _peak_rss_kib(path, out):
    code = ("import resource, sys; from adaref.data import load; "
            f"ds = load('ipinyou', input={str(path)!r}, out={str(out)!r}, on_bad_line='skip'); "
            "print(ds.manifest['rows']['skipped']['by_reason']); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}).stdout.splitlines()
    return lines[0], int(lines[1])


def test_a_120_kb_ipinyou_field_takes_bounded_memory_and_is_not_called_malformed_quoting(tmp_path):
    rows = list(csv.reader(IPINYOU[:2000]))
    plain = tmp_path / "plain.csv"
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    plain.write_text(buf.getvalue())
    for i in range(10, 2000, 200):
        rows[i][3] = "u" * 140_000                                  # over csv's own 131,072-byte limit
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    p = tmp_path / "ip.csv"
    p.write_text(buf.getvalue())
    _, baseline = _peak_rss_kib(plain, tmp_path / "o0")
    skipped, peak = _peak_rss_kib(p, tmp_path / "o1")
    assert skipped == "{'line too long': 10}"
    assert peak - baseline < 150_000                                 # KiB: the old reader took GBs more
    rows[10][3] = "u" * 10_000
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows[:20])
    p.write_text(buf.getvalue())
    with pytest.raises(DataFormatError, match=r"ip\.csv:11: field \w+: 10,000 bytes, longer than "
                                              r"read\.max_field_bytes = 4,096"):
        load("ipinyou", input=str(p), out=str(tmp_path / "o2"))


# -- class 10: paths that are not regular files ---------------------------------------------
def test_paths_that_are_not_regular_files_are_named_for_what_they_are(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path, what in [("/dev/null", "is a character device, not a regular file"),
                       (str(fifo), r"is a named pipe \(FIFO\), not a regular file"),
                       ("-", r"standard input is not supported"),
                       (str(tmp_path / "missing.txt"), "no such file")]:
        with pytest.raises(DataFormatError, match=what):
            load("criteo", input=path, out=str(tmp_path / "o"))


def test_train_config_and_npz_name_non_regular_files(tmp_path, capsys):
    from adaref import train
    from adaref.io import NpzError, load_npz

    with pytest.raises(NpzError, match=r"/dev/null: is a character device"):
        load_npz("/dev/null")
    fifo = tmp_path / "cfg"
    os.mkfifo(fifo)
    assert train.main(["--config", str(fifo), "--out", str(tmp_path / "r")]) == 2
    assert "is a named pipe (FIFO), not a regular file" in capsys.readouterr().err


# -- class 6: a half-built prepare directory of a killed run is removed by the next one ----------
def test_orphaned_build_directories_of_dead_processes_are_removed(small, tmp_path):
    import json
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = tmp_path / ".out.tmp-abc123"
    orphan.mkdir()
    (orphan / "ids.npy").write_bytes(b"half")
    (orphan / ".owner.json").write_text(json.dumps({"pid": dead.pid, "host": __import__("socket").gethostname(),
                                                    "started": 0}))
    alive = tmp_path / ".out.tmp-live99"
    alive.mkdir()
    (alive / ".owner.json").write_text(json.dumps({"pid": os.getpid(), "host": __import__("socket").gethostname(),
                                                   "started": __import__("time").time()}))
    load("criteo", input=str(small), out=str(tmp_path / "out"))
    assert not orphan.exists() and alive.exists()                 # a live build is left alone
    assert not (tmp_path / "out" / ".owner.json").exists()
