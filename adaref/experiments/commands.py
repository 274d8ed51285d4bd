"""One function per result of §4: :func:`table1` ... :func:`figure5`.

Each takes a :class:`Context` (the data, seeds, output directory, budgets and the
shared :class:`~adaref.experiments.runner.Runner` and
:class:`~adaref.experiments.grid.Tuner`), makes or reuses its runs, writes
``OUT/<command>.md`` (the table, the paper's numbers beside adaref's), ``.json`` (the
rows, the grid's choices and every run) and ``.csv`` (one row per run), plus its PNGs,
and returns the JSON document.

Definitions (docs/experiments.md):

* Table 1: each model's test AUC and log-loss, mean ± std over the seeds.
* Table 2: SparseMoE(k) is AdaEnsemble with k fixed (a constant schedule) for k = 1..4,
  without the depth controller (``controller=True`` keeps it); DenseMoE the same with
  k = N (every expert, gate-weighted); "X Expert Only" AdaEnsemble with that expert
  alone (k = 1, no controller, the same depth); Ensemble the mean of the five
  single-expert models' test probabilities, each trained alone, per seed (its FLOPs:
  the sum of theirs). FLOPs: the mean over the test examples of each one's forward
  FLOPs (an early exit or a skipped expert costs nothing).
* Table 3: AdaEnsemble with and without the controller (full depth, the last layer's
  estimator), everything else equal.
* Table 4: AdaEnsemble's exit-depth distribution on the test split (``depth_fractions``
  of ``metrics.json``).
* Figure 4: the alluvial diagram of AdaEnsemble's expert sets across layers on the test
  split, per seed.
* Figure 5: AdaEnsemble (controller on, k fixed) against the depth L = 1..4 at k = 3 and
  against k = 1..4 at L = 4 (§4.5).
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from adaref.experiments import paper
from adaref.experiments.data import DataSpec, base_run, planted_bayes
from adaref.experiments.figures import (alluvial_figure, figure5 as figure5_plot, save, table2_figure,
                                        table4_figure)
from adaref.experiments.grid import Tuner
from adaref.experiments.models import (EXPERT_LABELS, SMALL_OPTIONS, Variant, ada_variant, adaensemble,
                                       table1_models)
from adaref.experiments.runner import Runner, load_model
from adaref.experiments.tables import fmt, fmt_flops, fmt_paper, markdown, mean_std, summarize, write_outputs
from adaref.metrics import auc, log_loss
from adaref.training.config import RunConfig

__all__ = ["Context", "make_context", "COMMANDS", "table1", "table2", "table3", "table4", "figure4",
           "figure5", "QUICK"]

#: --quick: tiny budgets for tests and smoke runs (and the default setting only, no search;
#: Figure 5 at L = 1, 2 and k = 1, 2 only)
QUICK = {"max_steps": 4, "eval_every": 4, "patience": 0}


@dataclass
class Context:
    """What every command needs."""

    spec: DataSpec
    out: Path
    seeds: list[int]
    base: RunConfig
    runner: Runner
    tuner: Tuner
    quick: bool = False
    small: bool = True
    sets: dict = field(default_factory=dict)
    log: Callable[[str], None] = print

    def header(self, title: str) -> list[str]:
        grid = ("default settings only (" + ("--quick" if self.quick else "--no-grid") + ")"
                if self.tuner.mode == "default" else
                f"searched on the validation split at seed {self.seeds[0]} (docs/experiments.md)")
        lines = [f"# {title}", "",
                 f"Data: {self.spec.title}. Seeds: {', '.join(map(str, self.seeds))}. "
                 f"Hyper-parameters: {grid}."]
        if self.quick:
            lines.append(f"**--quick**: tiny budgets ({', '.join(f'{k} {v}' for k, v in QUICK.items())}); "
                         f"the numbers mean nothing.")
        if self.sets:
            lines.append("Options changed with --set: " + ", ".join(f"{k} = {v!r}" for k, v in self.sets.items()))
        lines += ["", f"> {paper.SCALE_NOTE}", ""]
        return lines

    def payload(self, command: str, start: float, **more) -> dict:
        return {"command": command, "data": self.spec.to_dict(), "seeds": self.seeds, "quick": self.quick,
                "set": self.sets, "grid": self.tuner.to_dict(),
                "small_options": SMALL_OPTIONS if self.small else {},
                "trained": self.runner.trained, "reused": self.runner.reused,
                "seconds": round(time.perf_counter() - start, 1), "scale_note": paper.SCALE_NOTE, **more}


def make_context(spec: DataSpec, out: str | Path, seeds: list[int], *, quick: bool = False, grid: bool = True,
                 small: bool | None = None, sets: dict | None = None, log: Callable[[str], None] | None = print,
                 runner: Runner | None = None, plots: bool = False) -> Context:
    """A context; ``small`` defaults to True on samples and planted data, False on files.
    ``sets``: dotted RunConfig options (``{"model.num_layers": 4}``) applied to every run."""
    out = Path(out)
    log = log or (lambda _: None)
    base = base_run(spec, out)
    if quick:
        base = base.replace(train=base.train.replace(**QUICK))
    sets = dict(sets or {})
    if sets:
        from adaref.training.cli import set_dotted

        tree = base.to_dict()
        for name, value in sets.items():
            set_dotted(tree, name, value)
        base = RunConfig.from_dict(tree)
    runner = runner or Runner(out, spec, log=log, plots=plots)
    tuner = Tuner(runner, seeds, "grid" if grid and not quick else "default")
    return Context(spec, out, list(seeds), base, runner, tuner, quick,
                   spec.kind != "file" if small is None else small, sets, log)


def _setting_text(setting: dict) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in setting.items())


def _finish(ctx: Context, command: str, lines: list[str], payload: dict, records: list,
            pngs: list[Path] = ()) -> dict:
    grid = ctx.tuner.to_dict()
    if grid:
        lines += ["", "Hyper-parameters (chosen by validation AUC at seed "
                  f"{ctx.seeds[0]}; the test split is never used to choose):", ""]
        rows = [["family", "setting", "validation AUC", "chosen"]]
        for family, g in grid.items():
            for t in g["trials"]:
                rows.append([family, _setting_text(t["setting"]), fmt(t["val_auc"]),
                             "yes" if t["setting"] == g["chosen"] else ""])
        lines.append(markdown(rows))
    text = "\n".join(lines)
    paths = write_outputs(ctx.out, command, text, payload, records)
    payload["files"] = [str(p) for p in paths] + [str(p) for p in pngs]
    ctx.log("")
    ctx.log(text)
    ctx.log("")
    ctx.log(f"{command}: {ctx.runner.trained} runs trained, {ctx.runner.reused} reused, "
            f"{payload['seconds']:.0f}s; wrote " + ", ".join(payload["files"]))
    return payload


def _row(label: str, records: list, **more) -> dict:
    return {"label": label, **summarize(records), **more}


# ------------------------------------------------------------------------------------ Table 1
def table1(ctx: Context, models: tuple[str, ...] | None = None) -> dict:
    """Table 1: every model's test AUC and log-loss, mean ± std over the seeds."""
    start = time.perf_counter()
    ctx.log(f"Table 1 on {ctx.spec.title}, seeds {ctx.seeds}")
    variants = table1_models(ctx.base, ctx.small, models)
    paper_rows = paper.TABLE1[ctx.spec.paper_dataset]
    rows, records = [], []
    for v in variants:
        recs = ctx.tuner.runs(v)
        records += recs
        chosen = ctx.tuner.results[v.family].chosen
        rows.append(_row(v.label, recs, name=v.name, setting=chosen, paper=paper_rows.get(v.label)))
    table = [["Model", "AUC", "log-loss", "FLOPs/example", f"paper AUC ({ctx.spec.paper_dataset})",
              "paper log-loss", "setting"]]
    for r in rows:
        p = r["paper"] or (None, None)
        table.append([r["label"], fmt(r["auc"], r["auc_std"]), fmt(r["log_loss"], r["log_loss_std"]),
                      fmt_flops(r["flops"]), fmt_paper(p[0]), fmt_paper(p[1]), _setting_text(r["setting"])])
    lines = ctx.header(f"Table 1: model comparison on {ctx.spec.title}") + [markdown(table)]
    bayes = planted_bayes(ctx.spec, ctx.out)
    if bayes:
        lines += ["", f"Bayes-optimal on this test split (the true probabilities): AUC {bayes['auc']:.4f}, "
                      f"log-loss {bayes['log_loss']:.4f}."]
    if ctx.small and any(v.name in SMALL_OPTIONS for v in variants):
        lines += ["", "Smaller sizes for this scale (--full-size keeps the defaults): "
                  + "; ".join(f"{k}: {json.dumps(o)}" for k, o in SMALL_OPTIONS.items())]
    payload = ctx.payload("table1", start, rows=rows, bayes_optimal=bayes)
    return _finish(ctx, "table1", lines, payload, records)


