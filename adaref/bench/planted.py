"""``python -m adaref.bench planted``: does AdaEnsemble learn the planted interactions?

Generates Criteo-shaped data with :mod:`adaref.data.synthetic` (a click probability that
mixes linear, FM, bit-wise cross, Hadamard and attention-like terms, every row's true
probability known), trains AdaEnsemble and each single-expert model (same depth, one
expert, k = 1, no controller) with the same training options, and prints each model's
test AUC and log-loss beside the Bayes-optimal values of the same split (the true
probabilities scored as predictions).

The term columns show which planted interactions each model learned: the least-squares
coefficients of the model's test logit on the five planted terms (each term's share of
the true logit; the true logit is their sum plus a constant, so the Bayes-optimal row,
computed from the true logit, is 1 on every planted term and 0 on an unplanted one).
A coefficient is not 0 for a model without the interaction: each term has a main-effect
part, a function of one field at a time, that any model can fit. The row ``no
interactions`` shows that floor: the coefficients of the best additive fit of the true
logit (one value per field level, least squares, by backfitting: :func:`additive_fit`).
On the default data it is 0.96 linear, 0.33 FM, 0.15 cross, 0.11 Hadamard and 0.71
attention, so a model has learned a term's interaction by how far it sits between
that floor and 1. Last, for every term a single expert has no explicit mechanism for
(:data:`CANNOT_FORM`), it says whether AdaEnsemble's coefficient is closer to 1 than
that expert's.

The planted data depend only on the generator options; ``--seed`` sets the models'
initialisation and batch order. Several seeds (``--seed 0,1,2``) train every model once
per seed and end with the means over seeds, and the per-term verdict is then taken on
the mean coefficients, with the number of seeds on which it holds. Every number printed
is also written to ``results.json`` in the working directory.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
import warnings

import numpy as np

from adaref import no_grad
from adaref.argtypes import integer, integer_list, number
from adaref.bench import plain
from adaref.data.dataset import open_encoded
from adaref.data.config import OptionsError
from adaref.data.synthetic import TERMS, SynthOptions, bayes_optimal, synthesize
from adaref.io import write_json
from adaref.model import model_config
from adaref.training.config import DataChoice, OptimizerChoice, RunConfig, TrainConfig
from adaref.training.trainer import Trainer


SUMMARY = "does AdaEnsemble learn planted interactions: AUC against Bayes-optimal, per-term coefficients"
RUNTIME = "about 5 minutes"     # default run, 2-core machine

EXPERTS = ("dense", "conv", "mhsa", "pin", "cross")

#: The planted terms each single expert has no explicit mechanism for (eqs. 2-6): dense
#: (eq. 2) and conv (eq. 3) build ReLU / max-pooling maps of the embeddings, no
#: products; MHSA (eq. 4) forms products only inside its softmax and returns a convex
#: mix of values, no plain products; PIN (eq. 5) and cross (eq. 6) build products of
#: the embeddings (polynomials of degree L + 1), and a softmax is not one. A heuristic,
#: not a proof: the residual and the layer norm after every layer (``moe.norm``) and
#: free per-level embeddings let every stack approximate these terms. Measured on data
#: with one planted interaction (``--coefs 0.6,0.8,0,0,0`` and so on, README), every
#: expert recovers each term (coefficients 0.75-1.02 against no-interaction floors of
#: 0.05-0.79, vocabularies up to 1,000).
#: Every expert can carry the linear term.
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


#: Fewest rows ``--rows`` accepts: the 70/10/20 split then leaves about 100 validation
#: and 200 test rows, so every evaluated split holds both classes (AUC is undefined
#: otherwise; at the 25 % click rate the 50-row half of the validation split that
#: ``--bilevel on`` evaluates on lacks positives with chance 0.75 ** 50 < 1e-6) and the
#: test split fits the six term coefficients.
MIN_ROWS = 1000
#: Largest weight ``--coefs`` accepts, in absolute value. Each term is standardised, so
#: its weight is the standard deviation of its share of the logit: at 5 the labels are
#: already close to deterministic, and above it the generator's bias (bisected in
#: [-20, 20]) can miss the mean click probability (measured: weights of 8 on 4 two-level
#: fields miss it; weights near 1e3 overflow the sigmoid, near 1e39 the float32 terms).
MAX_COEF = 5.0


def _coefs(text: str) -> list[float]:
    """``--coefs``: one weight per planted term, finite and at most :data:`MAX_COEF` in
    absolute value.

    >>> _coefs("1,0,-0.5,0,2")
    [1.0, 0.0, -0.5, 0.0, 2.0]
    >>> _coefs("nan,0,0,0,0")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    argparse.ArgumentTypeError: weights must be finite and in [-5, 5] (...), got 'nan,0,0,0,0'
    """
    try:
        weights = [float(c) for c in text.split(",")]
    except ValueError:
        weights = []
    if len(weights) != len(TERMS):
        raise argparse.ArgumentTypeError(f"give {len(TERMS)} comma-separated numbers ({','.join(TERMS)}), "
                                         f"got {text!r}")
    if not all(math.isfinite(w) and abs(w) <= MAX_COEF for w in weights):
        raise argparse.ArgumentTypeError(f"weights must be finite and in [-{MAX_COEF:g}, {MAX_COEF:g}] (larger "
                                         f"ones break the calibration of the click rate), got {text!r}")
    return weights


def verdicts(pairs_by_seed: list[list[tuple[str, str, float, float]]]) -> list[dict]:
    """Per (expert, term) pair of :func:`compare_on_unformable`, over one or more seeds:
    the mean coefficients of AdaEnsemble and of the expert, whether AdaEnsemble's mean is
    closer to 1, and on how many seeds its coefficient was.

    >>> v = verdicts([[("pin", "attention", 0.9, 0.8)], [("pin", "attention", 0.95, 0.97)]])
    >>> v[0]["closer"], v[0]["seeds_closer"], round(v[0]["adaensemble"], 3)
    (True, 1, 0.925)
    """
    out = []
    for i, (name, term, _, _) in enumerate(pairs_by_seed[0]):
        ada = np.array([pairs[i][2] for pairs in pairs_by_seed])
        single = np.array([pairs[i][3] for pairs in pairs_by_seed])
        out.append({"expert": name, "term": term, "adaensemble": float(ada.mean()),
                    "single": float(single.mean()),
                    "closer": bool(abs(1 - ada.mean()) < abs(1 - single.mean())),
                    "seeds_closer": int(np.sum(np.abs(1 - ada) < np.abs(1 - single))),
                    "seeds": len(pairs_by_seed)})
    return out


def _run_config(experts: tuple[str, ...], k: int, controller: bool, args, seed: int) -> RunConfig:
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
                     dtype="float32", seed=seed)


def _manifest_options(path: str) -> dict:
    """The generator options saved in a planted data set's manifest: a cached data set is
    reused only if they equal the requested :meth:`SynthOptions.manifest_options`."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh).get("options", {})


