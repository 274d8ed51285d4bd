"""``python -m adaref.bench model``: AdaEnsemble throughput against its FLOPs.

At B = 4096, F = 39, D = 16, L = 4, float32, paper preset (random ids; a randomly
initialised model): inference (evaluation mode, hard exit of Algorithm 1, or full depth
without the controller) and training steps (forward in the training form, log-loss plus
regularisers, backward, an Adam step) in examples/s for k = 1..5 with and without the
controller, beside the FLOPs ratio, the share of an inference batch spent in the experts'
forward passes (the rest is what does not shrink with k: gates, dispatch copies, the
combine and LayerNorm, estimators, the controller, the embedding), and the share of a
training step spent in dispatch and combine (the combine includes the layer's residual
sum, which it starts from).
Each throughput is a median over timed rounds that visit every setting in turn (inference
and training separately), so the ratios compare batches run under the same conditions. The
kernels' Numba vs NumPy-twin comparison is ``python -m adaref.bench experts``.

Sparsity pays if time ratios track FLOPs ratios (the target is within 25%).
"""
from __future__ import annotations

import argparse
import os
import time
import warnings
from contextlib import contextmanager

import numpy as np

from adaref import kernels, no_grad, ops, runtime
from adaref.argtypes import integer_list
from adaref.bench import plain
from adaref.model import AdaEnsemble, model_config
from adaref.model import dispatcher
from adaref.optim import Adam


SUMMARY = "AdaEnsemble throughput (inference and training) against its FLOPs, k = 1..5"
RUNTIME = "about 75 s"     # default run, 2-core machine

@contextmanager
def _timed(methods, acc: list[float]):
    """Add the time spent in the methods ``[(class, name), ...]`` to acc[0]."""
    originals = {(cls, name): getattr(cls, name) for cls, name in methods}
    for (cls, name), fn in originals.items():
        def wrapped(self, *a, _fn=fn, **kw):
            t = time.perf_counter()
            try:
                return _fn(self, *a, **kw)
            finally:
                acc[0] += time.perf_counter() - t

        setattr(cls, name, wrapped)
    try:
        yield
    finally:
        for (cls, name), fn in originals.items():
            setattr(cls, name, fn)


DISPATCH = [(cls, name) for cls in (dispatcher.DispatchRows, dispatcher.Combine)
            for name in ("forward", "backward")]    # dispatch/combine, forward and backward


def _expert_forwards(models: dict) -> list:
    """The forward methods of every expert class the models use."""
    kinds = {type(e) for model, _ in models.values() for layer in model.layers
             for _, e in layer.experts.named_children()}
    return [(cls, "forward") for cls in kinds]


def _loss(out, labels):
    p = ops.clip(out.prob, 1e-7, 1 - 1e-7)
    loss = -(ops.log(p) * labels + ops.log(1.0 - p) * (1 - labels)).mean() + out.expert_loss * 0.01
    return loss + out.depth_loss * 0.01 if out.depth_loss is not None else loss


def measure_inference(models: dict, ids, rounds: int) -> dict:
    """{setting: (examples/s, mean FLOPs per example, experts' share)} of inference
    (evaluation mode) for {setting: (model, k)}: two untimed batches per setting (JIT,
    caches, the allocator's first pages), then ``rounds`` rounds that each time one batch
    of every setting in turn, so that a slow phase of the machine hits all settings
    alike; the median of each setting's times, and the share of its timed batches spent
    in the experts' forward passes."""
    times, flops, experts = {s: [] for s in models}, {}, {s: 0.0 for s in models}
    expert_forwards = _expert_forwards(models)
    with no_grad():
        for model, _ in models.values():
            model.eval()
        for r in range(-2, rounds):                            # rounds -2, -1: warm-up
            for s, (model, k) in models.items():
                acc = [0.0]
                with _timed(expert_forwards, acc):
                    t = time.perf_counter()
                    out = model(ids, k=k)
                    dt = time.perf_counter() - t
                if r >= 0:
                    times[s].append(dt)
                    experts[s] += acc[0]
                flops[s] = out.flops.mean()
    return {s: (len(ids) / float(np.median(times[s])), flops[s], experts[s] / sum(times[s]))
            for s in models}


def measure_training(models: dict, ids, labels, rounds: int) -> dict:
    """{setting: {train: examples/s, flops_train: mean FLOPs per example, dispatch_share}}
    of a training step (forward in the training form, loss, backward, an Adam step) for
    {setting: (model, k)}: one untimed step per setting, then ``rounds`` rounds that each
    time one step of every setting in turn (as :func:`measure_inference`); the median of
    each setting's times, and the share of its timed steps spent in dispatch and combine."""
    steps, out = {}, {}
    for s, (model, k) in models.items():
        rng = np.random.default_rng(0)
        opt = Adam(model.named_parameters(), lr=1e-3)
        model.train()

        def step(model=model, k=k, rng=rng, opt=opt):
            model.zero_grad()
            o = model(ids, k=k, rng=rng)
            _loss(o, labels).backward()
            opt.step()
            return o

        steps[s] = step
        out[s] = step()                                        # untimed: JIT, caches, Adam state
    times, shares = {s: [] for s in models}, {s: 0.0 for s in models}
    for _ in range(rounds):
        for s, step in steps.items():
            acc = [0.0]
            with _timed(DISPATCH, acc):
                t = time.perf_counter()
                out[s] = step()
                times[s].append(time.perf_counter() - t)
            shares[s] += acc[0]
    return {s: {"train": len(ids) / float(np.median(times[s])), "flops_train": out[s].flops.mean(),
                "dispatch_share": shares[s] / sum(times[s])} for s in models}