# ------------------------------------------------------------------------------------ Table 2
def _ensemble(ctx: Context, singles: dict[str, list]) -> tuple[dict, list[dict]]:
    """Mean of the single-expert models' test probabilities, per seed."""
    per_seed = []
    for i, seed in enumerate(ctx.seeds):
        recs = [singles[e][i] for e in singles]
        probs = np.mean([ctx.runner.predictions(r) for r in recs], axis=0)
        ds = ctx.runner.dataset(seed)
        y = np.asarray(ds.labels[np.asarray(ds.splits["test"])], dtype=np.float64)
        per_seed.append({"seed": seed, "auc": auc(y, probs), "log_loss": log_loss(y, probs),
                         "flops": float(sum(r.test["mean_flops"] for r in recs)),
                         "members": [r.dir for r in recs]})
    row = {"label": "Ensemble", "seeds": list(ctx.seeds)}
    for key in ("auc", "log_loss", "flops"):
        row[key], row[key + "_std"] = mean_std(s[key] for s in per_seed)
    row["val_auc"] = row["val_auc_std"] = None
    return row, per_seed


def table2(ctx: Context, controller: bool = False) -> dict:
    """Table 2: SparseMoE k = 1..4, DenseMoE, the Ensemble and each single expert."""
    start = time.perf_counter()
    ctx.log(f"Table 2 on {ctx.spec.title}, seeds {ctx.seeds}")
    ref = adaensemble(ctx.base)
    experts = tuple(ctx.base.model.moe.experts)
    tag = "-ctl" if controller else ""
    moe = [ada_variant(ctx.base, f"sparsemoe{tag}-k{k}", f"SparseMoE(k={k})", k=k, controller=controller)
           for k in range(1, min(4, len(experts)) + 1)]
    moe.append(ada_variant(ctx.base, f"densemoe{tag}", "DenseMoE", k=len(experts), controller=controller))
    single = {e: ada_variant(ctx.base, f"single-{e}", f"{EXPERT_LABELS[e]} Expert Only", k=1, controller=False,
                             experts=(e,)) for e in experts}
    rows, records = [], []
    for v in moe:
        recs = ctx.tuner.runs(v, ref)
        records += recs
        rows.append(_row(v.label, recs, name=v.name))
    singles = {}
    for e, v in single.items():
        singles[e] = ctx.tuner.runs(v, ref)
        records += singles[e]
    ensemble, per_seed = _ensemble(ctx, singles)
    rows.append({**ensemble, "name": "ensemble", "per_seed": per_seed})
    order = ("dense", "cross", "pin", "conv", "mhsa")           # the paper's order
    for e in sorted(singles, key=lambda e: order.index(e) if e in order else len(order)):
        rows.append(_row(single[e].label, singles[e], name=single[e].name))
    for r in rows:
        r["paper"] = paper.TABLE2.get(r["label"])
    table = [["", "AUC", "log-loss", "FLOPs/example", "paper AUC (Criteo)", "paper log-loss", "paper FLOPs"]]
    for r in rows:
        p = r["paper"] or (None, None, None)
        table.append([r["label"], fmt(r["auc"], r["auc_std"]), fmt(r["log_loss"], r["log_loss_std"]),
                      fmt_flops(r["flops"]), fmt_paper(p[0]), fmt_paper(p[1]), fmt_flops(p[2])])
    lines = ctx.header(f"Table 2: SparseMoE against DenseMoE, the Ensemble and single experts on {ctx.spec.title}")
    lines += [markdown(table), "",
              f"SparseMoE(k): AdaEnsemble with k fixed, depth controller {'on' if controller else 'off'}; "
              f"DenseMoE: k = {len(experts)} (every expert); X Expert Only: that expert alone (k = 1, no "
              f"controller, L = {ctx.base.model.num_layers}); Ensemble: the mean of the {len(experts)} "
              f"single-expert models' test probabilities (each trained alone), FLOPs the sum of theirs. "
              f"The paper's SparseMoE(k=3) row equals its AdaEnsemble (Table 1) and its w/ controller "
              f"(Table 3, 6.02M), so its SparseMoE rows seem to keep the controller: --controller on."]
    if ctx.base.model.gate.combine == "gates":
        lines += ["", "At k = 1 the gate's combine weight (eq. 10, renormalised over the top k) is exactly 1, "
                      "so the gate learns from the load regularisers only; --set model.gate.combine=switch "
                      "gives it the task's gradient."]
    png = save(table2_figure(rows), ctx.out / "table2.png")
    payload = ctx.payload("table2", start, rows=rows, controller=controller)
    return _finish(ctx, "table2", lines, payload, records, [png])


