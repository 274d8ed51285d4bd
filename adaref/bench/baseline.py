"""``python -m adaref.bench baseline``: a logistic-regression baseline on the same splits.

Logistic regression on one-hot features, trained with FTRL-Proximal (McMahan et al.
2013; :class:`adaref.optim.FTRL`), the paper's LR baseline (§4.1.2, Table 2), on exactly
the encoded data and train/validation/test split that ``python -m adaref.train
--sample NAME --seed S`` uses (same preset, same seed):

    logit(x) = b + sum_f w_f[id_f(x)]        one weight per (field, id), OOV rows included

Mini-batches of ``--batch`` rows in a seeded random order, the mean log-loss, one
evaluation on the validation split per epoch; the epoch with the best validation AUC is
scored on the test split. It gives context for the AdaEnsemble numbers of the README.
The defaults (alpha 1, beta 1, l2 1, 20 epochs) had the best mean validation AUC of
alpha in {0.1, 0.3, 1} x l2 in {0, 1, 10} on the Criteo sample, seeds 0-2.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from adaref import Tensor, no_grad, ops
from adaref.argtypes import integer, integer_list, number
from adaref.bench import plain
from adaref.data import load
from adaref.metrics import auc, log_loss
from adaref.nn import Parameter
from adaref.optim import FTRL


SUMMARY = "FTRL logistic regression on the splits adaref.train uses (the README's LR comparison)"
RUNTIME = "about 5 s"     # default run, 2-core machine

class LogisticRegression:
    """b + sum_f w[offset_f + id_f] for per-field ids (B, F); weights start at 0."""

    def __init__(self, vocab_sizes: list[int]):
        self.offsets = np.concatenate([[0], np.cumsum(vocab_sizes)[:-1]]).astype(np.int64)  # (F,)
        self.w = Parameter(np.zeros((int(np.sum(vocab_sizes)), 1)))                        # (V, 1)
        self.b = Parameter(np.zeros(1))                                                    # (1,)

    def logit(self, ids: np.ndarray) -> Tensor:
        rows = ops.embedding(self.w, ids + self.offsets)                                   # (B, F, 1)
        return ops.sum(rows, axis=(1, 2)) + self.b                                         # (B,)

    def predict(self, ids: np.ndarray, batch: int = 8192) -> np.ndarray:
        with no_grad():
            return np.concatenate([ops.sigmoid(self.logit(ids[i:i + batch])).data
                                   for i in range(0, len(ids), batch)])


def fit(ds, *, seed: int, epochs: int, batch: int, alpha: float, beta: float, l1: float,
        l2: float) -> dict:
    """Train on ds's training split, keep the epoch with the best validation AUC, and
    return its validation and test metrics."""
    ids, labels = np.asarray(ds.ids, dtype=np.int64), np.asarray(ds.labels, dtype=np.float64)
    split = ds.splits
    model = LogisticRegression(ds.vocab_sizes)
    opt = FTRL([("w", model.w), ("b", model.b)], alpha=alpha, beta=beta, l1=l1, l2=l2)
    rng = np.random.default_rng(seed)
    best = {"val_auc": -1.0}
    for epoch in range(1, epochs + 1):
        order = rng.permutation(split["train"])
        for start in range(0, len(order), batch):
            rows = order[start:start + batch]
            p = ops.clip(ops.sigmoid(model.logit(ids[rows])), 1e-7, 1 - 1e-7)
            y = labels[rows]
            loss = -(ops.log(p) * y + ops.log(1.0 - p) * (1.0 - y)).mean()
            model.w.grad = model.b.grad = None
            loss.backward()
            opt.step()
        val = model.predict(ids[split["val"]])
        score = auc(labels[split["val"]], val)
        if score > best["val_auc"]:
            test = model.predict(ids[split["test"]])
            best = {"epoch": epoch, "val_auc": score, "test_auc": auc(labels[split["test"]], test),
                    "test_log_loss": log_loss(labels[split["test"]], test)}
    return best


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m adaref.bench baseline", description=plain(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--sample", choices=["criteo", "avazu", "ipinyou"], default="criteo",
                   help="the bundled sample to use (default criteo)")
    p.add_argument("--preset", choices=["paper", "upstream"], default="paper",
                   help="data preset, as adaref.train's --preset (upstream has no validation split)")
    p.add_argument("--seeds", type=integer_list(0), default=[0, 1, 2],
                   help="comma-separated split seeds (adaref.train's --seed)")
    p.add_argument("--epochs", type=integer(1), default=20, help="passes over the training split")
    p.add_argument("--batch", type=integer(1), default=256, help="mini-batch size")
    p.add_argument("--alpha", type=number(0.0, above=True), default=1.0,
                   help="FTRL alpha (per-coordinate rate scale)")
    p.add_argument("--beta", type=number(0.0), default=1.0, help="FTRL beta")
    p.add_argument("--l1", type=number(0.0), default=0.0, help="FTRL l1")
    p.add_argument("--l2", type=number(0.0), default=1.0, help="FTRL l2")
    args = p.parse_args(argv)
    seeds = args.seeds
    if args.preset == "upstream":
        p.error("--preset upstream has no validation split to pick the epoch on; use paper")
    print(f"FTRL logistic regression on the {args.sample} sample ({args.preset} preset): alpha {args.alpha}, "
          f"beta {args.beta}, l1 {args.l1}, l2 {args.l2}, batch {args.batch}, up to {args.epochs} epochs")
    print(f"{'seed':>4} {'epoch':>5} {'val AUC':>8} {'test AUC':>9} {'test log-loss':>14} {'seconds':>8}")
    results = []
    for seed in seeds:
        start = time.perf_counter()
        ds = load(args.sample, sample=True, preset=args.preset, seed=seed)
        r = fit(ds, seed=seed, epochs=args.epochs, batch=args.batch, alpha=args.alpha, beta=args.beta,
                l1=args.l1, l2=args.l2)
        results.append(r)
        print(f"{seed:>4} {r['epoch']:>5} {r['val_auc']:>8.4f} {r['test_auc']:>9.4f} "
              f"{r['test_log_loss']:>14.4f} {time.perf_counter() - start:>8.1f}")
    aucs = [r["test_auc"] for r in results]
    print(f"test AUC: mean {np.mean(aucs):.4f}, range {min(aucs):.4f}-{max(aucs):.4f}")
    return 0
