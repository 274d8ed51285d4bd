"""The training loop: Algorithm 2, evaluation, early stopping, checkpoints and resume.

A run directory holds ``config.json`` (the :class:`~adaref.training.config.RunConfig`),
``history.csv`` (one row per evaluation), ``best.npz`` (the weights with the best
validation AUC, with their config), ``last.npz`` (everything needed to resume: weights,
optimiser states, random generator states, the batch order and the loop's counters),
``metrics.json`` (the final numbers), the plots, and ``data/`` (the prepared data's
``manifest.json`` and ``vocab.json``: what :func:`adaref.load_run` needs to encode new
raw lines exactly as the training data was).

Determinism: the seed spawns independent generators for the initialisation, the batch
order, the gate jitter and the validation batches of the alpha steps; their states are
saved in ``last.npz``, so a resumed run continues exactly as an uninterrupted one.
"""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adaref import runtime
from adaref.config import ConfigError
from adaref.io import NpzError, load_npz, save_npz, write_json
from adaref.model.adaensemble import first_difference
from adaref.model.config import check_model_memory
from adaref.nn import StateDictError
from adaref.optim import build_optimizer
from adaref.training.bilevel import darts_gate_gradient, split_parameters
from adaref.training.config import RunConfig
from adaref.training.evaluate import Evaluation, evaluate
from adaref.training.models import build_model, is_adaensemble, model_output
from adaref.training.objective import objective
from adaref.training.progress import TrainingProgress

HISTORY_FIELDS = ["step", "epoch", "k", "train_loss", "train_log_loss", "expert_loss", "depth_loss",
                  "z_loss", "eval_split", "val_auc", "val_log_loss", "val_auc_soft", "val_log_loss_soft",
                  "val_mean_flops", "seconds"]
# the val_* columns hold the evaluation split named in eval_split: "val", or "test" when the
# data has no validation split (the upstream preset's positional 80/20 split)


#: Where new best weights wait until last.npz records them (then renamed to best.npz).
PENDING_BEST = "best.pending.npz"
#: Arrays per parameter in training: the weights, their gradient and two optimiser slots.
TRAINING_COPIES = 4
#: rows read from the memory maps between two releases of their pages (each row read
#: maps the 64 KB of file around it: at most 16 MB at a time)
READ_CHUNK = 256


def trains_adaensemble(run: RunConfig) -> bool:
    """Whether ``run`` trains AdaEnsemble (whose size :func:`check_model_memory`
    estimates), not another model named by a ``baseline`` choice, where configs have one."""
    return not getattr(getattr(run, "baseline", None), "name", "")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the last finite values."""


class TrainingDataError(ValueError):
    """The data set cannot be trained or evaluated as configured (an empty split, one
    class only, no validation split for the bi-level step)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C: a resumable checkpoint was saved; the message says how to resume."""


@dataclass
class LoopState:
    """The loop's counters, saved in ``last.npz`` and restored on resume."""

    step: int = 0                          # W steps done
    epoch_index: int = 0                   # permutations of the training split drawn
    position: int = 0                      # next row of the current permutation
    best_auc: float = -1.0
    best_step: int = -1
    bad_evals: int = 0
    stopped_early: bool = False
    history: list[dict] = field(default_factory=list)
    sums: dict = field(default_factory=dict)   # running sums of loss parts since the last evaluation
    seconds: float = 0.0                   # training time so far (not part of the results)


