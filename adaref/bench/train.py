"""``python -m adaref.bench train``: the whole trainer, against the bare training step.

What ``python -m adaref.train`` does per step, on prepared data: planted-interaction
Criteo-format lines are written and prepared once (not timed), then a
:class:`~adaref.training.trainer.Trainer` with the paper's full-data setting (B = 4096,
D = 16, L = 4, G-FTRL on the embedding table, Adam elsewhere, eq. 18's regularisers) runs
its steps exactly as ``fit`` does (next batch, Algorithm 2's alpha step when bi-level is
on, the W step), for each setting:

* ``off``: one joint step on training batches (``--bilevel off``);
* ``on``: Algorithm 2, first order (xi = 0): an alpha step on a validation batch, then a
  W step;
* ``on xi``: Algorithm 2, second order (xi = 0.01, the Hessian-vector product by
  finite differences; three more forward/backward passes), with ``--xi``;
* ``on aN``: Algorithm 2, first order, alpha steps on N validation examples
  (``train.alpha_batch_size``), with ``--alpha-batch N``.

Beside them, the bare step of ``python -m adaref.bench model`` (forward, backward, one
Adam step on every parameter) on the same batch at the same k, timed in the same run.
Evaluation is excluded from the step times and reported on its own. A second, profiled
pass (cProfile; its overhead inflates Python-heavy parts a little) gives each phase's
share of the step: the alpha step, the W step's forward and backward, the optimisers,
batching, the jitter draw and the regularisers (inside both steps).
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import time
import warnings

import numpy as np

from adaref import kernels, runtime
from adaref.bench import plain
from adaref.data import load
from adaref.data.synthetic import SynthOptions, write_criteo_text
from adaref.model import AdaEnsemble
from adaref.training.config import DataChoice, run_config
from adaref.training.evaluate import evaluate
from adaref.training.trainer import Trainer

SUMMARY = "the whole trainer (Algorithm 2 on/off) against the bare step, with time per phase"
RUNTIME = "about 3 min"     # default run, 2-core machine

# cProfile function names -> phase (cumulative time; phases may nest, see the table note)
PHASES = {
    "alpha step": [("trainer.py", "_alpha_step")],
    "W step": [("trainer.py", "_w_step")],
    "  backward": [("tensor.py", "backward")],
    "  optimisers": [("optim/base.py", "step")],
    "  regularisers": [("regularizers.py", "load_fractions"), ("regularizers.py", "distribution_loss"),
                       ("regularizers.py", "z_loss")],
    "  jitter draw": [("model/gate.py", "draw_jitter")],
    "batching": [("trainer.py", "_next_batch"), ("trainer.py", "_val_batch")],
}


def _trainer(ds, directory: str, bilevel: str, xi: float, batch: int, seed: int,
             alpha_batch: int = 0) -> Trainer:
    base = run_config("paper")
    run = base.replace(data=DataChoice(preset="paper", sample=False, path="planted"), seed=seed,
                       train=base.train.replace(bilevel=bilevel, xi=xi, batch_size=batch,
                                                alpha_batch_size=alpha_batch,
                                                eval_every=10 ** 9, max_steps=10 ** 9))
    return Trainer(run, ds, directory, quiet=True)


def _step(trainer: Trainer, times: dict | None = None) -> None:
    """One step of ``Trainer.fit``'s loop (without its evaluation)."""
    t = trainer.run.train
    t0 = time.perf_counter()
    rows = trainer._next_batch()
    t1 = time.perf_counter()
    if t.bilevel == "on" and trainer.state.step % t.inner_steps == 0:
        trainer._alpha_step(rows)
    t2 = time.perf_counter()
    trainer._w_step(rows)
    t3 = time.perf_counter()
    if times is not None:
        for key, dt in (("batch", t1 - t0), ("alpha", t2 - t1), ("w", t3 - t2), ("total", t3 - t0)):
            times.setdefault(key, []).append(dt)


def _bare_step(model: AdaEnsemble, ids: np.ndarray, labels: np.ndarray, k: int):
    """``python -m adaref.bench model``'s training step: forward in the training form, loss
    and regularisers, backward, one Adam step on every parameter."""
    from adaref.bench.model import _loss
    from adaref.optim import Adam

    rng, opt = np.random.default_rng(0), Adam(model.named_parameters(), lr=1e-3)
    model.train()

    def step():
        model.zero_grad()
        _loss(model(ids, k=k, rng=rng), labels.astype(np.float32)).backward()
        opt.step()
    return step


def _shares(profile: cProfile.Profile, total: float) -> dict[str, float]:
    stats = pstats.Stats(profile).stats            # (file, line, name) -> (cc, nc, tt, ct, callers)
    out = {}
    for phase, keys in PHASES.items():
        ct = 0.0
        for (path, _, name), (_, _, _, cum, _) in stats.items():
            if any(path.endswith(f) and name == n for f, n in keys):
                ct += cum
        out[phase] = ct / total
    return out