def logit_coefficients(logit: np.ndarray, terms: np.ndarray) -> np.ndarray:
    """(5,) least-squares coefficients of ``logit`` (n,) on the planted ``terms`` (n, 5)
    plus an intercept."""
    design = np.column_stack([terms, np.ones(len(terms))])                    # (n, 6)
    coef, *_ = np.linalg.lstsq(design, logit, rcond=None)
    return coef[:-1]


def term_coefficients(model, ids: np.ndarray, terms: np.ndarray, k: int, batch: int = 4096) -> np.ndarray:
    """:func:`logit_coefficients` of the model's logit, the model in evaluation mode at
    top-``k``."""
    model.eval()
    logits = []
    with no_grad():
        for start in range(0, len(ids), batch):
            p = model(np.asarray(ids[start:start + batch]), k=k).prob.data.astype(np.float64)
            p = np.clip(p, 1e-12, 1 - 1e-12)
            logits.append(np.log(p) - np.log1p(-p))                          # (b,)
    return logit_coefficients(np.concatenate(logits), terms)


def additive_fit(ids: np.ndarray, y: np.ndarray, sweeps: int = 50, tol: float = 1e-10) -> np.ndarray:
    """The least-squares fit of y (n,) by c + sum_f e_f[ids[:, f]], one value per level
    of every field (a model with no interactions), by backfitting: each field's
    effects in turn become the level means of what the others leave, until a sweep
    changes the fit by less than ``tol`` (relative). ids (n, F) per-field ids.

    >>> ids = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    >>> additive_fit(ids, np.array([0.0, 1.0, 2.0, 3.0])).round(12).tolist()   # additive: exact
    [0.0, 1.0, 2.0, 3.0]
    >>> additive_fit(ids, np.array([0.0, 0.0, 0.0, 1.0])).round(12).tolist()   # x0 x1: no
    [-0.25, 0.25, 0.25, 0.75]
    """
    ids = np.asarray(ids, dtype=np.int64)
    fit = np.full(len(y), y.mean())
    effects = [np.zeros(ids[:, f].max() + 1) for f in range(ids.shape[1])]
    for _ in range(sweeps):
        before = fit.copy()
        for f, e in enumerate(effects):
            column = ids[:, f]
            partial = y - fit + e[column]                                     # (n,) the rest's residual
            counts = np.bincount(column, minlength=len(e))
            new = np.bincount(column, weights=partial, minlength=len(e)) / np.maximum(counts, 1)
            new -= np.average(new, weights=counts)                            # keep the mean in c
            fit += new[column] - e[column]
            effects[f] = new
        fit += (y - fit).mean()
        if np.linalg.norm(fit - before) <= tol * max(np.linalg.norm(fit), 1.0):
            break
    return fit


