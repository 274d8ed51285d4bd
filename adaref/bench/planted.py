"""``python -m adaref.bench planted``: does AdaEnsemble learn the planted interactions?

Generates Criteo-shaped data with :mod:`adaref.data.synthetic` (a click probability that
mixes linear, FM, bit-wise cross, Hadamard and attention-like terms, every row's true
probability known), trains AdaEnsemble and each single-expert model (same depth, one
expert, k = 1, no controller) with the same training options, and prints each model's
test AUC and log-loss beside the Bayes-optimal values of the same split (the true
probabilities scored as predictions).

The term columns show which planted interactions each model learned: the least-squares
coefficients of the model's test logit on the five planted terms (each term's share of
the true logit; the true logit is their sum plus a constant, so the true model scores
1 on every term, and a term a model cannot represent scores near 0). Last, for every
term a single expert has no explicit mechanism for (:data:`CANNOT_FORM`), it says whether
AdaEnsemble's coefficient is closer to 1 than that expert's.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings

import numpy as np

from adaref import no_grad
from adaref.data.dataset import open_encoded
from adaref.data.config import OptionsError
from adaref.data.synthetic import TERMS, SynthOptions, bayes_optimal, synthesize
from adaref.model import model_config
from adaref.training.config import DataChoice, OptimizerChoice, RunConfig, TrainConfig
from adaref.training.trainer import Trainer

EXPERTS = ("dense", "conv", "mhsa", "pin", "cross")

#: The planted terms each single expert has no explicit mechanism for (eqs. 2-6): dense
#: (eq. 2) and conv (eq. 3) build ReLU / max-pooling maps of the embeddings, no
#: products; MHSA (eq. 4) forms products only inside its softmax and returns a convex
#: mix of values, no plain products; PIN (eq. 5) and cross (eq. 6) build products of
#: the embeddings (polynomials of degree L + 1), and a softmax is not one. A heuristic,
#: not a proof: the residual and the layer norm after every layer (``moe.norm``) and
#: free per-level embeddings let every stack approximate any of these terms on small
#: vocabularies. Every expert can carry the linear term.
CANNOT_FORM = {
    "dense": ("fm", "cross", "hadamard", "attention"),
    "conv": ("fm", "cross", "hadamard", "attention"),
    "mhsa": ("fm", "cross", "hadamard"),
    "pin": ("attention",),
    "cross": ("attention",),
}


def compare_on_unformable(coefs: dict[str, np.ndarray],
                          planted: tuple[str, ...] = TERMS) -> list[tuple[str, str, float, float]]:
    """(expert, term, AdaEnsemble's coefficient, the expert's) for every term in
    ``planted`` (the terms with a non-zero weight) that the single expert has no
    mechanism for (:data:`CANNOT_FORM`), for the experts in ``coefs``.

    >>> c = {"adaensemble": np.array([1, .9, .9, .9, .9]), "pin": np.array([1, 1, 1, 1, .8])}
    >>> compare_on_unformable(c)
    [('pin', 'attention', 0.9, 0.8)]
    >>> compare_on_unformable(c, planted=("linear", "fm"))
    []
    """
    ada = coefs["adaensemble"]
    return [(name, term, float(ada[TERMS.index(term)]), float(c[TERMS.index(term)]))
            for name, c in coefs.items() if name in CANNOT_FORM
            for term in CANNOT_FORM[name] if term in planted]


def _run_config(experts: tuple[str, ...], k: int, controller: bool, args) -> RunConfig:
    model = model_config("paper", dim=args.dim, num_layers=args.layers)
    anneal = len(experts) > 1 and k < len(experts)
    moe = {**model.moe.to_dict(), "experts": experts,
           "schedule": {"kind": "linear" if anneal else "constant", "k": k, "steps": args.k_steps}}
    ctl = {**model.controller.to_dict(), "enabled": controller, "train_form": "straight_through"}
    model = model.replace(moe=moe, controller=ctl)
    adam = OptimizerChoice("adam", {"lr": args.lr})
    embedding = OptimizerChoice("gftrl", {"alpha": args.gftrl_alpha}) if args.gftrl_alpha > 0 else adam
    train = TrainConfig(batch_size=args.batch, epochs=args.epochs, eval_every=args.eval_every,
                        patience=args.patience, bilevel=args.bilevel, lambda1=args.lambda1, lambda2=args.lambda2,
                        embedding_optimizer=embedding, optimizer=adam, gate_optimizer=adam)
    return RunConfig(data=DataChoice(sample=False, path="synthetic"), model=model, train=train,
                     dtype="float32", seed=args.seed)


def _manifest_options(path: str) -> dict:
    """The generator options saved in a planted data set's manifest: a cached data set is
    reused only if they equal the requested :meth:`SynthOptions.manifest_options`."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh).get("options", {})