class Trainer:
    """Trains an :class:`~adaref.model.AdaEnsemble`, or a competing model of §4.1.3
    (``run.baseline``), on an encoded data set (see :mod:`adaref.data`)."""

    def __init__(self, run: RunConfig, dataset, run_dir: str | os.PathLike, *, quiet: bool = False):
        self.run, self.ds, self.dir, self.quiet = run, dataset, Path(run_dir), quiet
        self.dtype = np.dtype(run.dtype)
        if dataset.oov_embedding != run.model.embedding_oov:
            raise ConfigError(f"the data set's OOV rows are {dataset.oov_embedding!r} but the model's "
                              f"embedding_oov is {run.model.embedding_oov!r}; use the same preset for both")
        if trains_adaensemble(run):
            check_model_memory(run.model, len(dataset.vocab_sizes), sum(dataset.vocab_sizes), self.dtype.itemsize,
                               copies=TRAINING_COPIES, what="training (weights, gradients, optimiser states)")
        seeds = np.random.SeedSequence(run.seed).spawn(5)
        t = run.train
        # the training split is not changed below (the alpha step takes half of val); an
        # empty one is refused by _check_sizes
        self.steps_per_epoch = max(1, math.ceil(len(dataset.splits["train"]) / t.batch_size))
        self.model = build_model(run, dataset.vocab_sizes, np.random.default_rng(seeds[0]), self.steps_per_epoch)
        self.rng = {"batches": np.random.default_rng(seeds[1]), "noise": np.random.default_rng(seeds[2]),
                    "val": np.random.default_rng(seeds[3])}
        groups = split_parameters(self.model)
        self._w_params = [p for _, p in groups["embedding"] + groups["weights"]]
        self.optimizers = {}
        for group, slot in (("embedding", "embedding_optimizer"), ("weights", "optimizer"),
                            ("gates", "gate_optimizer")):
            if not groups[group]:           # a competing model has no gates (LR: no embedding table)
                continue
            choice = getattr(t, slot)
            try:
                self.optimizers[group] = build_optimizer(choice.name, groups[group], choice.options)
            except (ValueError, TypeError) as e:       # a wrong name, option or parameter shape
                raise ConfigError(f"train.{slot} ({choice.name!r} on the {group} parameters): {e}") from None
        # the memory-mapped arrays, read a batch at a time: nothing row-sized is copied
        self.ids = np.asarray(dataset.ids)                             # (rows, F) int32
        self.labels = np.asarray(dataset.labels)                       # (rows,) float32 0/1
        self.rows = {name: np.asarray(r) for name, r in dataset.splits.items()}
        self._check_sizes()
        self.has_val = len(self.rows.get("val", ())) > 0
        if t.bilevel == "on" and not self.has_val:
            raise TrainingDataError("bilevel optimisation needs a validation split (this data has none, "
                                    "e.g. the upstream 80/20 split or too few rows); use --bilevel off")
        self.alpha_rows = self.rows.get("val", np.zeros(0, np.int64))
        if t.bilevel == "on" and t.alpha_val == "split":
            # a fixed half for alpha, the other half for evaluation and early stopping
            order = np.random.default_rng(seeds[4]).permutation(self.rows["val"])
            half = len(order) // 2
            self.alpha_rows, self.rows["val"] = np.sort(order[:half]), np.sort(order[half:])
        self._check_evaluated_splits()                  # the rows as they will be used
        total = math.ceil(t.epochs * self.steps_per_epoch)
        self.eval_every = t.eval_every                  # W steps between evaluations
        if t.evals_per_epoch > 0:
            self.eval_every = max(1, min(t.eval_every, math.ceil(self.steps_per_epoch / t.evals_per_epoch)))
        self.total_steps = min(total, t.max_steps) if t.max_steps else total
        self.state = LoopState()
        self.permutation = np.zeros(0, dtype=np.int64)

    def _split_summary(self) -> str:
        return ", ".join(f"{name} {len(r)}" for name, r in self.rows.items())

    def _check_sizes(self) -> None:
        """Refuse an empty training or test split."""
        for name in ("train", "test"):
            if len(self.rows.get(name, ())) == 0:
                raise TrainingDataError(f"the {name} split is empty (rows per split: {self._split_summary()}); "
                                        f"the data set is too small for this split")

    def _check_evaluated_splits(self) -> None:
        """Once the validation split is divided for the alpha step: refuse no validation
        rows left for the alpha step, or an evaluated split (the validation rows kept for
        evaluation; test) holding one class only (AUC is undefined)."""
        if self.run.train.bilevel == "on" and len(self.alpha_rows) == 0:
            raise TrainingDataError(f"the validation split is too small to give the alpha step a half "
                                    f"of its own (rows per split: {self._split_summary()}); use more data, "
                                    f"--train.alpha_val shared or --bilevel off")
        for name in ("val", "test"):
            rows = self.rows.get(name, np.zeros(0, np.int64))
            positives = int(self._read(rows, ids=False)[1].sum())
            if len(rows) and positives in (0, len(rows)):
                raise TrainingDataError(f"the {name} split has {positives} positives among {len(rows)} "
                                        f"rows: AUC needs both classes; use more data")

    # ---------------------------------------------------------------------------- batches
    def _next_batch(self) -> np.ndarray:
        bs = self.run.train.batch_size
        if self.state.position >= len(self.permutation):
            train = self.rows["train"]
            self.permutation = self.rng["batches"].permutation(train) if self.run.train.shuffle else train
            self.state.epoch_index += 1
            self.state.position = 0
        rows = self.permutation[self.state.position:self.state.position + bs]
        self.state.position += len(rows)
        return rows

    def _val_batch(self) -> np.ndarray:
        val, t = self.alpha_rows, self.run.train
        size = min(t.alpha_batch_size or t.batch_size, len(val))
        return self.rng["val"].choice(val, size=size, replace=False)

    def _read(self, rows: np.ndarray, ids: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
        """The ids (unless ``ids=False``) and labels of ``rows``, copied from the memory
        maps in ascending row order, :data:`READ_CHUNK` rows at a time, the data's mapped
        pages released after each chunk (:meth:`EncodedDataset.release_pages`): reading a
        row maps the file pages around it, which would otherwise stay resident (all of
        the ids after an epoch, most of them after one batch of random rows)."""
        release = getattr(self.ds, "release_pages", None)
        if release is None:
            return (self.ids[rows] if ids else None), self.labels[rows]
        out_ids = np.empty((len(rows),) + self.ids.shape[1:], dtype=self.ids.dtype) if ids else None
        out_labels = np.empty(len(rows), dtype=self.labels.dtype)
        order = np.argsort(rows, kind="stable")
        for start in range(0, len(rows), READ_CHUNK):
            sel = order[start:start + READ_CHUNK]
            if ids:
                out_ids[sel] = self.ids[rows[sel]]
            out_labels[sel] = self.labels[rows[sel]]
            release()
        return out_ids, out_labels

    def _loss(self, rows: np.ndarray, rng: np.random.Generator):
        ids, labels = self._read(rows)
        out = model_output(self.model, ids, step=self.state.step, rng=rng)
        t = self.run.train
        return objective(out, labels, t.lambda1, t.lambda2, t.z_loss, t.exit_loss)

    # ---------------------------------------------------------------------------- steps
    def _w_step(self, rows: np.ndarray) -> dict[str, float]:
        """One step of W (and, with ``bilevel off``, of alpha too) on the training batch ``rows``."""
        self.model.train()
        self.model.zero_grad()
        loss, parts = self._loss(rows, self.rng["noise"])
        if not math.isfinite(parts["loss"]):
            raise TrainingDiverged(f"step {self.state.step + 1}: the loss is {parts['loss']} (parts "
                                   f"{parts}); {self._last_good()}")
        if self.run.train.bilevel == "off":
            loss.backward()
        else:                                   # alpha is updated by its own step: no gradient here
            loss.backward(inputs=self._w_params)
        try:
            for group, optimizer in self.optimizers.items():
                if group != "gates" or self.run.train.bilevel == "off":
                    optimizer.step()
        except FloatingPointError as e:        # a NaN/Inf gradient under a finite loss
            raise TrainingDiverged(f"step {self.state.step + 1}: {e}; {self._last_good()}") from None
        self.state.step += 1
        for key, value in parts.items():
            self.state.sums[key] = self.state.sums.get(key, 0.0) + value
        self.state.sums["count"] = self.state.sums.get("count", 0) + 1
        return parts

    def _last_good(self) -> str:
        """Where the run can be taken up again after a divergence."""
        if not self.state.history:
            return (f"no evaluation has run yet (the first is at step {self.eval_every}), "
                    f"so there is no checkpoint to go back to")
        return (f"the last finite values were {json.dumps(self.state.history[-1])}; the last good "
                f"checkpoint is {self.dir / 'last.npz'}")

    def _alpha_step(self, train_rows: np.ndarray) -> None:
        """Algorithm 2, line 3: update alpha on a validation mini-batch. With xi > 0 the
        unrolled W step uses ``train_rows``, the batch of the W step that follows (as in
        DARTS' reference code; Algorithm 2 does not say)."""
        t = self.run.train
        val_rows = self._val_batch()
        self.model.train()
        gates = [p for _, p in split_parameters(self.model)["gates"]]
        if t.xi == 0:
            self.model.zero_grad()
            self._loss(val_rows, self.rng["noise"])[0].backward(inputs=gates)   # pruned to alpha
        else:
            seed = int(self.rng["noise"].integers(2**63))   # the same jitter in every evaluation
            grads = darts_gate_gradient(
                self.model,
                lambda: self._loss(train_rows, np.random.default_rng(seed))[0],
                lambda: self._loss(val_rows, np.random.default_rng(seed + 1))[0], t.xi, t.darts_eps)
            for p, g in zip(gates, grads):
                p.grad = None if g is None else g.astype(p.dtype)
        self.optimizers["gates"].step()
        self.model.zero_grad()

    # ---------------------------------------------------------------------------- loop
    def fit(self, stop_after: int | None = None) -> None:
        """Train until the step budget or early stopping.

        Ctrl-C (SIGINT) is taken at the next step boundary: ``last.npz`` is saved there and
        :class:`TrainingInterrupted` raised, so ``--resume`` continues exactly; a second
        Ctrl-C stops at once. ``stop_after`` simulates an interruption after that many
        steps (for tests).
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        t = self.run.train
        progress = TrainingProgress(self.total_steps, enabled=not self.quiet)
        start = time.perf_counter() - self.state.seconds
        interrupted = threading.Event()
        previous = None
        if threading.current_thread() is threading.main_thread():
            def on_sigint(signum, frame):
                if interrupted.is_set():
                    raise KeyboardInterrupt
                interrupted.set()
            previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            while self.state.step < self.total_steps and not self.state.stopped_early:
                if interrupted.is_set() or (stop_after is not None and self.state.step >= stop_after):
                    raise KeyboardInterrupt
                rows = self._next_batch()
                if t.bilevel == "on" and self.state.step % t.inner_steps == 0:
                    self._alpha_step(rows)
                parts = self._w_step(rows)
                last_auc = self.state.history[-1]["val_auc"] if self.state.history else None
                progress.update(self.state.step, self.state.step / self.steps_per_epoch, t.batch_size,
                                parts["loss"], last_auc)
                if self.state.step % self.eval_every == 0 or self.state.step == self.total_steps:
                    self.state.seconds = time.perf_counter() - start
                    row = self._evaluate_and_checkpoint()
                    progress.update(self.state.step, row["epoch"], 0, row["train_loss"], row["val_auc"],
                                    force=True)
        except KeyboardInterrupt:
            self.state.seconds = time.perf_counter() - start
            self.save_resumable()
            progress.close()
            raise TrainingInterrupted(f"interrupted at step {self.state.step}; resumable checkpoint "
                                      f"saved: continue with --resume {self.dir}") from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        progress.close()

    def _evaluate_and_checkpoint(self) -> dict:
        runtime.release_freed_memory()      # evaluation's arrays need not sit on the steps' peak
        s = self.state
        count = max(s.sums.get("count", 0), 1)
        split = "val" if self.has_val else "test"
        try:
            ev = evaluate(self.model, *self._read(self.rows[split]), step=s.step,
                          batch_size=self.run.train.eval_batch_size)
        except FloatingPointError as e:
            raise TrainingDiverged(f"step {s.step}: evaluating on the {split} split: {e}; "
                                   f"{self._last_good()}") from None
        row = {"step": s.step, "epoch": round(s.step / self.steps_per_epoch, 4), "k": ev.k,
               "train_loss": s.sums.get("loss", 0.0) / count,
               "train_log_loss": s.sums.get("log_loss", 0.0) / count,
               "expert_loss": s.sums.get("expert_loss", 0.0) / count,
               "depth_loss": s.sums.get("depth_loss", 0.0) / count,
               "z_loss": s.sums.get("z_loss", 0.0) / count, "eval_split": split,
               "val_auc": ev.auc, "val_log_loss": ev.log_loss, "val_auc_soft": ev.auc_soft,
               "val_log_loss_soft": ev.log_loss_soft, "val_mean_flops": ev.mean_flops,
               "seconds": round(s.seconds, 3)}
        s.history.append(row)
        s.sums = {}
        improved = False
        if self.has_val:
            if ev.auc > s.best_auc:
                s.best_auc, s.best_step, s.bad_evals = ev.auc, s.step, 0
                # best.npz and last.npz change together: the new best weights wait under
                # PENDING_BEST until last.npz records them (see _settle_best)
                self.model.save(self.dir / PENDING_BEST, meta={"step": s.step, "val_auc": ev.auc})
                improved = True
            else:
                s.bad_evals += 1
                if self.run.train.patience and s.bad_evals >= self.run.train.patience:
                    s.stopped_early = True
        self._write_history()
        self.save_resumable()
        if improved:
            os.replace(self.dir / PENDING_BEST, self.dir / "best.npz")
        return row

    # ---------------------------------------------------------------------------- results
    def finish(self, plots: bool = True) -> dict[str, Any]:
        """Load the best weights, evaluate the test split, write metrics.json and (unless
        ``plots`` is False: about a second a run, which ``python -m adaref.experiments``
        saves on its many runs) the PNG plots."""
        if self.has_val and self.state.best_step >= 0:
            arrays, _ = self._best_weights(self.state)
            try:
                self.model.load_state_dict(arrays)
            except StateDictError as e:
                raise StateDictError(f"{self.dir / 'best.npz'}: {e}") from None
        # the selected weights are scored at the k they were selected at (annealing moves k)
        step = self.state.best_step if self.state.best_step >= 0 else self.state.step
        runtime.release_freed_memory()
        try:
            test = evaluate(self.model, *self._read(self.rows["test"]),
                            step=step, batch_size=self.run.train.eval_batch_size)
        except FloatingPointError as e:
            raise TrainingDiverged(f"step {step}: evaluating the selected weights on the test split: "
                                   f"{e}") from None
        best = next(({k: v for k, v in r.items() if k != "seconds"} for r in self.state.history
                     if r["step"] == self.state.best_step), None)     # no wall time: results only
        metrics = {"test": test.to_dict(), "best_step": self.state.best_step,
                   "best_val": best, "steps": self.state.step,
                   "epochs": round(self.state.step / self.steps_per_epoch, 4),
                   "stopped_early": self.state.stopped_early,
                   "patience": self.run.train.patience,
                   "examples": {k: int(len(v)) for k, v in self.rows.items()},
                   "data_lines": self.ds.manifest.get("rows")}   # read, encoded, skipped by reason
        write_json(self.dir / "metrics.json", metrics)
        if not plots:
            return metrics
        from adaref.training.plots import write_plots

        ada = is_adaensemble(self.model)
        write_plots(self.dir, self.state.history, test, self.model.config.moe.experts if ada else [],
                    eval_split="val" if self.has_val else "test", k0=self.model.k_schedule(0) if ada else None)
        return metrics

    # ---------------------------------------------------------------------------- files
    def _write_config(self) -> None:
        write_json(self.dir / "config.json", self.run.to_dict())
        self._write_data_description()

    def _write_data_description(self) -> None:
        """``data/manifest.json`` and ``data/vocab.json``: the id map of the training data,
        so that the run alone can encode new raw lines (:func:`adaref.load_run`)."""
        folder = self.dir / "data"
        folder.mkdir(exist_ok=True)
        manifest = {k: v for k, v in self.ds.manifest.items() if k != "reused"}
        write_json(folder / "manifest.json", manifest)
        vocab = Path(self.ds.path) / "vocab.json"
        if vocab.is_file():
            tmp = folder / ".vocab.json.tmp"
            shutil.copyfile(vocab, tmp)
            os.replace(tmp, folder / "vocab.json")

    def _write_history(self) -> None:
        tmp = self.dir / ".history.csv.tmp"
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=HISTORY_FIELDS)
            writer.writeheader()
            for row in self.state.history:
                writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in HISTORY_FIELDS})
        os.replace(tmp, self.dir / "history.csv")

    def save_resumable(self) -> None:
        """``last.npz``: weights, optimiser states, batch order, generator states, counters."""
        arrays = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        for group, opt in self.optimizers.items():
            for key, value in opt.state_dict().items():
                arrays[f"opt.{group}.{key}"] = np.asarray(value)
        arrays["loop.permutation"] = self.permutation
        meta = {"run": self.run.to_dict(), "loop": self.state.__dict__, "data": self._data_identity(),
                "steps_per_epoch": self.steps_per_epoch,
                "rng": {name: g.bit_generator.state for name, g in self.rng.items()}}
        save_npz(self.dir / "last.npz", arrays, meta)

    def _checkpoint_limits(self) -> dict[str, int]:
        """The arrays ``last.npz`` may hold and the largest size of each (bytes), so that
        :func:`~adaref.io.load_npz` refuses anything else before reading it."""
        limits = {f"model.{k}": v.nbytes for k, v in self.model.state_dict().items()}
        for group, opt in self.optimizers.items():
            for key, value in opt.state_dict().items():
                limits[f"opt.{group}.{key}"] = max(np.asarray(value).nbytes, 8)
        limits["loop.permutation"] = 8 * len(self.rows["train"])
        return limits

    def restore(self, path: str | os.PathLike) -> None:
        """Continue from a ``last.npz`` written by :meth:`save_resumable` of the same run.

        Everything is checked before it is used: the configuration and the data identity
        against this run's, the arrays against the model and optimisers, the loop state
        for type and range (:meth:`_check_loop_state`), and the artefacts the loop state
        refers to: ``best.npz`` must hold the weights of the recorded best step, and a
        ``metrics.json`` present must report that step (:meth:`_check_artefacts`).
        """
        path = Path(path)
        arrays, meta = load_npz(path, limits=self._checkpoint_limits())
        mine = json.loads(json.dumps(self.run.to_dict()))
        if not isinstance(meta.get("run"), dict) or "loop" not in meta:
            raise StateDictError(f"{path}: not a resumable checkpoint (no run and loop metadata; "
                                 f"last.npz of a run directory is)")
        if meta.get("run") != mine:
            where = first_difference(meta.get("run"), mine, "run") or "run (missing)"
            raise StateDictError(f"{path}: the checkpoint belongs to a run with another "
                                 f"configuration; first difference at {where}")
        saved, mine_data = meta.get("data"), self._data_identity()
        if (not isinstance(saved, dict) or not isinstance(saved.get("cache_key"), str)
                or not isinstance(saved.get("sources"), list)):
            raise StateDictError(f"{path}: the checkpoint does not identify its data (no data.cache_key "
                                 f"and data.sources in its metadata); resuming could train on other "
                                 f"examples")
        if saved.get("cache_key") != mine_data["cache_key"]:
            changed = [f"{a.get('path')} (sha256 {str(a.get('sha256'))[:12]}... then, "
                       f"{str(b['sha256'])[:12]}... now)"
                       for a, b in zip(saved["sources"], mine_data["sources"]) if a != b and isinstance(a, dict)]
            raise StateDictError(f"{path}: the data changed since this checkpoint was written: "
                                 f"{'; '.join(changed) or 'its files or data options differ'}; "
                                 f"resuming would train on other examples")
        model_state = {k[len("model."):]: v for k, v in arrays.items() if k.startswith("model.")}
        try:
            self.model.load_state_dict(model_state)
            for group, opt in self.optimizers.items():
                prefix = f"opt.{group}."
                opt.load_state_dict({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
        except (StateDictError, ValueError) as e:
            raise StateDictError(f"{path}: {e}") from None
        permutation = arrays.get("loop.permutation")
        state = self._check_loop_state(path, meta["loop"], permutation)
        self._check_rng_states(path, meta.get("rng"))
        self._check_artefacts(path, state)
        self.permutation = np.asarray(permutation, dtype=np.int64)
        self.state = state
        for name, rng_state in meta["rng"].items():
            self.rng[name].bit_generator.state = rng_state

    def _check_loop_state(self, path: Path, loop: Any, permutation: Any) -> LoopState:
        """The loop state of ``last.npz``, refused with :class:`StateDictError` naming the
        key when a value has the wrong type or lies outside its range."""
        def bad(what: str) -> StateDictError:
            return StateDictError(f"{path}: the resume state (loop counters, batch order, generator "
                                  f"states) is damaged: {what}; resuming from it would not continue the run")

        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        fields = set(LoopState.__dataclass_fields__)
        if not isinstance(loop, dict) or set(loop) != fields:
            got = sorted(loop) if isinstance(loop, dict) else type(loop).__name__
            raise bad(f"TypeError: loop holds the keys {got}, expected {sorted(fields)}")
        step = loop["step"]
        if not is_int(step) or not 0 <= step <= self.total_steps:
            raise bad(f"loop.step = {step!r}, expected an integer in [0, {self.total_steps}] "
                      f"(this run's step budget)")
        for key in ("epoch_index", "bad_evals"):
            if not is_int(loop[key]) or not 0 <= loop[key] <= max(step, 1) + 1:
                raise bad(f"loop.{key} = {loop[key]!r}, expected an integer in [0, {max(step, 1) + 1}]")
        if not isinstance(loop["stopped_early"], bool):
            raise bad(f"loop.stopped_early = {loop['stopped_early']!r}, expected true or false")
        if not is_num(loop["seconds"]) or loop["seconds"] < 0:
            raise bad(f"loop.seconds = {loop['seconds']!r}, expected a finite number >= 0")
        if not isinstance(loop["sums"], dict) or not all(is_num(v) for v in loop["sums"].values()):
            raise bad(f"loop.sums = {loop['sums']!r}, expected finite running sums")
        history = loop["history"]
        if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
            raise bad("loop.history is not a list of evaluation rows")
        steps = [r.get("step") for r in history]
        if (not all(is_int(x) for x in steps) or any(a >= b for a, b in zip(steps, steps[1:]))
                or any(not 0 < x <= step for x in steps)):
            raise bad(f"loop.history steps {steps[:10]} are not ascending steps in [1, {step}]")
        for r in history:
            missing = [k for k in HISTORY_FIELDS if k not in r]
            if missing:
                raise bad(f"loop.history row of step {r['step']} lacks {', '.join(missing)}")
        best_auc, best_step = loop["best_auc"], loop["best_step"]
        if not is_num(best_auc) or not (best_auc == -1.0 or 0.0 <= best_auc <= 1.0):
            raise bad(f"loop.best_auc = {best_auc!r}, expected a finite AUC in [0, 1] (or -1: none yet)")
        if not is_int(best_step) or not -1 <= best_step <= step:
            raise bad(f"loop.best_step = {best_step!r}, expected an integer in [-1, {step}]")
        if best_step >= 0:
            row = next((r for r in history if r["step"] == best_step), None)
            if row is None or row.get("val_auc") != best_auc:
                raise bad(f"loop.best_step = {best_step} with best_auc {best_auc!r} does not match an "
                          f"evaluation of loop.history")
        elif best_auc != -1.0:
            raise bad(f"loop.best_auc = {best_auc!r} without a best step")
        train = self.rows["train"]
        if not isinstance(permutation, np.ndarray) or permutation.ndim != 1 or permutation.dtype.kind not in "iu":
            raise bad("loop.permutation is missing or not a 1-D integer array")
        if len(permutation) == 0:
            if loop["epoch_index"] != 0 or loop["position"] != 0:
                raise bad("loop.permutation is empty after the first epoch began")
        elif len(permutation) != len(train) or not np.array_equal(np.sort(permutation), train):
            outside = np.setdiff1d(permutation, train)
            what = (f"holds row {int(outside[0])}, which is not a training row" if len(outside)
                    else f"is not a permutation of the {len(train)} training rows")
            raise bad(f"loop.permutation {what}")
        if not is_int(loop["position"]) or not 0 <= loop["position"] <= len(permutation):
            raise bad(f"loop.position = {loop['position']!r}, expected an integer in [0, {len(permutation)}]")
        return LoopState(**loop)

    def _check_rng_states(self, path: Path, states: Any) -> None:
        """Refuse generator states that are not one state of each of this run's generators."""
        if not isinstance(states, dict) or set(states) != set(self.rng):
            got = sorted(states) if isinstance(states, dict) else type(states).__name__
            raise StateDictError(f"{path}: the resume state is damaged: rng holds {got}, expected the "
                                 f"generators {sorted(self.rng)}")
        for name, state in states.items():
            kind = type(self.rng[name].bit_generator).__name__
            if not isinstance(state, dict) or state.get("bit_generator") != kind:
                raise StateDictError(f"{path}: the resume state is damaged: rng.{name} is not a {kind} "
                                     f"state")
            probe = type(self.rng[name].bit_generator)()
            try:
                probe.state = state
            except (TypeError, ValueError, KeyError, OverflowError) as e:
                raise StateDictError(f"{path}: the resume state is damaged: rng.{name}: "
                                     f"{type(e).__name__}: {e}") from None

    def _check_artefacts(self, path: Path, state: LoopState) -> None:
        """The files the loop state refers to: ``best.npz`` must hold the recorded best
        step's weights (:meth:`_best_weights`), and ``metrics.json``, when present, must
        report this state's best step and step count."""
        self._settle_best(path.parent, state)
        if state.best_step >= 0:
            arrays, meta = self._best_weights(state, path.parent)
            if path.parent.resolve() != self.dir.resolve():      # the run continues elsewhere
                save_npz(self.dir / "best.npz", arrays, meta)
        metrics_path = self.dir / "metrics.json"
        if metrics_path.exists():
            try:
                metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as e:
                raise StateDictError(f"{metrics_path}: unreadable ({type(e).__name__}: {e}); delete it "
                                     f"to have it written again") from None
            got = ((metrics.get("best_step"), metrics.get("steps")) if isinstance(metrics, dict)
                   else (None, None))
            if got != (state.best_step, state.step):
                raise StateDictError(f"{metrics_path}: reports best step {got[0]} after {got[1]} steps, "
                                     f"but {path} is at best step {state.best_step} after {state.step} "
                                     f"steps; the files come from different runs or attempts")

    @staticmethod
    def _settle_best(directory: Path, state: LoopState) -> None:
        """Finish or undo a best-weights update that an interruption cut short: the new
        best weights are written to ``PENDING_BEST`` before ``last.npz`` and renamed to
        ``best.npz`` after it. The pending file becomes ``best.npz`` when ``last.npz``
        records its step and AUC, and is removed otherwise."""
        pending = directory / PENDING_BEST
        if not pending.exists():
            return
        try:
            _, meta = load_npz(pending, meta_only=True)
        except NpzError:
            meta = {}
        if meta.get("step") == state.best_step and meta.get("val_auc") == state.best_auc:
            os.replace(pending, directory / "best.npz")
        else:
            pending.unlink()

    def _best_weights(self, state: LoopState, directory: Path | None = None) -> tuple[dict, dict]:
        """``(arrays, meta)`` of ``best.npz`` (in ``directory``, default the run's), checked to be the weights the loop state
        selected: step ``state.best_step`` with validation AUC ``state.best_auc``, of this
        model (config, vocabulary, dtype). A missing or foreign file is refused by name."""
        best = (directory or self.dir) / "best.npz"
        if not best.exists():
            raise StateDictError(f"{best}: missing, but the run's state records its best weights at "
                                 f"step {state.best_step} (validation AUC {state.best_auc:.6f}), which "
                                 f"only best.npz holds; it cannot be scored without them")
        limits = {k: v.nbytes for k, v in self.model.state_dict().items()}
        arrays, meta = load_npz(best, limits=limits)
        saved = meta.get("model") if isinstance(meta.get("model"), dict) else {}
        describe = getattr(self.model, "checkpoint_meta", None)      # a model without one: shapes only
        mine = json.loads(json.dumps(describe())) if describe is not None else saved
        diff = ("model.vocab_sizes (another vocabulary)" if saved.get("vocab_sizes") != mine.get("vocab_sizes")
                else first_difference(saved, mine, "model"))
        if diff:
            raise StateDictError(f"{best}: weights of another model than this run's (first difference at "
                                 f"{diff})")
        if meta.get("step") != state.best_step or meta.get("val_auc") != state.best_auc:
            raise StateDictError(f"{best}: holds the weights of step {meta.get('step')!r} (validation AUC "
                                 f"{meta.get('val_auc')!r}), but the run's state records its best at step "
                                 f"{state.best_step} (AUC {state.best_auc!r}); the file comes from another "
                                 f"run or attempt")
        return arrays, meta

    def _data_identity(self) -> dict:
        """What makes the encoded data this data: the cache key (the source files' sha256
        and every data option; compared on resume) and each source's path and sha256."""
        m = self.ds.manifest
        return {"cache_key": m.get("cache_key"),
                "sources": [{"path": src.get("path"), "sha256": src.get("sha256")} for src in m.get("sources", [])]}