def _row(label: str, r: dict, bayes: dict) -> str:
    """One line of the results table: a run (or a mean over seeds) beside Bayes."""
    return (f"{label:<22}{r['auc']:>9.4f}{r['auc'] - bayes['auc']:>+8.4f}{r['log_loss']:>10.4f}"
            f"{r['log_loss'] - bayes['log_loss']:>+8.4f}{r['mean_flops'] / 1e6:>8.3f}"
            + (f"{r['seconds']:>6.0f}s" if "seconds" in r else f"{'':>7}")
            + "".join(f"{r['coefficients'][t]:>10.2f}" for t in TERMS))


def _print_means(runs: list[dict], labels: dict[str, str], seeds: list[int], bayes: dict) -> None:
    """One line per model: its mean over the seeds, and the range of its test AUC."""
    print(f"\nmeans over seeds {','.join(map(str, seeds))}:")
    for name, label in labels.items():
        mine = [r for r in runs if r["model"] == name]
        mean = {key: float(np.mean([r[key] for r in mine])) for key in ("auc", "log_loss", "mean_flops")}
        mean["coefficients"] = {t: float(np.mean([r["coefficients"][t] for r in mine])) for t in TERMS}
        print(_row(f"{label} mean", mean, bayes) + f"   (AUC range {np.ptp([r['auc'] for r in mine]):.4f})")


def _pair_verdicts(runs: list[dict], seeds: list[int], planted: tuple[str, ...]) -> list[dict]:
    """:func:`verdicts` of the runs' coefficients, if AdaEnsemble was among the models."""
    by_seed = []
    for seed in seeds:
        coefs = {r["model"]: np.array([r["coefficients"][t] for t in TERMS]) for r in runs if r["seed"] == seed}
        if "adaensemble" in coefs:
            by_seed.append(compare_on_unformable(coefs, planted))
    return verdicts(by_seed) if by_seed and by_seed[0] else []


def _print_verdicts(pairs: list[dict], names: list[str], several: bool) -> None:
    """The per-pair verdicts of :func:`verdicts`, one line each, after a count."""
    forms = "; ".join(f"{n}: {', '.join(t)}" for n, t in CANNOT_FORM.items() if n in names)
    print(f"\nOn the terms each single expert has no explicit mechanism for ({forms}; a "
          f"heuristic, see CANNOT_FORM), AdaEnsemble's{' mean' if several else ''} coefficient is "
          f"closer to 1 in {sum(v['closer'] for v in pairs)} of {len(pairs)} (expert, term) pairs:")
    for v in pairs:
        verdict = "closer" if v["closer"] else "NOT closer"
        seeds = f"  (on {v['seeds_closer']} of {v['seeds']} seeds)" if several else ""
        print(f"  {v['expert']:<6} {v['term']:<10} AdaEnsemble {v['adaensemble']:.3f}  "
              f"{v['expert']} {v['single']:.3f}  {verdict}{seeds}")