# ------------------------------------------------------------------------------------ Table 3
def table3(ctx: Context) -> dict:
    """Table 3: AdaEnsemble with and without the depth controller."""
    start = time.perf_counter()
    ctx.log(f"Table 3 on {ctx.spec.title}, seeds {ctx.seeds}")
    ref = adaensemble(ctx.base)
    without = ada_variant(ctx.base, "ada-no-controller", "w/o controller", controller=False)
    with_ = Variant(ref.name, "w/ controller", ref.run, ref.family)
    rows, records = [], []
    for v in (with_, without):
        recs = ctx.tuner.runs(v, ref)
        records += recs
        rows.append(_row(v.label, recs, name=v.name, paper=paper.TABLE3[v.label]))
    table = [["", "AUC", "log-loss", "FLOPs/example", "paper AUC (Criteo)", "paper log-loss", "paper FLOPs"]]
    for r in rows:
        p = r["paper"]
        table.append([r["label"], fmt(r["auc"], r["auc_std"]), fmt(r["log_loss"], r["log_loss_std"]),
                      fmt_flops(r["flops"]), fmt_paper(p[0]), fmt_paper(p[1]), fmt_flops(p[2])])
    lines = ctx.header(f"Table 3: AdaEnsemble with and without the depth controller on {ctx.spec.title}")
    lines += [markdown(table), "",
              "The paper leaves the AUC of w/ controller blank; its Tables 1 and 2 give 0.8132 for the same "
              "model. Without the controller every example runs the full depth and the last layer's "
              "estimator predicts."]
    payload = ctx.payload("table3", start, rows=rows)
    return _finish(ctx, "table3", lines, payload, records)


