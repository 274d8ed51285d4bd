"""The README's first command: ``python -m adaref.train --sample criteo`` (demo until issue 6)."""
import re

import pytest

from adaref import train


def _run(capsys, *argv):
    assert train.main(list(argv)) == 0
    return capsys.readouterr().out


def test_demo_trains_on_the_bundled_criteo_sample_and_is_deterministic(capsys, tmp_path):
    argv = ["--sample", "criteo", "--quiet", "--epochs", "3", "--out", str(tmp_path / "cache")]
    out = _run(capsys, *argv)
    test_auc = float(re.search(r"^test\s+([0-9.]+)", out, re.M).group(1))
    assert test_auc > 0.70          # an LR on this sample reaches about 0.72-0.75
    again = _run(capsys, *argv)
    strip = lambda s: re.sub(r"time .*", "", s)  # noqa: E731  (wall time differs)
    assert strip(out) == strip(again)


def test_help_and_argument_errors(capsys):
    with pytest.raises(SystemExit) as info:
        train.main(["--help"])
    assert info.value.code == 0 and "--sample" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        train.main(["--data", "x.txt"])
    assert "--data needs --dataset" in capsys.readouterr().err
