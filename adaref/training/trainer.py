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

from adaref.config import ConfigError
from adaref.io import load_npz, save_npz, write_json
from adaref.model.adaensemble import first_difference
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
        seeds = np.random.SeedSequence(run.seed).spawn(5)
        self.model = build_model(run, dataset.vocab_sizes, np.random.default_rng(seeds[0]))
        self.rng = {"batches": np.random.default_rng(seeds[1]), "noise": np.random.default_rng(seeds[2]),
                    "val": np.random.default_rng(seeds[3])}
        t = run.train
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
        self.steps_per_epoch = math.ceil(len(self.rows["train"]) / t.batch_size)
        total = math.ceil(t.epochs * self.steps_per_epoch)
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
            positives = int(self.labels[rows].sum())
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
        val = self.alpha_rows
        size = min(self.run.train.batch_size, len(val))
        return self.rng["val"].choice(val, size=size, replace=False)

    def _loss(self, rows: np.ndarray, rng: np.random.Generator):
        out = model_output(self.model, self.ids[rows], step=self.state.step, rng=rng)
        t = self.run.train
        return objective(out, self.labels[rows], t.lambda1, t.lambda2, t.z_loss)

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
            return (f"no evaluation has run yet (the first is at step {self.run.train.eval_every}), "
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
                lambda: self._loss(val_rows, np.random.default_rng(seed + 1))[0], t.xi)
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
                if self.state.step % t.eval_every == 0 or self.state.step == self.total_steps:
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
        s = self.state
        count = max(s.sums.get("count", 0), 1)
        split = "val" if self.has_val else "test"
        try:
            ev = evaluate(self.model, self.ids[self.rows[split]], self.labels[self.rows[split]], step=s.step,
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
        if self.has_val:
            if ev.auc > s.best_auc:
                s.best_auc, s.best_step, s.bad_evals = ev.auc, s.step, 0
                self.model.save(self.dir / "best.npz", meta={"step": s.step, "val_auc": ev.auc})
            else:
                s.bad_evals += 1
                if self.run.train.patience and s.bad_evals >= self.run.train.patience:
                    s.stopped_early = True
        self._write_history()
        self.save_resumable()
        return row

    # ---------------------------------------------------------------------------- results
    def finish(self) -> dict[str, Any]:
        """Load the best weights, evaluate the test split, write metrics.json and plots."""
        if self.has_val and (self.dir / "best.npz").exists():
            self.model.load(self.dir / "best.npz")
        # the selected weights are scored at the k they were selected at (annealing moves k)
        step = self.state.best_step if self.state.best_step >= 0 else self.state.step
        try:
            test = evaluate(self.model, self.ids[self.rows["test"]], self.labels[self.rows["test"]],
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
                "rng": {name: g.bit_generator.state for name, g in self.rng.items()}}
        save_npz(self.dir / "last.npz", arrays, meta)

    def restore(self, path: str | os.PathLike) -> None:
        """Continue from a ``last.npz`` written by :meth:`save_resumable` of the same run."""
        arrays, meta = load_npz(path)
        mine = json.loads(json.dumps(self.run.to_dict()))
        if not isinstance(meta.get("run"), dict) or "loop" not in meta:
            raise StateDictError(f"{path}: not a resumable checkpoint (no run and loop metadata; "
                                 f"last.npz of a run directory is)")
        if meta.get("run") != mine:
            where = first_difference(meta.get("run"), mine, "run") or "run (missing)"
            raise StateDictError(f"{path}: the checkpoint belongs to a run with another "
                                 f"configuration; first difference at {where}")
        saved, mine_data = meta.get("data"), self._data_identity()
        if saved is not None and saved.get("cache_key") != mine_data["cache_key"]:
            changed = [f"{a['path']} (sha256 {a['sha256'][:12]}... then, {b['sha256'][:12]}... now)"
                       for a, b in zip(saved.get("sources", []), mine_data["sources"]) if a != b]
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
        try:
            self.permutation = arrays["loop.permutation"].astype(np.int64)
            self.state = LoopState(**meta["loop"])
            for name, state in meta["rng"].items():
                self.rng[name].bit_generator.state = state
        except (KeyError, TypeError, ValueError) as e:
            raise StateDictError(f"{path}: the resume state (loop counters, batch order, generator "
                                 f"states) is damaged: {type(e).__name__}: {e}") from None

    def _data_identity(self) -> dict:
        """What makes the encoded data this data: the cache key (the source files' sha256
        and every data option; compared on resume) and each source's path and sha256."""
        m = self.ds.manifest
        return {"cache_key": m.get("cache_key"),
                "sources": [{"path": src.get("path"), "sha256": src.get("sha256")} for src in m.get("sources", [])]}
