"""A finished training run, loaded to score new data: :func:`load_run`.

A run directory written by ``python -m adaref.train`` holds everything needed: the
configuration (``config.json``), the selected weights (``best.npz``: the best
validation AUC; ``last.npz`` when the run had no validation split), the final numbers
(``metrics.json``) and the training data's id map (``data/manifest.json``,
``data/vocab.json``). :func:`load_run` checks that these belong together before it
uses any of them, and the :class:`Run` it returns encodes raw lines exactly as the
training data was encoded and scores them with the serving form (the hard exit of
Algorithm 1) at the k the weights were selected at.

>>> import contextlib, io, os, tempfile
>>> from adaref.data.samples import sample_path
>>> from adaref.train import main
>>> out = os.path.join(tempfile.mkdtemp(), "run")
>>> with contextlib.redirect_stdout(io.StringIO()):
...     status = main(["--sample", "criteo", "--out", out, "--quiet", "--train.max_steps", "20"])
>>> status
0
>>> run = load_run(out)                                   # checked as a whole
>>> ids, labels = run.encode(sample_path("criteo"))       # raw lines -> (B, F) ids
>>> p = run.predict(ids)                                  # click probabilities
>>> p.shape, bool(((p > 0) & (p < 1)).all()), run.step, run.k
((10181,), True, 20, 5)
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adaref import no_grad
from adaref.config import ConfigError
from adaref.data.encode import Encoder
from adaref.data.readers import DataFormatError
from adaref.io import NpzError, load_npz
from adaref.model import AdaEnsemble
from adaref.training.models import build_model, is_adaensemble, model_output
from adaref.model.adaensemble import first_difference
from adaref.nn import StateDictError
from adaref.training.config import RunConfig

__all__ = ["Run", "RunError", "load_run"]


class RunError(StateDictError):
    """A run directory that is incomplete or inconsistent; the message names the file."""


@dataclass
class Run:
    """A trained model with its configuration and its training data's id map.

    ``step`` is the training step whose weights were loaded and ``k`` the number of
    experts per example at that step (the k schedule anneals; the run was scored at
    this k). ``metrics`` is ``metrics.json`` (``None`` for an unfinished run).
    """

    directory: Path
    config: RunConfig
    model: AdaEnsemble
    step: int
    k: int
    weights: str
    metrics: dict[str, Any] | None
    encoder: Encoder | None

    def encode(self, paths, labelled: bool | None = None,
               on_bad_line: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(ids (B, F) int32, labels (B,) float32)`` of raw files in the training data's
        format, with its vocabulary (see :class:`~adaref.data.encode.Encoder.encode`;
        unlabelled files give NaN labels)."""
        if self.encoder is None:
            raise RunError(f"{self.directory / 'data'}: this run keeps no vocabulary (synthetic data, "
                           f"or a run written before runs kept one), so it cannot encode raw lines; "
                           f"pass ids (B, {len(self.model.vocab_sizes)}) to predict() instead")
        return self.encoder.encode(paths, labelled=labelled, on_bad_line=on_bad_line)

    def predict(self, ids: np.ndarray, form: str = "hard", batch_size: int = 4096) -> np.ndarray:
        """Click probabilities ``(B,)`` float64 for ids ``(B, F)``, in evaluation mode (no
        jitter) at :attr:`k`. ``form="hard"`` is what serving computes (Algorithm 1:
        each example stops at its exit layer); ``"soft"`` the depth mixture
        sum_l p_l y_l (eq. 17's training form)."""
        ids = np.asarray(ids)
        sizes = np.asarray(self.model.vocab_sizes)
        if ids.ndim != 2 or ids.shape[1] != len(sizes):
            raise ValueError(f"predict: ids must have shape (B, {len(sizes)}), got {ids.shape}")
        if ids.dtype.kind not in "iu":
            raise ValueError(f"predict: ids must be integers, got {ids.dtype}")
        bad = (ids < 0) | (ids >= sizes)
        if bad.any():
            row, col = map(int, np.argwhere(bad)[0])
            raise ValueError(f"predict: ids[{row}, {col}] = {ids[row, col]} is outside field "
                             f"{col}'s vocabulary [0, {sizes[col]})")
        was_training = self.model.training
        self.model.eval()
        out = []
        try:
            with no_grad():
                for start in range(0, len(ids), batch_size):
                    chunk = ids[start:start + batch_size]
                    out.append(model_output(self.model, chunk, k=self.k if self.k else None,
                                            form=form).prob.data.astype(np.float64))
        finally:
            self.model.train(was_training)
        return np.concatenate(out) if out else np.zeros(0)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunError(f"{path}: unreadable ({type(e).__name__}: {e})") from None


