"""Which data an experiment runs on, and the run defaults that go with it.

Three sources, one :class:`DataSpec` each:

* ``sample``: a bundled real sample (``data_samples/``, about 10k rows) with the
  defaults chosen for it (:func:`adaref.training.config.sample_defaults`: D = 8, L = 2,
  batch 256, evaluation every 20 steps);
* ``file``: a raw Criteo, Avazu or iPinYou file with the ``paper`` preset's full-data
  defaults (D = 16, L = 4, k = 3, batch 4096, evaluation every 2,000 steps);
* ``planted``: rows of :mod:`adaref.data.synthetic` (the planted function of ``python -m
  adaref.bench planted``: 10 fields of up to 20 levels, seed 0), with the sample
  defaults and about two evaluations per epoch. Its 70/10/20 split is fixed (the
  generator's ``split_seed``): a seed changes the initialisation and batch order only.

For ``sample`` and ``file`` a run's seed also draws its 70/10/20 split, as ``python -m
adaref.train --seed`` does; each seed's encoded data is cached under
``OUT/data/<dataset>-s<seed>`` and reused.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from adaref.training.config import DataChoice, RunConfig, run_config, sample_defaults

__all__ = ["DataSpec", "PLANTED_OPTIONS", "base_run", "load_data", "planted_bayes"]

#: The planted generator's options besides ``rows`` (``python -m adaref.bench planted``'s defaults).
PLANTED_OPTIONS = {"n_fields": 10, "max_vocab": 20, "seed": 0, "split_seed": 0}


@dataclass(frozen=True)
class DataSpec:
    """One data source: ``kind`` is ``sample``, ``file`` or ``planted``.

    >>> DataSpec("sample", "criteo").title
    'criteo sample'
    >>> DataSpec("planted", "planted", rows=50000).title
    'planted data (50,000 rows)'
    """

    kind: str                   # sample | file | planted
    dataset: str                # criteo | avazu | ipinyou (planted: "planted")
    path: str = ""              # the raw file (kind "file")
    rows: int = 0               # rows to generate (kind "planted")

    def __post_init__(self):
        if self.kind not in ("sample", "file", "planted"):
            raise ValueError(f"DataSpec: kind must be sample, file or planted, got {self.kind!r}")
        if self.kind == "file" and not self.path:
            raise ValueError("DataSpec: a file needs its path")
        if self.kind == "planted" and self.rows < 1:
            raise ValueError("DataSpec: planted data needs rows >= 1")

    @property
    def title(self) -> str:
        if self.kind == "sample":
            return f"{self.dataset} sample"
        if self.kind == "file":
            return f"{self.dataset} ({self.path})"
        return f"planted data ({self.rows:,} rows)"

    @property
    def paper_dataset(self) -> str:
        """The paper's column to print beside the results (planted data: Criteo's)."""
        return self.dataset if self.dataset in ("criteo", "avazu", "ipinyou") else "criteo"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "dataset": self.dataset, "path": self.path, "rows": self.rows}


def _planted_dir(out: Path, spec: DataSpec) -> Path:
    return out / "data" / f"planted-{spec.rows}"


def base_run(spec: DataSpec, out: Path) -> RunConfig:
    """The run every model of an experiment starts from (before its own changes)."""
    if spec.kind == "sample":
        run = sample_defaults("paper")
        return run.replace(data=DataChoice(dataset=spec.dataset, sample=True, preset="paper"))
    if spec.kind == "file":
        run = run_config("paper", sample=False)
        return run.replace(data=DataChoice(dataset=spec.dataset, sample=False, path=str(spec.path),
                                           preset="paper"))
    run = sample_defaults("paper")
    steps_per_epoch = math.ceil(0.7 * spec.rows / run.train.batch_size)
    train = run.train.replace(eval_every=max(run.train.eval_every, steps_per_epoch // 2))
    # DataChoice knows the three real formats only: the encoded planted data is named by its path
    return run.replace(train=train, data=DataChoice(dataset="criteo", sample=False,
                                                    path=str(_planted_dir(out, spec)), preset="paper"))


def load_data(spec: DataSpec, seed: int, out: Path):
    """The encoded data set of ``seed`` (prepared once under ``out/data`` and reused)."""
    from adaref.data import load, open_encoded

    if spec.kind == "planted":
        return open_encoded(str(_ensure_planted(spec, out)))
    name = f"{spec.dataset}-{'sample-' if spec.kind == 'sample' else ''}s{seed}"
    where = str(out / "data" / name)
    if spec.kind == "sample":
        return load(spec.dataset, sample=True, seed=seed, preset="paper", out=where)
    return load(spec.dataset, input=spec.path, seed=seed, preset="paper", out=where)


def _ensure_planted(spec: DataSpec, out: Path) -> Path:
    from adaref.data.synthetic import SynthOptions, synthesize

    options = SynthOptions(rows=spec.rows, **PLANTED_OPTIONS)
    folder = _planted_dir(out, spec)
    manifest = folder / "manifest.json"
    if manifest.is_file():
        try:
            if json.loads(manifest.read_text()).get("options") == options.manifest_options():
                return folder
        except (OSError, ValueError):
            pass
    folder.parent.mkdir(parents=True, exist_ok=True)
    synthesize(options, str(folder))
    return folder


def planted_bayes(spec: DataSpec, out: Path) -> dict | None:
    """The Bayes-optimal test AUC and log-loss of planted data (the true probabilities
    scored as predictions), else None."""
    if spec.kind != "planted":
        return None
    manifest = json.loads((_ensure_planted(spec, out) / "manifest.json").read_text())
    test = manifest.get("bayes_optimal", {}).get("test")
    return {k: float(v) for k, v in test.items()} if test else None

