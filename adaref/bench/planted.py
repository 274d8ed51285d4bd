"""``python -m adaref.bench planted``: does AdaEnsemble learn the planted interactions?

Generates Criteo-shaped data with :mod:`adaref.data.synthetic` (a click probability that
mixes linear, FM, bit-wise cross, Hadamard and attention-like terms, every row's true
probability known), trains AdaEnsemble and each single-expert model (same depth, one
expert, k = 1, no controller) with the same training options, and prints each model's
test AUC and log-loss beside the Bayes-optimal values of the same split (the true
probabilities scored as predictions).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from adaref.data.dataset import open_encoded
from adaref.data.synthetic import SynthOptions, bayes_optimal, synthesize
from adaref.model import model_config
from adaref.training.config import DataChoice, OptimizerChoice, RunConfig, TrainConfig
from adaref.training.trainer import Trainer


def _run_config(experts: tuple[str, ...], k: int, controller: bool, args) -> RunConfig:
    model = model_config("paper", dim=args.dim, num_layers=args.layers)
    moe = {**model.moe.to_dict(), "experts": experts,
           "schedule": {"kind": "linear" if len(experts) > 1 else "constant", "k": k, "steps": 200}}
    ctl = {**model.controller.to_dict(), "enabled": controller, "train_form": "straight_through"}
    model = model.replace(moe=moe, controller=ctl)
    train = TrainConfig(batch_size=args.batch, epochs=args.epochs, eval_every=args.eval_every, patience=4,
                        bilevel="off", embedding_optimizer=OptimizerChoice("gftrl", {"alpha": 0.05}))
    return RunConfig(data=DataChoice(sample=False, path="synthetic"), model=model, train=train,
                     dtype="float32")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m adaref.bench planted", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--max-vocab", type=int, default=100, help="largest field vocabulary of the generator")
    p.add_argument("--fields", type=int, default=39, help="number of fields F of the generator")
    p.add_argument("--dim", type=int, default=8)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--epochs", type=float, default=4.0)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--models", default="adaensemble,dense,conv,mhsa,pin,cross")
    p.add_argument("--out", default=None, help="working directory (default: a temporary one)")
    args = p.parse_args(argv)
    work = args.out or tempfile.mkdtemp(prefix="adaref-planted-")
    data_dir = os.path.join(work, "data")
    if not os.path.exists(os.path.join(data_dir, "manifest.json")):
        synthesize(SynthOptions(rows=args.rows, max_vocab=args.max_vocab, n_fields=args.fields), data_dir)
    ds = open_encoded(data_dir)
    test = ds.splits["test"]
    bayes = bayes_optimal(np.asarray(ds.labels)[test], np.asarray(ds.probs)[test])
    print(f"planted data: {len(ds.ids):,} rows, {ds.ids.shape[1]} fields (vocabularies up to "
          f"{max(ds.vocab_sizes)}); test {len(test):,} rows; "
          f"D = {args.dim}, L = {args.layers}, batch {args.batch}, {args.epochs} epochs at most")
    print(f"{'model':<22}{'test AUC':>9}{'gap':>8}{'log-loss':>10}{'gap':>8}{'MFLOPs':>8}{'time':>7}")
    print(f"{'Bayes-optimal':<22}{bayes['auc']:>9.4f}{'':>8}{bayes['log_loss']:>10.4f}")
    for name in args.models.split(","):
        if name == "adaensemble":
            run, label = _run_config(("dense", "conv", "mhsa", "pin", "cross"), args.k, True, args), \
                f"AdaEnsemble k={args.k}"
        else:
            run, label = _run_config((name,), 1, False, args), f"{name} only"
        start = time.perf_counter()
        trainer = Trainer(run, ds, os.path.join(work, name), quiet=True)
        trainer.fit()
        m = trainer.finish()["test"]
        print(f"{label:<22}{m['auc']:>9.4f}{m['auc'] - bayes['auc']:>+8.4f}{m['log_loss']:>10.4f}"
              f"{m['log_loss'] - bayes['log_loss']:>+8.4f}{m['mean_flops'] / 1e6:>8.3f}"
              f"{time.perf_counter() - start:>6.0f}s", flush=True)
    return 0
