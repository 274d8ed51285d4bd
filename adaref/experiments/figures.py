"""The figures of §4: the alluvial diagram of Figure 4, Figure 5's curves, and plots of
Tables 2 and 4. Drawn on Matplotlib ``Figure`` objects (never pyplot): writing them
changes no backend and opens no window.

:func:`alluvial` is the diagram of ``tutorials/08_what_it_learned.ipynb``, lifted here:
one column per SparseMoE layer whose blocks are the expert sets used there (height: the
share of the examples; a grey ``exited`` block holds the examples that left at an
earlier depth), and flows between consecutive columns carrying the examples that used
one set at layer l and another at layer l + 1. Flows are coloured by the frequency of
the example's whole route (its expert combination at every layer, the paper's "colour
of the flow is clustered by the frequency of the expert combination"): the ``top``
most frequent routes get a colour each, all others are light grey.

>>> from matplotlib.figure import Figure
>>> ax = Figure().subplots()
>>> paths = [((0, 1), (1,)), ((0, 1), (1,)), ((0, 1),), ((2,), (1,))]
>>> ranked = alluvial(ax, paths, 2, ["dense", "conv", "pin"])
>>> ranked[0]
(((0, 1), (1,)), 2)
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["EXIT", "alluvial", "alluvial_figure", "figure5", "table2_figure", "table4_figure", "save"]

EXIT = "exited"


def _set_name(s, experts: Sequence[str]) -> str:
    return "+".join(experts[j] for j in s)


def alluvial(ax, paths: Sequence[tuple], num_layers: int, experts: Sequence[str], *, top: int = 6,
             min_label: float = 0.04, bar: float = 0.12, gap: float = 0.015) -> list[tuple[tuple, int]]:
    """Draw the alluvial diagram of ``paths`` on ``ax``; return the routes ranked by
    frequency, ``[(route, count), ...]``.

    ``paths``: one per example, the tuple of its expert sets (sorted expert indices) at
    each layer it reached (:meth:`adaref.model.routing.Routing.example_experts`); a path
    shorter than ``num_layers`` exited early. ``experts``: the expert names by index.
    """
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    paths = [tuple(tuple(s) for s in p) for p in paths]
    n = max(len(paths), 1)
    name = lambda s: _set_name(s, experts)                                     # noqa: E731
    node = lambda p, l: p[l] if l < len(p) else EXIT                           # noqa: E731
    ranked = sorted(Counter(paths).items(), key=lambda kv: (-kv[1], kv[0]))
    tab10 = colormaps["tab10"]
    colour = {r: tab10(i % 10) for i, (r, _) in enumerate(ranked[:top])}
    key = lambda p: p if p in colour else None                                 # noqa: E731
    pos = []                                      # per column: node -> [top, height]
    for l in range(num_layers):
        counts = Counter(node(p, l) for p in paths)
        order = sorted((s for s in counts if s != EXIT), key=lambda s: (-counts[s], s))
        order += [EXIT] if EXIT in counts else []
        y, col = 0.0, {}
        for s in order:
            col[s] = [y, counts[s] / n]
            y += counts[s] / n + gap
        pos.append(col)
        for s, (y0, h) in col.items():
            ax.add_patch(Rectangle((l - bar / 2, y0), bar, h, color="0.55" if s == EXIT else "0.2"))
            if h >= min_label:
                ax.text(l + bar / 2 + 0.02, y0 + h / 2, f"{EXIT if s == EXIT else name(s)} {h:.0%}",
                        va="center", fontsize=7)
    t = np.linspace(0, 1, 40)
    smooth = 3 * t ** 2 - 2 * t ** 3
    crank = {None: len(colour)} | {r: i for i, r in enumerate(colour)}
    for l in range(num_layers - 1):
        flows = Counter((node(p, l), node(p, l + 1), key(p)) for p in paths)
        rank = lambda col, s: list(col).index(s)                               # noqa: E731
        out_y = {s: y0 for s, (y0, _) in pos[l].items()}
        in_y = {s: y0 for s, (y0, _) in pos[l + 1].items()}
        out_start, in_start = {}, {}
        for f in sorted(flows, key=lambda f: (rank(pos[l], f[0]), rank(pos[l + 1], f[1]), crank[f[2]])):
            out_start[f] = out_y[f[0]]
            out_y[f[0]] += flows[f] / n
        for f in sorted(flows, key=lambda f: (rank(pos[l + 1], f[1]), rank(pos[l], f[0]), crank[f[2]])):
            in_start[f] = in_y[f[1]]
            in_y[f[1]] += flows[f] / n
        for f, c in flows.items():
            h = c / n
            top_curve = out_start[f] + (in_start[f] - out_start[f]) * smooth
            x = l + bar / 2 + (1 - bar) * t
            fc = colour[f[2]] if f[2] is not None else ("0.92" if f[0] == EXIT else "0.8")
            ax.fill_between(x, top_curve, top_curve + h, color=fc, alpha=0.8, lw=0)
    ax.set_xlim(-0.3, num_layers - 0.35)
    ax.set_ylim(max((y0 + h for col in pos for y0, h in col.values()), default=1.0) + 0.02, -0.02)
    ax.set_xticks(range(num_layers), [f"layer {l + 1}" for l in range(num_layers)])
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    handles = [Rectangle((0, 0), 1, 1, color=colour[r]) for r in colour]
    labels = [" → ".join(name(s) for s in r) + (" → exit" if len(r) < num_layers else "") + f"  ({c / n:.0%})"
              for r, c in ranked[:top]]
    if handles:
        ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), title="routes",
                  title_fontsize=7, frameon=False)
    return ranked


def _figure(rows: int = 1, cols: int = 1, figsize=(6, 4)):
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(rows, cols)


def save(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    tmp.replace(path)
    return path


def alluvial_figure(paths: Sequence[tuple], num_layers: int, experts: Sequence[str], title: str):
    """A Figure holding :func:`alluvial` of ``paths``; returns (figure, ranked routes)."""
    fig, ax = _figure(figsize=(9, 3.8))
    ranked = alluvial(ax, paths, num_layers, experts)
    ax.set_title(title, fontsize=10)
    return fig, ranked


def _errorbar(ax, xs, means, stds, label, colour):
    stds = [0.0 if s is None else s for s in stds]
    ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label, color=colour)


def figure5(depth: list[dict], ks: list[dict], *, depth_k: int, k_depth: int):
    """Figure 5: AUC and log-loss (mean ± std over seeds) against the depth L (a) and
    against k (b). ``depth``/``ks``: rows ``{"x", "auc", "auc_std", "log_loss",
    "log_loss_std"}``."""
    fig, axes = _figure(2, 2, figsize=(9, 6))
    for col, rows, xlabel, title in ((0, depth, "depth L", f"(a) against the depth L (k = {depth_k})"),
                                     (1, ks, "k (experts per example)", f"(b) against k (L = {k_depth})")):
        xs = [r["x"] for r in rows]
        _errorbar(axes[0, col], xs, [r["auc"] for r in rows], [r["auc_std"] for r in rows], "AUC", "C0")
        _errorbar(axes[1, col], xs, [r["log_loss"] for r in rows], [r["log_loss_std"] for r in rows],
                  "log-loss", "C3")
        axes[0, col].set_title(title, fontsize=10)
        axes[0, col].set_ylabel("test AUC")
        axes[1, col].set_ylabel("test log-loss")
        for ax in axes[:, col]:
            ax.set_xticks(xs)
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def table2_figure(rows: list[dict]):
    """Test AUC against FLOPs per example (Table 2's trade-off), one point per row
    ``{"label", "auc", "auc_std", "flops"}``."""
    fig, ax = _figure(figsize=(7, 4.5))
    for i, r in enumerate(rows):
        if r["auc"] is None or r["flops"] is None:
            continue
        ax.errorbar([r["flops"] / 1e6], [r["auc"]], yerr=[r["auc_std"] or 0.0], marker="o", capsize=3,
                    color=f"C{i % 10}")
        ax.annotate(r["label"], (r["flops"] / 1e6, r["auc"]), textcoords="offset points", xytext=(4, 3),
                    fontsize=7)
    ax.set_xlabel("FLOPs per example (millions)")
    ax.set_ylabel("test AUC")
    ax.set_title("Table 2: accuracy against computation", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def table4_figure(per_seed: Sequence[Sequence[float]], paper: Sequence[float]):
    """Table 4: the share of test examples exiting at each depth, mean over the seeds
    (bars) with each seed's value (dots), beside the paper's."""
    fig, ax = _figure(figsize=(6.5, 3.6))
    width = 0.38
    layers = max((len(f) for f in per_seed), default=0)
    x = np.arange(max(layers, len(paper)))
    seeds = np.array([list(f) + [np.nan] * (layers - len(f)) for f in per_seed], dtype=float).reshape(-1, layers)
    if layers:
        ax.bar(x[:layers] - width / 2, 100 * np.nanmean(seeds, axis=0), width, label="adaref (mean over seeds)")
        for row in seeds:
            ax.plot(x[:layers] - width / 2, 100 * row, "o", color="k", ms=3)
    ax.bar(x[:len(paper)] + width / 2, 100 * np.asarray(paper), width, label="paper (Criteo, L = 4)", color="0.6")
    ax.plot([], [], "o", color="k", ms=3, label="one seed")
    ax.set_xticks(x, [f"layer {l + 1}" for l in x])
    ax.set_ylim(0, 105)
    ax.set_ylabel("% of test examples")
    ax.set_title("Table 4: exit depth", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
