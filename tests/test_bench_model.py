"""python -m adaref.bench model: runs end to end on a small batch and prints a consistent table."""
from adaref.bench.model import main


def test_model_bench_prints_every_setting_with_its_ratio(capsys):
    assert main(["--batch", "64", "--repeats", "1", "--infer-repeats", "2", "--ks", "1,2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line[:2].strip() in ("1", "2") and ("yes" in line or "no" in line)]
    assert [(r[0], r[1]) for r in rows] == [("1", "yes"), ("2", "yes"), ("1", "no"), ("2", "no")]
    for r in rows:
        t_ratio, f_ratio, ratio = float(r[6]), float(r[7]), float(r[8].rstrip("*"))
        slack = ratio * (0.005 / t_ratio + 0.005 / f_ratio) + 0.005      # all printed to 2 decimals
        assert abs(ratio - t_ratio / f_ratio) <= slack
        assert float(r[7]) <= 1.0 if r[0] == "1" else float(r[7]) == 1.0  # k = 2 is the base here
    assert "OMP_WAIT_POLICY" in lines[0] and "keep freed memory" in lines[0]
