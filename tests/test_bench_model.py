"""python -m adaref.bench model: runs end to end on a small batch and prints a consistent table."""
import pytest

from adaref.bench.model import main


def test_model_bench_prints_every_setting_with_its_ratio(capsys):
    assert main(["--batch", "64", "--repeats", "1", "--infer-repeats", "2", "--ks", "1,2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line[:2].strip() in ("1", "2") and ("yes" in line or "no" in line)]
    assert [(r[0], r[1]) for r in rows] == [("1", "yes"), ("2", "yes"), ("1", "no"), ("2", "no")]
    for r in rows:
        for first in (5, 11):                      # inference, then training: t/t5 F/F5 ratio
            t_ratio, f_ratio, ratio = float(r[first]), float(r[first + 1]), float(r[first + 2].rstrip("*"))
            slack = ratio * (0.005 / t_ratio + 0.005 / f_ratio) + 0.005  # all printed to 2 decimals
            assert abs(ratio - t_ratio / f_ratio) <= slack
            assert r[first + 2].endswith("*") == (ratio > 1.25) or abs(ratio - 1.25) <= slack
            assert f_ratio <= 1.0 if r[0] == "1" else f_ratio == 1.0     # k = 2 is the base here
    assert "OMP_WAIT_POLICY" in lines[0] and "keep freed memory" in lines[0]


@pytest.mark.parametrize("ks", ["1,x", "0,2", "2,2", "6"])
def test_model_bench_refuses_bad_ks(ks, capsys):
    with pytest.raises(SystemExit):
        main(["--ks", ks])
    assert "--ks" in capsys.readouterr().err