# ------------------------------------------------------------------------------------ Table 4
def table4(ctx: Context) -> dict:
    """Table 4: AdaEnsemble's exit-depth distribution on the test split."""
    start = time.perf_counter()
    ctx.log(f"Table 4 on {ctx.spec.title}, seeds {ctx.seeds}")
    ref = adaensemble(ctx.base)
    records = ctx.tuner.runs(ref)
    layers = ctx.base.model.num_layers
    fractions = [r.test.get("depth_fractions") or [] for r in records]
    if not ctx.base.model.controller.enabled:
        ctx.log("table4: the controller is off (--set): every example runs the full depth")
    stats = [mean_std(f[l] for f in fractions if len(f) > l) for l in range(layers)]
    width = max(layers, len(paper.TABLE4))
    head = [""] + [f"Layer {l + 1}" for l in range(width)]
    pct = lambda v, s=None: "—" if v is None else (f"{100 * v:.2f}%" if s is None else  # noqa: E731
                                                   f"{100 * v:.2f}% ± {100 * s:.2f}%")
    table = [head, ["adaref (mean ± std)"] + [pct(m, s) for m, s in stats] + ["—"] * (width - layers)]
    for r, f in zip(records, fractions):
        table.append([f"seed {r.seed}"] + [pct(v) for v in f] + ["—"] * (width - len(f)))
    table.append(["paper (Criteo, L = 4)"] + [pct(v) for v in paper.TABLE4] + ["—"] * (width - len(paper.TABLE4)))
    lines = ctx.header(f"Table 4: exit depth of AdaEnsemble on {ctx.spec.title} (L = {layers})")
    lines += [markdown(table), "",
              "Fraction of the test examples whose prediction comes from each layer's estimator (the hard "
              "exit of Algorithm 1)."]
    png = save(table4_figure(fractions, paper.TABLE4), ctx.out / "table4.png")
    rows = [{"layer": l + 1, "fraction": m, "fraction_std": s} for l, (m, s) in enumerate(stats)]
    payload = ctx.payload("table4", start, rows=rows, per_seed={r.seed: f for r, f in zip(records, fractions)},
                          paper=list(paper.TABLE4))
    return _finish(ctx, "table4", lines, payload, records, [png])