def load_run(directory: str | os.PathLike) -> Run:
    """Load the run in ``directory``: the weights its results were computed with, checked
    against its configuration, its metrics and its data before use.

    The weights are ``best.npz`` when the run selected weights on a validation split,
    else the final weights in ``last.npz`` (as ``adaref.train`` scored them). Refused,
    by file name: a missing or unreadable file, weights of another configuration or
    vocabulary, a ``best.npz`` whose step is not the ``best_step`` of ``metrics.json``,
    a data description whose vocabulary sizes differ from the weights'.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise RunError(f"{directory}: no such run directory")
    try:
        config = RunConfig.from_dict(_read_json(directory / "config.json"))
    except ConfigError as e:
        raise RunError(f"{directory / 'config.json'}: {e}") from None
    metrics_path = directory / "metrics.json"
    metrics = _read_json(metrics_path) if metrics_path.exists() else None
    best_step = metrics.get("best_step") if isinstance(metrics, dict) else None

    best, last = directory / "best.npz", directory / "last.npz"
    if best.exists():
        path, prefix = best, ""
    elif best_step is not None and best_step >= 0:
        raise RunError(f"{best}: missing, but {metrics_path} reports results of the weights of "
                       f"step {best_step}, which only best.npz holds")
    elif last.exists():
        path, prefix = last, "model."
    else:
        raise RunError(f"{directory}: no weights (neither best.npz nor last.npz); the run did not "
                       f"reach its first checkpoint")
    try:
        arrays, meta = load_npz(path)
    except NpzError as e:
        raise RunError(str(e)) from None
    if prefix:                                            # last.npz: the run's own weights
        if meta.get("run") != json.loads(json.dumps(config.to_dict())):
            where = first_difference(meta.get("run"), config.to_dict(), "run") or "run (missing)"
            raise RunError(f"{path}: written by a run with another configuration than config.json "
                           f"(first difference at {where})")
        loop = meta.get("loop") if isinstance(meta.get("loop"), dict) else {}
        step = loop.get("step")
        arrays = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        vocab_sizes = None
        steps_per_epoch = meta.get("steps_per_epoch")
    else:
        step = meta.get("step")
        saved = meta.get("model") if isinstance(meta.get("model"), dict) else {}
        diff = config.baseline.name == "" and first_difference(saved.get("config"), config.model.to_dict(),
                                                               "model")
        if diff:
            raise RunError(f"{path}: weights of another model than config.json's (first difference "
                           f"at {diff})")
        vocab_sizes = saved.get("vocab_sizes")
        steps_per_epoch = saved.get("steps_per_epoch")
        if best_step is not None and step != best_step:
            raise RunError(f"{path}: holds the weights of step {step}, but {metrics_path} reports "
                           f"best step {best_step}; the files come from different runs or attempts")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise RunError(f"{path}: no valid training step in its metadata (got {step!r})")

    encoder, data_dir = None, directory / "data"
    manifest = _read_json(data_dir / "manifest.json") if (data_dir / "manifest.json").exists() else {}
    planted = isinstance(manifest, dict) and manifest.get("dataset") == "synthetic"   # ids only, no raw format
    if not planted and (data_dir / "vocab.json").exists():
        try:
            encoder = Encoder.from_prepared(data_dir)
        except DataFormatError as e:
            raise RunError(str(e)) from None
        data_sizes = encoder.vocab_sizes
    elif isinstance(manifest, dict) and manifest:              # e.g. synthetic data: ids only
        data_sizes = manifest.get("vocab_sizes")
    else:
        data_sizes = None
    if vocab_sizes is not None and data_sizes is not None and list(vocab_sizes) != list(data_sizes):
        raise RunError(f"{data_dir}: vocabulary sizes differ from those of {path}; the data description "
                       f"belongs to another run")
    vocab_sizes = vocab_sizes if vocab_sizes is not None else data_sizes
    if vocab_sizes is None:
        raise RunError(f"{data_dir / 'manifest.json'}: missing, and {path.name} does not give the "
                       f"vocabulary sizes; the embedding tables cannot be sized")
    schedule = config.model.moe.schedule
    if steps_per_epoch is None and not config.baseline.name and schedule.kind == "linear" and schedule.epochs > 0:
        raise RunError(f"{path}: does not record the run's epoch length, which its k schedule (annealed "
                       f"over at most {schedule.epochs:g} epochs) needs to give k at step {step}")
    if steps_per_epoch is not None and (isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int)
                                        or steps_per_epoch < 1):
        raise RunError(f"{path}: the recorded epoch length is not a positive integer (got {steps_per_epoch!r})")
    model = build_model(config, vocab_sizes, np.random.default_rng(0), steps_per_epoch)
    try:
        model.load_state_dict(arrays)
    except StateDictError as e:
        raise RunError(f"{path}: {e}") from None
    model.eval()
    k = model.k_schedule(step) if is_adaensemble(model) else 0
    return Run(directory, config, model, step, k, path.name, metrics, encoder)