def main(argv: list[str]) -> int:
    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    p = argparse.ArgumentParser(allow_abbrev=False, prog="python -m adaref.bench train",
                                description=plain(__doc__), formatter_class=Formatter)
    p.add_argument("--rows", type=int, default=100_000, help="planted rows to generate and prepare")
    p.add_argument("--batch", type=int, default=4096, help="training batch size (the paper's 4096)")
    p.add_argument("--steps", type=int, default=6, help="timed steps per setting (after 2 untimed ones)")
    p.add_argument("--profile-steps", type=int, default=3, help="steps of the profiled pass per setting")
    p.add_argument("--xi", action="store_true", help="also time Algorithm 2's second order (xi = 0.01)")
    p.add_argument("--alpha-batch", type=int, default=0,
                   help="also time Algorithm 2 with alpha steps on this many validation examples "
                        "(train.alpha_batch_size; 0: not)")
    p.add_argument("--seed", type=int, default=0, help="data, split and initialisation seed")
    args = p.parse_args(argv)
    if args.rows < 10 * args.batch:
        p.error(f"--rows {args.rows} is too small for --batch {args.batch}: give at least 10 batches")

    with tempfile.TemporaryDirectory(prefix="adaref-bench-train-") as tmp:
        text = os.path.join(tmp, "planted.txt")
        write_criteo_text(SynthOptions(rows=args.rows, seed=args.seed), text)
        ds = load("criteo", input=text, out=os.path.join(tmp, "prepared"), seed=args.seed)
        settings = ([("off", 0.0, 0), ("on", 0.0, 0)] + ([("on", 0.01, 0)] if args.xi else [])
                    + ([("on", 0.0, args.alpha_batch)] if args.alpha_batch else []))
        print(f"planted Criteo-format data, {args.rows:,} rows (train {len(ds.splits['train']):,}); "
              f"paper preset, B = {args.batch}, D = 16, L = 4, float32, G-FTRL + Adam; kernels: "
              f"{kernels.backend()}, {runtime.describe()}")
        results = {}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="gate combine='gates' with k = 1")
            for bilevel, xi, alpha_batch in settings:
                name = f"{bilevel}{' xi' if xi else ''}{f' a{alpha_batch}' if alpha_batch else ''}"
                trainer = _trainer(ds, os.path.join(tmp, f"run-{name}"), bilevel, xi, args.batch, args.seed,
                                   alpha_batch)
                # the bare step of `bench model` on a batch of the same data, at the trainer's k, same
                # model config; timed in alternation with the trainer's steps (same conditions)
                rows = trainer.rows["train"][:args.batch]
                bare_model = AdaEnsemble(trainer.run.model, ds.vocab_sizes, rng=np.random.default_rng(0),
                                         dtype=np.float32)
                k = trainer.model.k_schedule(trainer.state.step)
                bare_step = _bare_step(bare_model, trainer.ids[rows], trainer.labels[rows], k)
                for _ in range(2):                      # untimed: compilation, optimiser state
                    _step(trainer)
                    bare_step()
                times: dict = {}
                for _ in range(args.steps):
                    _step(trainer, times)
                    t0 = time.perf_counter()
                    bare_step()
                    times.setdefault("bare", []).append(time.perf_counter() - t0)
                k = trainer.model.k_schedule(trainer.state.step)
                profile = cProfile.Profile()
                t0 = time.perf_counter()
                profile.enable()
                for _ in range(args.profile_steps):
                    _step(trainer)
                profile.disable()
                shares = _shares(profile, time.perf_counter() - t0)
                val = trainer.rows["val"]
                t0 = time.perf_counter()
                evaluate(trainer.model, trainer.ids[val], trainer.labels[val], step=trainer.state.step,
                         batch_size=trainer.run.train.eval_batch_size)
                eval_rate = len(val) / (time.perf_counter() - t0)
                results[name] = (times, args.batch / float(np.median(times["bare"])), shares, eval_rate, k)

    head = (f"{'bilevel':<9} {'k':>2} | {'trainer ex/s':>12} {'bare ex/s':>10} {'ratio':>6} | "
            f"{'W step s':>8} {'alpha s':>8} {'outer/bare W':>12} | {'eval ex/s':>9}")
    print(head + "\n" + "-" * len(head))
    for name, (times, bare_rate, _, eval_rate, k) in results.items():
        med = {key: float(np.median(v)) for key, v in times.items()}
        rate = args.batch / med["total"]
        bare_s = args.batch / bare_rate
        print(f"{name:<9} {k:>2} | {rate:>12,.0f} {bare_rate:>10,.0f} {rate / bare_rate:>6.2f} | "
              f"{med['w']:>8.3f} {med['alpha']:>8.3f} {(med['alpha'] + med['w']) / bare_s:>12.2f} | "
              f"{eval_rate:>9,.0f}")
    print("\nshare of a step's time per phase (profiled pass; indented phases are part of the W step")
    print("and, for backward, regularisers and jitter, also of the alpha step):")
    names = list(results)
    print(f"{'phase':<16}" + "".join(f"{n:>11}" for n in names))
    for phase in PHASES:
        print(f"{phase:<16}" + "".join(f"{100 * results[n][2][phase]:>10.1f}%" for n in names))
    print("\ntrainer ex/s: B / median time of a whole step (batching, alpha step, W step with G-FTRL and")
    print("Adam); bare ex/s: `bench model`'s step (forward, loss, backward, Adam on all parameters) at")
    print("the same k on the same batch; outer/bare W: (alpha step + W step) / bare step (target <= 1.5);")
    print("eval: one evaluation of the validation split (hard exit and soft mixture), not in the steps.")
    return 0