# ------------------------------------------------------------------------------------ Figure 4
#: Figure 4 routes at most this many test examples (the first ones of the test split).
FIGURE4_MAX_EXAMPLES = 200_000


def routes(model, ids: np.ndarray, k: int, batch: int = 4096) -> tuple[list[tuple], np.ndarray]:
    """Each example's expert sets per layer it reached (its alluvial path), and its exit
    depth, from AdaEnsemble in evaluation mode (the hard exit) at top-``k``."""
    from adaref import no_grad

    was = model.training
    model.eval()
    paths, exits = [], []
    try:
        with no_grad():
            for s in range(0, len(ids), batch):
                chunk = np.asarray(ids[s:s + batch])
                routing = model(chunk, k=k).routing
                codes = np.full((len(chunk), len(routing.layers)), -1, dtype=np.int64)
                for l, layer in enumerate(routing.layers):
                    bits = 1 << np.arange(layer.mask.shape[1], dtype=np.int64)
                    codes[layer.rows, l] = layer.mask.astype(np.int64) @ bits
                n = layer.mask.shape[1] if routing.layers else 0
                sets = {}
                for row in codes:
                    path = []
                    for c in row:
                        if c < 0:
                            break
                        if c not in sets:
                            sets[c] = tuple(j for j in range(n) if c >> j & 1)
                        path.append(sets[c])
                    paths.append(tuple(path))
                exits.append(routing.exit_depth)
    finally:
        model.train(was)
    return paths, np.concatenate(exits) if exits else np.zeros(0, np.int64)


def figure4(ctx: Context) -> dict:
    """Figure 4: the alluvial diagram of AdaEnsemble's expert selection across layers."""
    start = time.perf_counter()
    ctx.log(f"Figure 4 on {ctx.spec.title}, seeds {ctx.seeds}")
    ref = adaensemble(ctx.base)
    records = ctx.tuner.runs(ref)
    lines = ctx.header(f"Figure 4: expert selection across layers, AdaEnsemble on {ctx.spec.title}")
    lines += [paper.FIGURE4_NOTE, ""]
    pngs, per_seed = [], []
    for r in records:
        model, run, metrics = load_model(ctx.out / r.dir)
        ds = ctx.runner.dataset(r.seed)
        test = np.asarray(ds.splits["test"])[:FIGURE4_MAX_EXAMPLES]
        k = metrics["test"]["k"]
        experts = list(run.model.moe.experts)
        paths, exits = routes(model, np.asarray(ds.ids[test]), k, run.train.eval_batch_size)
        layers = run.model.num_layers
        fig, ranked = alluvial_figure(paths, layers, experts,
                                      f"expert sets per layer, test split, seed {r.seed} (k = {k}, L = {layers})")
        png = save(fig, ctx.out / f"figure4_s{r.seed}.png")
        pngs.append(png)
        n = len(paths)
        usage = np.zeros((layers, len(experts)))
        reached = np.zeros(layers)
        for p in paths:
            for l, s in enumerate(p):
                reached[l] += 1
                usage[l, list(s)] += 1
        name = lambda route: " → ".join("+".join(experts[j] for j in s) for s in route)  # noqa: E731
        top = [{"route": name(route) + (" → exit" if len(route) < layers else ""), "examples": c,
                "fraction": c / n} for route, c in ranked[:10]]
        combos = []
        for l in range(layers):
            counts = Counter(p[l] for p in paths if len(p) > l)
            combos.append([{"experts": "+".join(experts[j] for j in s), "fraction_of_reached": c / max(reached[l], 1)}
                           for s, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:5]])
        per_seed.append({"seed": r.seed, "k": k, "examples": n, "distinct_routes": len(ranked),
                         "reached": (reached / max(n, 1)).tolist(),
                         "expert_share": (usage / np.maximum(reached, 1)[:, None]).tolist(),
                         "top_routes": top, "top_sets": combos, "png": png.name})
        table = [["layer", "reached"] + experts + ["most used sets"]]
        for l in range(layers):
            table.append([str(l + 1), f"{reached[l] / max(n, 1):.1%}"]
                         + [f"{usage[l, j] / max(reached[l], 1):.1%}" for j in range(len(experts))]
                         + [", ".join(f"{c['experts']} {c['fraction_of_reached']:.0%}" for c in combos[l][:3])])
        lines += [f"## Seed {r.seed} (k = {k}; {n} test examples; {len(ranked)} distinct routes)", "",
                  f"![figure 4, seed {r.seed}]({png.name})", "",
                  "Share of the examples reaching each layer that selected each expert:", "",
                  markdown(table), "", "Most frequent routes:", "",
                  markdown([["route", "share of the test examples"]]
                           + [[t["route"], f"{t['fraction']:.1%}"] for t in top[:6]]), ""]
    payload = ctx.payload("figure4", start, per_seed=per_seed)
    return _finish(ctx, "figure4", lines, payload, records, pngs)


