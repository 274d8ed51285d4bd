"""python -m adaref.bench baseline: FTRL logistic regression on adaref.train's splits."""
import pytest

from adaref.bench.baseline import main


def test_baseline_trains_on_the_sample_and_reports_each_seed(capsys):
    assert main(["--seeds", "0", "--epochs", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line.split() for line in lines if line.split()[:1] == ["0"])
    epoch, val_auc, test_auc, test_ll = int(row[1]), float(row[2]), float(row[3]), float(row[4])
    assert epoch in (1, 2) and 0.65 < val_auc < 0.9 and 0.65 < test_auc < 0.9 and 0.3 < test_ll < 0.7
    assert lines[-1].startswith("test AUC: mean")


@pytest.mark.parametrize("flags", [["--seeds", "x"], ["--seeds", "-1"], ["--epochs", "0"], ["--alpha", "0"],
                                   ["--l2", "nan"], ["--preset", "upstream"]])
def test_baseline_refuses_bad_flags(flags, capsys):
    with pytest.raises(SystemExit):
        main(flags)
    assert "error:" in capsys.readouterr().err