def term_coefficients(model, ids: np.ndarray, terms: np.ndarray, k: int, batch: int = 4096) -> np.ndarray:
    """(5,) least-squares coefficients of the model's logit on the planted ``terms``
    (n, 5) plus an intercept, the model in evaluation mode at top-``k``."""
    model.eval()
    logits = []
    with no_grad():
        for start in range(0, len(ids), batch):
            p = model(np.asarray(ids[start:start + batch]), k=k).prob.data.astype(np.float64)
            p = np.clip(p, 1e-12, 1 - 1e-12)
            logits.append(np.log(p) - np.log1p(-p))                          # (b,)
    design = np.column_stack([terms, np.ones(len(terms))])                    # (n, 6)
    coef, *_ = np.linalg.lstsq(design, np.concatenate(logits), rcond=None)
    return coef[:-1]


def main(argv: list[str]) -> int:
    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    p = argparse.ArgumentParser(prog="python -m adaref.bench planted", description=__doc__,
                                formatter_class=Formatter)
    p.add_argument("--rows", type=int, default=400_000, help="rows of planted data (70/10/20 split)")
    p.add_argument("--fields", type=int, default=10, help="number of fields F of the generator")
    p.add_argument("--max-vocab", type=int, default=20, help="largest field vocabulary of the generator")
    p.add_argument("--attention-keys", type=int, default=0,
                   help="key fields K of the planted attention term (0: max(2, F // 6))")
    p.add_argument("--attention-scale", type=float, default=1.5,
                   help="scale of the attention's query map (larger: a sharper softmax)")
    p.add_argument("--coefs", default="0.6,0.8,0.8,0.8,0.8",
                   help="weights of the standardised planted terms: " + ",".join(TERMS))
    p.add_argument("--dim", type=int, default=16, help="embedding size D")
    p.add_argument("--layers", type=int, default=2, help="SparseMoE layers L")
    p.add_argument("--k", type=int, default=2, help="AdaEnsemble's final k (annealed from 5)")
    p.add_argument("--k-steps", type=int, default=500, help="steps over which k is annealed")
    p.add_argument("--no-controller", action="store_true", help="AdaEnsemble without the depth controller")
    p.add_argument("--lambda1", type=float, default=0.0, help="eq. 18's weight of the expert load term")
    p.add_argument("--lambda2", type=float, default=0.0, help="eq. 18's weight of the depth load term")
    p.add_argument("--bilevel", choices=("on", "off"), default="off",
                   help="Algorithm 2 (gates on validation batches, first order) or joint steps on "
                        "training batches, for every model")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (all but the embeddings)")
    p.add_argument("--gftrl-alpha", type=float, default=0.05,
                   help="G-FTRL rate alpha of the embeddings (0: Adam for them too)")
    p.add_argument("--epochs", type=float, default=20.0, help="at most this many epochs")
    p.add_argument("--batch", type=int, default=512, help="training mini-batch")
    p.add_argument("--eval-every", type=int, default=100, help="steps between validation evaluations")
    p.add_argument("--patience", type=int, default=10, help="early stopping patience (evaluations)")
    p.add_argument("--seed", type=int, default=0, help="initialisation and batch order")
    p.add_argument("--models", default="adaensemble," + ",".join(EXPERTS),
                   help="comma-separated: adaensemble and/or single experts, in this order")
    p.add_argument("--out", default=None, help="working directory (default: a temporary one)")
    args = p.parse_args(argv)
    unknown = [m for m in args.models.split(",") if m not in ("adaensemble",) + EXPERTS]
    if unknown:
        p.error(f"--models: unknown {', '.join(map(repr, unknown))}; choose from adaensemble, "
                + ", ".join(EXPERTS))
    try:
        weights = [float(c) for c in args.coefs.split(",")]
    except ValueError:
        weights = []
    if len(weights) != len(TERMS):
        p.error(f"--coefs: give {len(TERMS)} comma-separated numbers ({','.join(TERMS)}), got {args.coefs!r}")
    try:
        synth = SynthOptions(rows=args.rows, max_vocab=args.max_vocab, n_fields=args.fields,
                             attention_keys=args.attention_keys, attention_scale=args.attention_scale,
                             **{f"coef_{t}": c for t, c in zip(TERMS, weights)})
    except OptionsError as e:
        p.error(str(e))
    work = args.out or tempfile.mkdtemp(prefix="adaref-planted-")
    data_dir = os.path.join(work, f"data-{args.rows}-{args.fields}-{args.max_vocab}-k{args.attention_keys}"
                                  f"-s{args.attention_scale:g}-c{'_'.join(f'{c:g}' for c in weights)}")
    manifest = os.path.join(data_dir, "manifest.json")
    if not os.path.exists(manifest) or _manifest_options(manifest) != synth.manifest_options():
        synthesize(synth, data_dir)
    ds = open_encoded(data_dir)
    test = ds.splits["test"]
    terms = np.load(os.path.join(data_dir, "terms.npy"), allow_pickle=False)[test].astype(np.float64)
    bayes = bayes_optimal(np.asarray(ds.labels)[test], np.asarray(ds.probs)[test])
    print(f"planted data: {len(ds.ids):,} rows, {ds.ids.shape[1]} fields (vocabularies up to "
          f"{max(ds.vocab_sizes) - 1}); test {len(test):,} rows; D = {args.dim}, L = {args.layers}, "
          f"batch {args.batch}, Adam lr {args.lr}, G-FTRL alpha {args.gftrl_alpha}, at most "
          f"{args.epochs:g} epochs; work dir {work}")
    head = f"{'model':<22}{'test AUC':>9}{'gap':>8}{'log-loss':>10}{'gap':>8}{'MFLOPs':>8}{'time':>7}"
    print(head + "".join(f"{t:>10}" for t in TERMS))
    print(f"{'Bayes-optimal':<22}{bayes['auc']:>9.4f}{'':>8}{bayes['log_loss']:>10.4f}{'':>23}"
          + "".join(f"{1.0:>10.2f}" for _ in TERMS))
    coefs = {}
    for name in args.models.split(","):
        if name == "adaensemble":
            run = _run_config(EXPERTS, args.k, not args.no_controller, args)
            label = f"AdaEnsemble k={args.k}" + (" no ctl" if args.no_controller else "")
        else:
            run, label = _run_config((name,), 1, False, args), f"{name} only"
        start = time.perf_counter()
        trainer = Trainer(run, ds, os.path.join(work, name), quiet=True)
        with warnings.catch_warnings():    # one expert at k = 1: its weight is 1 by design
            warnings.filterwarnings("ignore", message="gate combine='gates' with k = 1")
            trainer.fit()
        m = trainer.finish()["test"]
        coef = coefs[name] = term_coefficients(trainer.model, ds.ids[test], terms, m["k"])
        print(f"{label:<22}{m['auc']:>9.4f}{m['auc'] - bayes['auc']:>+8.4f}{m['log_loss']:>10.4f}"
              f"{m['log_loss'] - bayes['log_loss']:>+8.4f}{m['mean_flops'] / 1e6:>8.3f}"
              f"{time.perf_counter() - start:>6.0f}s" + "".join(f"{c:>10.2f}" for c in coef), flush=True)
    print("\nterm columns: least-squares coefficient of the model's test logit on each planted term "
          "(1 = learned as planted, 0 = not at all).")
    pairs = compare_on_unformable(coefs, tuple(t for t, w in zip(TERMS, weights) if w != 0)) \
        if "adaensemble" in coefs else []
    if pairs:
        closer = sum(abs(1 - a) < abs(1 - e) for _, _, a, e in pairs)
        forms = "; ".join(f"{n}: {', '.join(t)}" for n, t in CANNOT_FORM.items() if n in coefs)
        print(f"\nOn the terms each single expert has no explicit mechanism for ({forms}; a "
              f"heuristic, see CANNOT_FORM), AdaEnsemble's coefficient is closer to 1 in "
              f"{closer} of {len(pairs)} (expert, term) pairs:")
        for name, term, a, e in pairs:
            verdict = "closer" if abs(1 - a) < abs(1 - e) else "NOT closer"
            print(f"  {name:<6} {term:<10} AdaEnsemble {a:.3f}  {name} {e:.3f}  {verdict}")
    return 0
