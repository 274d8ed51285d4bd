"""The registry of an experiment's runs: one directory per run, made once, reused after.

Every run lives in ``OUT/runs/<name>/s<seed>-<hash>``, where ``hash`` is the first 10
hex digits of the SHA-256 of its :class:`~adaref.training.config.RunConfig` (canonical
JSON): a run is known by its whole configuration, so any change of option, budget,
seed or grid setting is a new directory, and the commands share the runs they have in
common (Table 3's "w/ controller" is Table 1's AdaEnsemble).

:meth:`Runner.run` then

* **reuses** a run whose directory has ``metrics.json`` and a ``config.json`` equal to
  the requested configuration: nothing is trained;
* **resumes** an interrupted one (``config.json`` equal, ``last.npz`` but no metrics)
  from its checkpoint, exactly as ``python -m adaref.train --resume`` does;
* else **trains** it with :class:`~adaref.training.trainer.Trainer` (the same trainer,
  early stopping and artefacts as ``python -m adaref.train``).

Like ``python -m adaref.train`` it first claims the directory
(:func:`adaref.training.rundir.claim`): two commands running at once on one ``--out``
never train the same run twice (the second stops with ``RunDirectoryBusy``), a dead
process's lock is taken over, and a run stopped before its first checkpoint is
started again.

A run directory holds what ``python -m adaref.train`` writes, without the PNG plots
(about a second a run; ``--plots`` keeps them). After training the runner also writes
``test_predictions.npy``: the selected weights' test
probabilities, in the test split's row order (for the Ensemble of Table 2).
:attr:`Runner.trained` and :attr:`Runner.reused` count what one invocation did.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from adaref.experiments.data import DataSpec, load_data
from adaref.training.config import RunConfig

__all__ = ["RunRecord", "Runner", "config_hash", "run_predictions", "RunMismatch"]

PREDICTIONS = "test_predictions.npy"


class RunMismatch(RuntimeError):
    """A run directory holds a run of another configuration than its name says."""


def _canonical(run: RunConfig) -> dict:
    return json.loads(json.dumps(run.to_dict()))


def config_hash(run: RunConfig) -> str:
    """First 10 hex digits of the SHA-256 of the run's canonical JSON.

    >>> from adaref.training.config import sample_defaults
    >>> run = sample_defaults()
    >>> len(config_hash(run)), config_hash(run) == config_hash(run.replace(seed=1))
    (10, False)
    """
    text = json.dumps(_canonical(run), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


@dataclass
class RunRecord:
    """One run as the tables use it."""

    name: str                   # the model / variant (run directory group)
    label: str                  # its row in the tables
    seed: int
    setting: dict               # the grid's setting it was run with
    dir: str                    # its run directory
    status: str                 # trained, resumed or reused (in this invocation)
    seconds: float              # wall time of this invocation's work on it (0 when reused)
    metrics: dict = field(repr=False, default_factory=dict)   # its metrics.json

    @property
    def val_auc(self) -> float | None:
        best = self.metrics.get("best_val") or {}
        return best.get("val_auc")

    @property
    def test(self) -> dict:
        return self.metrics.get("test", {})

    def to_row(self) -> dict:
        """A flat row for the CSV of every run."""
        t = self.test
        return {"name": self.name, "label": self.label, "seed": self.seed,
                "setting": json.dumps(self.setting, sort_keys=True), "status": self.status,
                "seconds": round(self.seconds, 2), "val_auc": self.val_auc, "test_auc": t.get("auc"),
                "test_log_loss": t.get("log_loss"), "mean_flops": t.get("mean_flops"), "k": t.get("k"),
                "depth_fractions": json.dumps(t.get("depth_fractions")), "steps": self.metrics.get("steps"),
                "best_step": self.metrics.get("best_step"), "dir": self.dir}

    def to_dict(self) -> dict:
        return {**self.to_row(), "setting": self.setting, "depth_fractions": self.test.get("depth_fractions"),
                "expert_usage": self.test.get("expert_usage"), "experts": self.test.get("experts")}


class Runner:
    """Makes (or reuses) runs under ``out`` on the data of ``spec``."""

    def __init__(self, out: str | Path, spec: DataSpec, *, log: Callable[[str], None] | None = print,
                 plots: bool = False):
        self.out, self.spec, self.plots = Path(out), spec, plots
        self.log = log or (lambda _: None)
        self.trained = 0            # runs trained or resumed by this runner
        self.reused = 0             # finished runs found on disk
        self._data: dict[int, object] = {}
        self._memo: dict[Path, RunRecord] = {}

    def dataset(self, seed: int):
        """The encoded data of ``seed``, loaded once per runner."""
        if seed not in self._data:
            self._data[seed] = load_data(self.spec, seed, self.out)
        return self._data[seed]

    def run_dir(self, run: RunConfig, name: str) -> Path:
        return self.out / "runs" / name / f"s{run.seed}-{config_hash(run)}"

    def run(self, run: RunConfig, name: str, label: str, setting: dict | None = None) -> RunRecord:
        """The finished run of ``run`` (see the module docstring)."""
        folder = self.run_dir(run, name)
        if folder in self._memo:
            return self._memo[folder]
        record = RunRecord(name, label, run.seed, dict(setting or {}), self._relative(folder), "reused", 0.0)
        if self._done(folder, run, record):
            return record
        from adaref.training.rundir import claim, reset_unstarted

        claimed = claim(folder)             # one process per run directory (RunDirectoryBusy)
        try:
            if self._done(folder, run, record):     # finished by another process meanwhile
                return record
            start = time.perf_counter()
            self._train(run, folder, record, claimed, reset_unstarted)
            record.seconds = time.perf_counter() - start
        finally:
            claimed.release()
        self.trained += 1
        t = record.metrics["test"]
        val = "—" if record.val_auc is None else f"{record.val_auc:.4f}"
        self.log(f"  {label:<28} seed {run.seed}: {record.status} in {record.seconds:.1f}s, "
                 f"{record.metrics['steps']} steps, val AUC {val}, test AUC {t['auc']:.4f}")
        self._memo[folder] = record
        return record

    def _done(self, folder: Path, run: RunConfig, record: RunRecord) -> bool:
        """Reuse a finished run: its ``metrics.json`` and an equal ``config.json``."""
        config = _read_json(folder / "config.json")
        if config is not None and config != _canonical(run):
            raise RunMismatch(f"{folder}: config.json differs from the run this directory stands for; "
                              f"move it away to run again")
        metrics = _read_json(folder / "metrics.json")
        if config is None or not isinstance(metrics, dict) or not isinstance(metrics.get("test"), dict):
            return False
        record.metrics = metrics
        self.reused += 1
        self.log(f"  {record.label:<28} seed {run.seed}: done before ({record.dir})")
        self._memo[folder] = record
        return True

    def _train(self, run: RunConfig, folder: Path, record: RunRecord, claimed, reset_unstarted) -> None:
        from adaref.nn import StateDictError
        from adaref.training.trainer import Trainer

        ds = self.dataset(run.seed)
        trainer = Trainer(run, ds, folder, quiet=True)
        record.status = "trained"
        if claimed.unstarted:               # config.json alone: started again from step 0
            reset_unstarted(claimed)
        elif (folder / "config.json").is_file() and (folder / "last.npz").is_file():
            try:
                trainer.restore(folder / "last.npz")
            except StateDictError as e:
                raise RunMismatch(f"{folder}: cannot resume ({e}); move the directory away to train "
                                  f"the run again") from None
            record.status = "resumed"
        trainer.fit()
        record.metrics = trainer.finish(plots=self.plots)
        np.save(folder / PREDICTIONS, _predict(trainer.model, ds, record.metrics["test"]["k"],
                                               run.train.eval_batch_size))

    def predictions(self, record: RunRecord) -> np.ndarray:
        """The test probabilities of a finished run (recomputed from ``best.npz`` when
        the run directory lacks ``test_predictions.npy``)."""
        return run_predictions(self.out / record.dir if not Path(record.dir).is_absolute() else Path(record.dir),
                               lambda seed: self.dataset(seed))

    def _relative(self, folder: Path) -> str:
        try:
            return str(folder.relative_to(self.out))
        except ValueError:
            return str(folder)


def run_predictions(folder: Path, dataset: Callable[[int], object]) -> np.ndarray:
    """``folder/test_predictions.npy``, or the test probabilities of its selected weights."""
    path = folder / PREDICTIONS
    if path.is_file():
        return np.load(path)
    model, run, metrics = load_model(folder)
    ds = dataset(run.seed)
    probs = _predict(model, ds, metrics["test"]["k"], run.train.eval_batch_size)
    np.save(path, probs)
    return probs


def load_model(folder: Path):
    """(model with the selected weights, RunConfig, metrics) of a finished run."""
    from adaref.training.models import build_model

    run = RunConfig.from_dict(json.loads((folder / "config.json").read_text()))
    metrics = json.loads((folder / "metrics.json").read_text())
    vocab = json.loads((folder / "data" / "manifest.json").read_text())["vocab_sizes"]
    model = build_model(run, vocab, np.random.default_rng(0))
    model.load(folder / "best.npz")
    return model, run, metrics


def _predict(model, ds, k: int, batch: int) -> np.ndarray:
    """Test probabilities in evaluation mode (the hard exit for AdaEnsemble) at ``k``."""
    from adaref import no_grad
    from adaref.training.models import model_output

    ids = np.asarray(ds.ids[np.asarray(ds.splits["test"])])
    was = model.training
    model.eval()
    try:
        with no_grad():
            out = [model_output(model, ids[s:s + batch], k=k or None).prob.data.astype(np.float64)
                   for s in range(0, len(ids), batch)]
    finally:
        model.train(was)
    return np.concatenate(out)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