# ------------------------------------------------------------------------------------ Figure 5
def figure5(ctx: Context, depths: tuple[int, ...] = (1, 2, 3, 4), ks: tuple[int, ...] = (1, 2, 3, 4),
            depth_k: int = 3, k_depth: int = 4) -> dict:
    """Figure 5: AUC and log-loss against the depth L (k = 3) and against k (L = 4)."""
    start = time.perf_counter()
    ctx.log(f"Figure 5 on {ctx.spec.title}, seeds {ctx.seeds}")
    ref = adaensemble(ctx.base)
    n_experts = len(ctx.base.model.moe.experts)
    if ctx.quick:
        depths, ks, k_depth = depths[:2], ks[:2], min(k_depth, 2)
    ks = tuple(k for k in ks if k <= n_experts)

    def variant(layers: int, k: int) -> Variant:
        return ada_variant(ctx.base, f"ada-L{layers}-k{k}", f"L={layers}, k={k}", k=k, controller=True,
                           layers=layers)

    records, panels = [], {"depth": [], "k": []}
    for panel, points in (("depth", [(L, depth_k, L) for L in depths]), ("k", [(k_depth, k, k) for k in ks])):
        for layers, k, x in points:
            v = variant(layers, k)
            recs = ctx.tuner.runs(v, ref)
            records += recs
            panels[panel].append(_row(v.label, recs, name=v.name, x=x, layers=layers, k=k))
    png = save(figure5_plot(panels["depth"], panels["k"], depth_k=depth_k, k_depth=k_depth), ctx.out / "figure5.png")
    lines = ctx.header(f"Figure 5: AdaEnsemble against depth and k on {ctx.spec.title}")
    lines += [paper.FIGURE5_NOTE, "", "![figure 5](figure5.png)", ""]
    for panel, title in (("depth", f"(a) depth L at k = {depth_k}"), ("k", f"(b) k at L = {k_depth}")):
        table = [[title, "AUC", "log-loss", "FLOPs/example", "exit depth (mean share per layer)"]]
        for r in panels[panel]:
            recs = [x for x in records if x.name == r["name"]]
            depth = np.mean([x.test.get("depth_fractions") or [0.0] for x in recs], axis=0)
            table.append([r["label"], fmt(r["auc"], r["auc_std"]), fmt(r["log_loss"], r["log_loss_std"]),
                          fmt_flops(r["flops"]), " ".join(f"{100 * v:.0f}%" for v in depth)])
        lines += [markdown(table), ""]
    lines.append("Every point: AdaEnsemble with the depth controller on and k fixed (a constant schedule).")
    payload = ctx.payload("figure5", start, depth=panels["depth"], k=panels["k"], depth_k=depth_k, k_depth=k_depth)
    return _finish(ctx, "figure5", lines, payload, records, [png])


COMMANDS = {"table1": table1, "table2": table2, "table3": table3, "table4": table4, "figure4": figure4,
            "figure5": figure5}
