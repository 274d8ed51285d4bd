"""``python -m adaref.train``: the main job.

Until the AdaEnsemble model and Algorithm 2 land (issues 5 and 6), this runs a
**documented demo** of the stack they stand on: it prepares a data set (the bundled
real sample or a full file) with the chosen preset, trains a logistic regression on the
field ids -- logit(x) = b + sum_f w_f[id_f], i.e. an embedding of dimension 1 per field
value plus a bias, the paper's LR baseline (§4.1.3) -- with adaref's autograd and its
FTRL-Proximal optimiser (§4.1.4 trains LR with FTRL), picks the epoch with the best
validation AUC, and prints validation and test AUC and log-loss.

    python -m adaref.train --sample criteo
    python -m adaref.train --data train.txt --dataset criteo --epochs 2
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from adaref import no_grad, ops
from adaref.metrics import auc, log_loss
from adaref.nn import Embedding, Module, Parameter
from adaref.optim import FTRL
from adaref.tensor import Tensor


class LogisticRegression(Module):
    """logit(x) = b + sum_f w_f[id_f]: ids (B, F) -> logits (B,)."""

    def __init__(self, vocab_sizes, *, rng: np.random.Generator, oov: str = "learned"):
        super().__init__()
        self.weights = Embedding(vocab_sizes, dim=1, rng=rng, oov=oov, std=0.0)
        self.bias = Parameter(np.zeros(1))

    def forward(self, ids: np.ndarray) -> Tensor:
        return self.weights(ids).sum(axis=(1, 2)) + self.bias           # (B,)


def logistic_loss(logits: Tensor, labels: np.ndarray) -> Tensor:
    """Mean binary cross-entropy from logits, stable: softplus(z) - y z."""
    z = logits
    softplus = ops.relu(z) + ops.log(1.0 + ops.exp(-ops.abs(z)))
    return (softplus - z * labels.astype(z.dtype)).mean()


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m adaref.train",
        description="Train on a CTR data set. Until the AdaEnsemble model lands this trains the "
                    "logistic-regression demo described in the module docstring.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--sample", choices=["criteo", "avazu", "ipinyou"],
                     help="use the bundled real sample of this data set (data_samples/)")
    src.add_argument("--data", metavar="PATH", help="a raw data file (use with --dataset)")
    p.add_argument("--dataset", choices=["criteo", "avazu", "ipinyou"],
                   help="format of --data")
    p.add_argument("--preset", choices=["paper", "upstream"], default="paper",
                   help="data preset (paper-decisions rows 1-3); default paper")
    p.add_argument("--epochs", type=int, default=8, help="passes over the training split (default 8)")
    p.add_argument("--batch-size", type=int, default=256, help="mini-batch size (default 256)")
    p.add_argument("--alpha", type=float, default=1.0, help="FTRL alpha (default 1.0)")
    p.add_argument("--l2", type=float, default=0.1, help="FTRL lambda_2 (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, init and batch order")
    p.add_argument("--out", metavar="DIR", help="cache directory for the encoded data")
    p.add_argument("--quiet", action="store_true", help="print only the final table")
    args = p.parse_args(argv)
    if args.data and not args.dataset:
        p.error("--data needs --dataset criteo|avazu|ipinyou")
    if args.epochs < 1 or args.batch_size < 1:
        p.error("--epochs and --batch-size must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    from adaref.data import load

    args = parse_args(sys.argv[1:] if argv is None else argv)
    dataset = args.sample or args.dataset
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    start = time.perf_counter()
    ds = load(dataset, sample=bool(args.sample), input=args.data, preset=args.preset,
              out=args.out, seed=args.seed, progress=not args.quiet)
    ids, labels = np.asarray(ds.ids), np.asarray(ds.labels, dtype=np.float64)
    split = ds.splits
    say(f"data: {dataset} ({'bundled sample' if args.sample else args.data}), preset {args.preset}: "
        f"{len(ids)} rows, {ids.shape[1]} fields; train/val/test "
        f"{len(split['train'])}/{len(split['val'])}/{len(split['test'])}")

    rng = np.random.default_rng(args.seed)
    model = LogisticRegression(ds.vocab_sizes, rng=rng, oov=ds.oov_embedding)
    opt = FTRL(model.named_parameters(), alpha=args.alpha, l2=args.l2)

    def predict(rows: np.ndarray) -> np.ndarray:
        with no_grad():
            return ops.sigmoid(model(ids[rows])).data

    best = None
    train_rows = split["train"]
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(train_rows)
        total = 0.0
        for i in range(0, len(order), args.batch_size):
            rows = order[i:i + args.batch_size]
            model.zero_grad()
            loss = logistic_loss(model(ids[rows]), labels[rows])
            loss.backward()
            opt.step()
            total += loss.item() * len(rows)
        p_val = predict(split["val"])
        val_auc, val_ll = auc(labels[split["val"]], p_val), log_loss(labels[split["val"]], p_val)
        say(f"epoch {epoch}: train log-loss {total / len(order):.4f}, val AUC {val_auc:.4f}, "
            f"val log-loss {val_ll:.4f}")
        if best is None or val_auc > best[1]:
            best = (epoch, val_auc, val_ll, model.state_dict())
    epoch, val_auc, val_ll, state = best
    model.load_state_dict(state)
    p_test = predict(split["test"])
    test_auc, test_ll = auc(labels[split["test"]], p_test), log_loss(labels[split["test"]], p_test)
    print(f"\nlogistic regression (demo; AdaEnsemble lands with issues 5-6), best epoch {epoch}")
    print(f"{'split':<6}{'AUC':>8}{'log-loss':>10}")
    print(f"{'val':<6}{val_auc:>8.4f}{val_ll:>10.4f}")
    print(f"{'test':<6}{test_auc:>8.4f}{test_ll:>10.4f}")
    print(f"time {time.perf_counter() - start:.1f}s; encoded data in {ds.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