def main(argv: list[str]) -> int:
    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    p = argparse.ArgumentParser(allow_abbrev=False, prog="python -m adaref.bench model", description=plain(__doc__),
                                formatter_class=Formatter)
    p.add_argument("--batch", type=int, default=4096, help="examples per batch")
    p.add_argument("--repeats", type=int, default=3,
                   help="rounds of timed training steps, one step of every setting per round (median)")
    p.add_argument("--infer-repeats", type=int, default=10,
                   help="rounds of timed inference, one batch of every setting per round (median)")
    p.add_argument("--ks", default="1,2,3,4,5", type=integer_list(1, 5),
                   help="comma-separated k values in 1..5; the largest is the base of the ratios")
    args = p.parse_args(argv)
    F, D, L, B = 39, 16, 4, args.batch
    vocab = [1000] * F
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 1000, size=(B, F))
    labels = rng.integers(0, 2, size=B).astype(np.float32)
    print(f"B = {B}, F = {F}, D = {D}, L = {L}, float32, paper preset, kernels: {kernels.backend()}, "
          f"OPENBLAS_THREAD_TIMEOUT={os.environ.get('OPENBLAS_THREAD_TIMEOUT')}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, {runtime.describe()}")
    ks = args.ks
    tt, ff = f"t/t{max(ks)}", f"F/F{max(ks)}"
    head = (f"{'k':>2} {'controller':>10} | {'infer ex/s':>10} {'FLOPs':>6} {tt:>5} {ff:>5} "
            f"{'ratio':>6} | {'train ex/s':>10} {'FLOPs':>6} {tt:>5} {ff:>5} {'ratio':>6} "
            f"{'disp+comb':>9} {'experts':>7}")
    print(head + "\n" + "-" * len(head))

    settings = [(controller, k) for controller in (True, False) for k in ks]
    models = {}
    for controller, k in settings:
        cfg = model_config("paper", dim=D, num_layers=L, controller={"enabled": controller})
        models[controller, k] = (AdaEnsemble(cfg, vocab, rng=np.random.default_rng(0), dtype=np.float32), k)
    with warnings.catch_warnings():       # k = 1 with combine="gates" warns by design
        warnings.filterwarnings("ignore", message="gate combine='gates' with k = 1")
        infer = measure_inference(models, ids, args.infer_repeats)
        train = measure_training(models, ids, labels, args.repeats)
    rows = []
    for controller, k in settings:
        r = train[controller, k]
        r["infer"], r["flops_infer"], r["experts_share"] = infer[controller, k]
        rows.append((k, controller, r))
    base = {c: next(r for k, cc, r in rows if cc == c and k == max(ks)) for c in (True, False)}
    for k, controller, r in rows:
        cells = []
        for mode in ("infer", "train"):
            t_ratio = base[controller][mode] / r[mode]                  # time relative to k = max
            f_ratio = r[f"flops_{mode}"] / base[controller][f"flops_{mode}"]
            flag = "*" if t_ratio / f_ratio > 1.25 else " "
            cells.append(f"{r[mode]:>10,.0f} {r[f'flops_{mode}'] / 1e6:>5.2f}M {t_ratio:>5.2f} "
                         f"{f_ratio:>5.2f} {t_ratio / f_ratio:>5.2f}{flag}")
        print(f"{k:>2} {('yes' if controller else 'no'):>10} | {cells[0]} | {cells[1]} "
              f"{100 * r['dispatch_share']:>8.1f}% {100 * r['experts_share']:>6.1f}%")
    print(f"\n{tt}: time per batch relative to k = {max(ks)} (same controller setting); {ff}: the same")
    print(f"for the mean FLOPs per example (forward, along each example's route); ratio: ({tt}) / ({ff}),")
    print("* where time does not track FLOPs within 25%. Inference uses the hard exit (Algorithm 1)")
    print("with the controller and all L layers without; a training step uses the controller's")
    print("training form (every example through all L layers) plus backward and the Adam step.")
    print("disp+comb: share of a training step spent in dispatch and combine (forward + backward).")
    print("experts: share of an inference batch spent in the experts' forward passes; the experts'")
    print(f"time relative to k = {max(ks)} is ({tt}) x (experts) / (experts at k = {max(ks)}).")
    return 0