def main(argv: list[str]) -> int:
    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    p = argparse.ArgumentParser(prog="python -m adaref.bench planted", description=plain(__doc__), allow_abbrev=False,
                                formatter_class=Formatter)
    p.add_argument("--rows", type=integer(MIN_ROWS, why=" (fewer can leave the validation or test split "
                                                          "with one class, and AUC undefined)"),
                   default=400_000, help=f"rows of planted data (70/10/20 split; at least {MIN_ROWS})")
    p.add_argument("--fields", type=integer(4, why=" (the generator's smallest field count)"), default=10,
                   help="number of fields F of the generator")
    p.add_argument("--max-vocab", type=integer(2, why=" (a field needs 2 levels)"), default=20,
                   help="largest field vocabulary of the generator")
    p.add_argument("--attention-keys", type=integer(0), default=0,
                   help="key fields K of the planted attention term (0: max(2, F // 6))")
    p.add_argument("--attention-scale", type=number(0.0, above=True), default=1.5,
                   help="scale of the attention's query map (larger: a sharper softmax)")
    p.add_argument("--coefs", type=_coefs, default="0.6,0.8,0.8,0.8,0.8",
                   help="weights of the standardised planted terms: " + ",".join(TERMS))
    p.add_argument("--dim", type=integer(1), default=16, help="embedding size D")
    p.add_argument("--layers", type=integer(1), default=2, help="SparseMoE layers L")
    p.add_argument("--k", type=integer(1, len(EXPERTS), f" (AdaEnsemble has {len(EXPERTS)} experts)"), default=2,
                   help="AdaEnsemble's final k (annealed from 5)")
    p.add_argument("--k-steps", type=integer(0), default=500, help="steps over which k is annealed")
    p.add_argument("--no-controller", action="store_true", help="AdaEnsemble without the depth controller")
    p.add_argument("--lambda1", type=number(0.0), default=0.0, help="eq. 18's weight of the expert load term")
    p.add_argument("--lambda2", type=number(0.0), default=0.0, help="eq. 18's weight of the depth load term")
    p.add_argument("--bilevel", choices=("on", "off"), default="off",
                   help="Algorithm 2 (gates on validation batches, first order) or joint steps on "
                        "training batches, for every model")
    p.add_argument("--lr", type=number(0.0, above=True), default=1e-3,
                   help="Adam learning rate (all but the embeddings)")
    p.add_argument("--gftrl-alpha", type=number(0.0, why=" (0: Adam)"), default=0.05,
                   help="G-FTRL rate alpha of the embeddings (0: Adam for them too)")
    p.add_argument("--epochs", type=number(0.0, above=True), default=20.0,
                   help="at most this many epochs")
    p.add_argument("--batch", type=integer(1), default=512, help="training mini-batch")
    p.add_argument("--eval-every", type=integer(1), default=100, help="steps between validation evaluations")
    p.add_argument("--patience", type=integer(0), default=10, help="early stopping patience (evaluations)")
    p.add_argument("--seed", type=integer_list(0), default=[0],
                   help="initialisation and batch order (the planted data stay the same); several, "
                        "comma-separated (0,1,2), train every model once per seed and add the means")
    p.add_argument("--models", default="adaensemble," + ",".join(EXPERTS),
                   help="comma-separated: adaensemble and/or single experts, in this order")
    p.add_argument("--out", default=None, help="working directory (default: a temporary one)")
    args = p.parse_args(argv)
    names = args.models.split(",")
    unknown = [m for m in names if m not in ("adaensemble",) + EXPERTS]
    if unknown:
        p.error(f"--models: unknown {', '.join(map(repr, unknown))}; choose from adaensemble, "
                + ", ".join(EXPERTS))
    twice = sorted({m for m in names if names.count(m) > 1})
    if twice:
        p.error(f"--models: {', '.join(map(repr, twice))} given more than once in {args.models!r}")
    if args.attention_keys != 0 and not 2 <= args.attention_keys <= args.fields - 1:
        p.error(f"--attention-keys: must be 0 (= max(2, F // 6)) or in 2..{args.fields - 1} (F - 1 with "
                f"--fields {args.fields}; one key would make the softmax weight 1, no interaction), "
                f"got {args.attention_keys}")
    weights = args.coefs
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
    true_p = np.asarray(ds.probs)[test].astype(np.float64)
    true_logit = np.log(true_p) - np.log1p(-true_p)                            # (n_test,)
    bayes["coefficients"] = dict(zip(TERMS, logit_coefficients(true_logit, terms).tolist()))
    floor = dict(zip(TERMS, logit_coefficients(additive_fit(ds.ids[test], true_logit), terms).tolist()))
    print(f"planted data: {len(ds.ids):,} rows, {ds.ids.shape[1]} fields (vocabularies up to "
          f"{max(ds.vocab_sizes) - 1}); test {len(test):,} rows; D = {args.dim}, L = {args.layers}, "
          f"batch {args.batch}, Adam lr {args.lr}, G-FTRL alpha {args.gftrl_alpha}, at most "
          f"{args.epochs:g} epochs; work dir {work}")
    head = f"{'model':<22}{'test AUC':>9}{'gap':>8}{'log-loss':>10}{'gap':>8}{'MFLOPs':>8}{'time':>7}"
    print(head + "".join(f"{t:>10}" for t in TERMS))
    print(f"{'Bayes-optimal':<22}{bayes['auc']:>9.4f}{'':>8}{bayes['log_loss']:>10.4f}{'':>23}"
          + "".join(f"{bayes['coefficients'][t]:>10.2f}" for t in TERMS))
    print(f"{'no interactions':<22}{'':>50}" + "".join(f"{floor[t]:>10.2f}" for t in TERMS))
    planted = tuple(t for t, w in zip(TERMS, weights) if w != 0)
    results = {"options": synth.manifest_options(), "bayes": bayes, "no_interactions": floor, "runs": [],
               "pairs": []}
    several = len(args.seed) > 1
    labels = {name: f"AdaEnsemble k={args.k}" + (" no ctl" if args.no_controller else "")
              if name == "adaensemble" else f"{name} only" for name in names}
    for seed in args.seed:
        for name in names:
            if name == "adaensemble":
                run = _run_config(EXPERTS, args.k, not args.no_controller, args, seed)
            else:
                run = _run_config((name,), 1, False, args, seed)
            label = labels[name] + (f" s{seed}" if several else "")
            start = time.perf_counter()
            run_dir = os.path.join(work, f"{name}-seed{seed}" if several else name)
            trainer = Trainer(run, ds, run_dir, quiet=True)
            with warnings.catch_warnings():    # one expert at k = 1: its weight is 1 by design
                warnings.filterwarnings("ignore", message="gate combine='gates' with k = 1")
                trainer.fit()
            m = trainer.finish()["test"]
            coef = term_coefficients(trainer.model, ds.ids[test], terms, m["k"])
            results["runs"].append({"model": name, "seed": seed, "auc": m["auc"], "log_loss": m["log_loss"],
                                    "mean_flops": m["mean_flops"], "seconds": time.perf_counter() - start,
                                    "coefficients": dict(zip(TERMS, coef.tolist()))})
            print(_row(label, results["runs"][-1], bayes), flush=True)
            write_json(os.path.join(work, "results.json"), results)
    if several:
        _print_means(results["runs"], labels, args.seed, bayes)
    print("\nterm columns: least-squares coefficient of the model's test logit on each planted term "
          "(1 = learned as planted; 'no interactions' = what a model without any interaction reaches).")
    results["pairs"] = _pair_verdicts(results["runs"], args.seed, planted)
    write_json(os.path.join(work, "results.json"), results)
    if results["pairs"]:
        _print_verdicts(results["pairs"], names, several)
    return 0
