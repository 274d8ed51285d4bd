"""Reliability of resumable state (issue 15, class 5): every value of last.npz that the
loop continues from is checked for type and range before it is used."""
import math

import numpy as np
import pytest

from adaref.data import load
from adaref.io import NpzError, load_npz, save_npz
from adaref.model import model_config
from adaref.nn import StateDictError
from adaref.training.config import sample_defaults
from adaref.training.trainer import Trainer


@pytest.fixture(scope="module")
def criteo(tmp_path_factory):
    return load("criteo", sample=True, preset="paper", seed=0, out=str(tmp_path_factory.mktemp("data")))


def tiny_run():
    run = sample_defaults("paper")
    model = model_config("paper", dim=4, num_layers=2)
    model = model.replace(moe={**model.moe.to_dict(), "experts": ("dense", "pin", "cross"),
                               "schedule": {"kind": "linear", "k": 2, "steps": 4}})
    return run.replace(model=model.to_dict(), train={**run.train.to_dict(), "batch_size": 512, "max_steps": 9,
                                                     "eval_every": 3, "eval_batch_size": 1024, "patience": 0})


@pytest.fixture(scope="module")
def checkpoint(criteo, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    trainer = Trainer(tiny_run(), criteo, out, quiet=True)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(stop_after=6)
    return out, trainer.rows


def _damaged(checkpoint, tmp_path, change):
    src, rows = checkpoint
    arrays, meta = load_npz(src / "last.npz")
    change(arrays, meta, rows)
    out = tmp_path / "run"
    out.mkdir()
    (out / "best.npz").write_bytes((src / "best.npz").read_bytes())
    save_npz(out / "last.npz", arrays, meta)
    return out


def _set(path, value):
    def change(arrays, meta, rows):
        *head, last = path
        target = meta
        for key in head:
            target = target[key]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value(target[last], rows) if callable(value) else value
    return change


def _permutation(kind):
    def change(arrays, meta, rows):
        perm = arrays["loop.permutation"].copy()
        if kind == "test row":
            perm[0] = rows["test"][0]
        elif kind == "repeated":
            perm[1] = perm[0]
        elif kind == "float":
            perm = perm.astype(np.float64)
        arrays["loop.permutation"] = perm
    return change


CASES = {
    "negative step": (_set(["loop", "step"], -4), r"loop\.step = -4, expected an integer in \[0, 9\]"),
    "huge step": (_set(["loop", "step"], 10**12), r"loop\.step = 1000000000000"),
    "float step": (_set(["loop", "step"], 6.0), r"loop\.step = 6\.0"),
    "NaN best AUC": (_set(["loop", "best_auc"], math.nan), r"loop\.best_auc = nan"),
    "best AUC not evaluated": (_set(["loop", "best_auc"], 0.99), r"does not match an evaluation"),
    "best step ahead": (_set(["loop", "best_step"], 7), r"loop\.best_step = 7, expected an integer in \[-1, 6\]"),
    "history in the future": (_set(["loop", "history"], lambda h, rows: h + [{**h[-1], "step": 60}]),
                              r"loop\.history steps \[3, 6, 60\]"),
    "position past the order": (_set(["loop", "position"], 10**6), r"loop\.position = 1000000"),
    "permutation with a test row": (_permutation("test row"), r"loop\.permutation holds row \d+, which is not a "
                                                               r"training row"),
    "permutation with a repeat": (_permutation("repeated"), r"loop\.permutation is not a permutation of the "
                                                            r"\d+ training rows"),
    "float permutation": (_permutation("float"), r"loop\.permutation is missing or not a 1-D integer"),
    "generator state": (_set(["rng", "batches"], {"bit_generator": "PCG64", "state": "x"}), r"rng\.batches"),
    "missing generator": (_set(["rng", "val"], KeyError), r"rng holds \['batches', 'noise'\]"),
    "no data identity": (_set(["data"], KeyError), r"does not identify its data"),
    "sums not finite": (_set(["loop", "sums"], {"loss": math.inf}), r"loop\.sums"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_damaged_resume_state_is_refused_by_key(criteo, checkpoint, tmp_path, case):
    change, message = CASES[case]
    out = _damaged(checkpoint, tmp_path, change)
    trainer = Trainer(tiny_run(), criteo, out, quiet=True)
    with pytest.raises(StateDictError, match=message):
        trainer.restore(out / "last.npz")
    assert trainer.state.step == 0                   # nothing of the damaged state was taken


def test_the_undamaged_state_resumes(criteo, checkpoint, tmp_path):
    out = _damaged(checkpoint, tmp_path, lambda arrays, meta, rows: None)
    trainer = Trainer(tiny_run(), criteo, out, quiet=True)
    trainer.restore(out / "last.npz")
    assert trainer.state.step == 6


def test_an_extra_or_oversized_array_is_refused_before_it_is_read(criteo, checkpoint, tmp_path):
    def extra(arrays, meta, rows):
        arrays["junk"] = np.zeros(1000)
    out = _damaged(checkpoint, tmp_path, extra)
    with pytest.raises(NpzError, match=r"last\.npz: unexpected array 'junk' \(8,000 bytes\)"):
        Trainer(tiny_run(), criteo, out, quiet=True).restore(out / "last.npz")

    def bigger(arrays, meta, rows):
        arrays["loop.permutation"] = np.zeros(10 * len(rows["train"]), np.int64)
    out = _damaged(checkpoint, tmp_path / "b", bigger) if (tmp_path / "b").mkdir() is None else None
    with pytest.raises(NpzError, match=r"array 'loop\.permutation' is .* more than the .* expected"):
        Trainer(tiny_run(), criteo, out, quiet=True).restore(out / "last.npz")
