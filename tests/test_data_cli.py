"""The command line: help, options, exit codes, JSON output, `python -m adaref.data`."""
import json
import subprocess
import sys

import pytest

from adaref.data.__main__ import main


def test_help_lists_commands_presets_and_layout(capsys):
    with pytest.raises(SystemExit) as e:
        main(["prepare", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for word in ("--sample", "--input", "--preset", "--on-bad-line", "--set", "upstream", "ids.npy",
                 "FILE:LINE: field I5: expected an integer"):
        assert word in text
    assert main([]) == 2


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["prepare", "--input", "x.txt"]) == 2
    assert "--dataset is required" in capsys.readouterr().err
    assert main(["prepare", "--sample", "criteo", "--dataset", "avazu"]) == 2
    assert main(["prepare", "--sample", "criteo", "--set", "transform.n_bins=x", "--out", str(tmp_path / "o")]) == 2
    assert "'n_bins' expects int" in capsys.readouterr().err
    assert main(["prepare", "--dataset", "criteo", "--input", str(tmp_path / "missing.txt"),
                 "--out", str(tmp_path / "o")]) == 1
    assert "missing.txt: no such file" in capsys.readouterr().err


def test_json_output_and_options_reach_the_manifest(tmp_path, capsys):
    rc = main(["prepare", "--sample", "avazu", "--preset", "upstream", "--seed", "3", "--rare-threshold", "4",
               "--set", "split.fractions=[0.5,0.25,0.25]", "--set", "split.kind=random", "--json", "--quiet",
               "--out", str(tmp_path / "o")])
    assert rc == 0
    m = json.loads(capsys.readouterr().out)
    assert m["options"]["split"] == {"kind": "random", "fractions": [0.5, 0.25, 0.25], "seed": 3}
    assert m["options"]["transform"]["rare_threshold"] == 4 and m["oov_embedding"] == "zero"
    assert m["splits"]["val"]["rows"] == 2500


def test_module_entry_point_runs(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "adaref.data", "prepare", "--sample", "ipinyou",
                           "--out", str(tmp_path / "i")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "prepared ipinyou" in proc.stdout and "rows/s" in proc.stderr
