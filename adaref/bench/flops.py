"""``python -m adaref.bench flops``: forward FLOPs per example of the paper's configurations
(F = 39, D = 16, L = 4), beside the paper's Tables 2 and 3.

FLOPs follow docs/decisions.md row 24 (a multiply-add is 2 FLOPs; counted per example
along its route; the mean is reported) and the counting rules in the docstrings of each
expert's ``flops()``, the gate's, the layer's and the estimator's. Routes come from a
randomly initialised model (seed 0) on the first 4,096 rows of the bundled Criteo
sample, in evaluation mode. A trained model routes differently, so the mean over routes
also depends on which experts training favours; the ``uniform`` column gives the mean
if every k-subset of experts were equally likely. "w/ controller" rows weight the
per-depth cost by the paper's Table 4 exit distribution (6.53/19.36/66.43/7.68 %) and
also show the random model's own exit distribution.
"""
from __future__ import annotations

import argparse
import itertools

import numpy as np

from adaref.bench import plain
from adaref.model import AdaEnsemble, model_config


SUMMARY = "FLOPs per example of the paper's configurations beside Tables 2 and 3"
RUNTIME = "about 15 s"     # default run, 2-core machine

PAPER_TABLE = {  # Tables 2 and 3 of the paper, FLOPs per example
    "SparseMoE k=1": 2.26e6, "SparseMoE k=2": 4.14e6, "SparseMoE k=3": 6.02e6,
    "SparseMoE k=4": 7.09e6, "DenseMoE (k=5)": 9.78e6, "Dense expert only": 3.71e6,
    "Cross expert only": 3.36e6, "Polynomial expert only": 3.32e6, "CNN expert only": 1.11e6,
    "MHSA expert only": 2.17e6, "k=3 w/ controller": 6.02e6, "k=3 w/o controller": 8.58e6,
}
TABLE4 = np.array([0.0653, 0.1936, 0.6643, 0.0768])


def _ids(vocab: list[int], rows: int) -> np.ndarray:
    try:
        from adaref.data import load

        ds = load("criteo", sample=True, preset="paper")
        return np.asarray(ds.ids[:rows])
    except Exception:  # noqa: BLE001  (the benchmark still runs without the data package)
        rng = np.random.default_rng(0)
        return np.stack([rng.integers(0, v, size=rows) for v in vocab], axis=1)


def _model(preset: str, vocab: list[int], **changes) -> AdaEnsemble:
    return AdaEnsemble(model_config(preset, dim=16, num_layers=4, **changes), vocab,
                       rng=np.random.default_rng(0), dtype=np.float32).eval()


def _uniform(model: AdaEnsemble, k: int, controller: bool) -> float:
    """Mean FLOPs if every k-subset were equally likely, at full depth."""
    total = 0.0
    for layer in model.layers:
        fd = layer.gate.in_features
        costs = layer.expert_flops() + 2 * fd
        subsets = list(itertools.combinations(range(len(costs)), k))
        total += layer.fixed_flops(k) + np.mean([costs[list(s)].sum() for s in subsets])
    total += model.estimators[0].flops()
    return total + (model.controller.flops() if controller else 0)


def rows_for(preset: str, ids: np.ndarray, vocab: list[int]) -> list[tuple]:
    out = []
    no_ctl = {"controller": {"enabled": False}}
    for k in (1, 2, 3, 4, 5):
        m = _model(preset, vocab, **no_ctl)
        name = "DenseMoE (k=5)" if k == 5 else f"SparseMoE k={k}"
        out.append((name, m(ids, k=k).flops.mean(), _uniform(m, k, False)))
    for expert, label in (("dense", "Dense"), ("cross", "Cross"), ("pin", "Polynomial"),
                          ("conv", "CNN"), ("mhsa", "MHSA")):
        base = model_config(preset).moe.to_dict()
        moe = {**base, "experts": (expert,), "schedule": {"kind": "constant", "k": 1},
               "expert_prior": ()}
        m = _model(preset, vocab, moe=moe, **no_ctl)
        out.append((f"{label} expert only", m(ids, k=1).flops.mean(), _uniform(m, 1, False)))
    full = _model(preset, vocab, **no_ctl)
    out.append(("k=3 w/o controller", full(ids, k=3).flops.mean(), _uniform(full, 3, False)))
    ctl = _model(preset, vocab)
    res = ctl(ids, k=3)
    per_depth = np.array([res.flops[res.routing.exit_depth == d].mean()
                          if np.any(res.routing.exit_depth == d) else np.nan for d in range(1, 5)])
    if np.isnan(per_depth).any():          # depths the random model never picks: compute them
        x0 = ctl.embedding(ids)
        for d in range(1, 5):
            if np.isnan(per_depth[d - 1]):
                exits = np.full(len(ids), d)
                _, layers, _ = ctl._dynamic(x0, exits, 3, None, [])
                from adaref.model.routing import Routing
                per_depth[d - 1] = ctl._route_flops(Routing(layers, exits), "hard", len(ids)).mean()
    fractions = res.routing.depth_fractions(4)
    out.append(("k=3 w/ controller", float(TABLE4 @ per_depth), float("nan"),
                f"Table 4 depths; random model's own exits {np.round(100 * fractions, 1).tolist()} % "
                f"give {res.flops.mean() / 1e6:.2f}M"))
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, prog="python -m adaref.bench flops", description=plain(__doc__),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4096, help="examples to route (default 4096)")
    args = parser.parse_args(argv)
    vocab = [10] * 39
    ids = _ids(vocab, args.rows)
    vocab = [int(v) for v in ids.max(axis=0) + 1]
    print(f"forward FLOPs per example, F = 39, D = 16, L = 4 (M = 1e6); {len(ids)} routed examples\n")
    header = f"{'configuration':<24}{'paper':>8}  {'adaref paper':>13}{'uniform':>9}  {'adaref upstream':>16}{'uniform':>9}"
    print(header)
    print("-" * len(header))
    paper_rows = rows_for("paper", ids, vocab)
    upstream_rows = rows_for("upstream", ids, vocab)
    notes = []
    for p, u in zip(paper_rows, upstream_rows):
        name = p[0]
        fmt = lambda v: "" if np.isnan(v) else f"{v / 1e6:.2f}M"  # noqa: E731
        print(f"{name:<24}{PAPER_TABLE[name] / 1e6:>7.2f}M  {fmt(p[1]):>13}{fmt(p[2]):>9}  "
              f"{fmt(u[1]):>16}{fmt(u[2]):>9}")
        if len(p) > 3:
            notes.append(f"{name}: paper preset {p[3]}; upstream {u[3]}")
    for n in notes:
        print("\n" + n)
    return 0
