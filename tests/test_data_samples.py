"""The bundled real samples: files intact, paths resolvable, `--sample` works end to end."""
import os
import shutil

import numpy as np
import pytest

from adaref.data import load, sample_path, sample_paths
from adaref.data.__main__ import main
from adaref.data.samples import ENV_VAR, samples_dir, verify_samples

EXPECTED = {  # rows, positives (from data_samples/README.md)
    "criteo": (10181, 2224),
    "avazu": (9999, 1706),
    "ipinyou": (2363 + 2207, 83 + 65),
}


def test_sample_files_match_sha256sums():
    assert verify_samples() == {"criteo_sample.txt": True, "avazu_sample.csv": True,
                                "ipinyou_train.csv": True, "ipinyou_test.csv": True}
    readme = open(os.path.join(samples_dir(), "README.md"), encoding="utf-8").read()
    for word in ("Provenance", "Terms", "Criteo", "Avazu", "iPinYou", "non-commercial"):
        assert word in readme


@pytest.mark.parametrize("name", ["criteo", "avazu", "ipinyou"])
def test_every_sample_loads_under_both_presets(tmp_path, name):
    rows, positives = EXPECTED[name]
    for preset in ("paper", "upstream"):
        ds = load(name, sample=True, preset=preset, out=str(tmp_path / preset))
        assert ds.ids.shape[0] == rows and int(np.asarray(ds.labels).sum()) == positives
        assert ds.manifest["rows"]["skipped"]["total"] == 0
        assert ds.manifest["options"]["transform"]["rare_threshold"] == (2 if preset == "paper" else 1)
        ids = np.asarray(ds.ids)
        assert ids.min() >= 0 and np.all(ids < np.array(ds.vocab_sizes))


def test_sample_path_resolution_env_override_and_missing(tmp_path, monkeypatch):
    assert sample_path("ipinyou", "test").endswith("ipinyou_test.csv")
    assert sample_paths("ipinyou")[0] == sample_path("ipinyou")
    with pytest.raises(ValueError, match="one file"):
        sample_path("criteo", "test")
    shutil.copy(sample_path("avazu"), tmp_path / "avazu_sample.csv")
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert sample_path("avazu") == str(tmp_path / "avazu_sample.csv")
    with pytest.raises(FileNotFoundError, match=f"criteo_sample.txt is missing.*{ENV_VAR}"):
        sample_path("criteo")


def test_cli_sample_criteo_prints_summary_and_reuses_cache(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default output under ./.adaref_cache, as from a fresh clone
    monkeypatch.delenv("ADAREF_CACHE", raising=False)
    assert main(["prepare", "--sample", "criteo", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "prepared criteo (preset paper)" in out and "10,181 encoded" in out
    assert "positive rate: 21.84%" in out and "C26:" in out
    assert os.path.isfile(tmp_path / ".adaref_cache" / "criteo-paper-sample" / "ids.npy")
    assert main(["prepare", "--sample", "criteo", "--quiet"]) == 0
    assert "reused cache of criteo" in capsys.readouterr().out


def test_ipinyou_by_file_split_keeps_the_days_apart(tmp_path):
    ds = load("ipinyou", sample=True, out=str(tmp_path / "i"), overrides={"split.kind": "by_file"})
    assert len(ds.splits["train"]) == 2363 and len(ds.splits["test"]) == 2207 and len(ds.splits["val"]) == 0
