"""The run's PNG plots: loss and AUC curves, per-layer expert usage, exit depths, k."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def write_plots(run_dir: Path, history: list[dict], test, experts: Sequence[str], *,
                eval_split: str = "val", k0: int | None = None) -> list[Path]:
    """Write ``curves.png``, ``expert_usage.png``, ``exit_depth.png`` and ``k.png`` (only
    ``curves.png`` for a competing model: ``experts`` empty).

    ``eval_split``: the split the periodic evaluations ran on (``test`` when the data has
    no validation split), named in the labels. ``k0``: k at step 0, where ``k.png`` starts.
    """
    paths = []
    steps = [r["step"] for r in history]
    ev = eval_split

    fig, (ax0, ax1, ax2) = _figure(1, 3, figsize=(13, 3.8))
    ax0.plot(steps, [r["train_log_loss"] for r in history], label="train log-loss")
    ax0.plot(steps, [r["val_log_loss"] for r in history], label=f"{ev} log-loss" + (" (hard exit)" if experts else ""))
    ax0.set_xlabel("step")
    ax0.set_title("log-loss")
    ax0.legend(fontsize=8)
    ax1.plot(steps, [r["train_loss"] for r in history], label="train objective (eq. 18)", color="C2")
    ax1.set_xlabel("step")
    ax1.set_title("training objective (eq. 18: log-loss + regularisers)")
    ax1.legend(fontsize=8)
    ax2.plot(steps, [r["val_auc"] for r in history], label=f"{ev} AUC" + (" (hard exit)" if experts else ""))
    if any(r.get("val_auc_soft") is not None for r in history):
        ax2.plot(steps, [r["val_auc_soft"] for r in history], label=f"{ev} AUC (soft mixture)")
    ax2.set_xlabel("step")
    ax2.set_title(f"AUC on the {ev} split")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    paths.append(_save(fig, run_dir / "curves.png"))

    if not experts:              # a competing model (§4.1.3): no experts, exits or k
        return paths
    usage = np.asarray(test.expert_usage)                                # (L, N)
    fig, ax = _figure(figsize=(6.5, 3.8))
    width = 0.8 / max(len(experts), 1)
    for j, name in enumerate(experts):
        ax.bar(np.arange(len(usage)) + j * width, usage[:, j], width, label=name)
    ax.set_xticks(np.arange(len(usage)) + 0.4 - width / 2, [f"layer {l + 1}" for l in range(len(usage))])
    ax.set_ylabel("fraction of test examples")
    ax.set_title(f"expert usage per layer (k = {test.k})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(_save(fig, run_dir / "expert_usage.png"))

    fig, ax = _figure(figsize=(5, 3.5))
    depth = np.asarray(test.depth_fractions)
    ax.bar([f"layer {l + 1}" for l in range(len(depth))], 100 * depth)
    for x, v in enumerate(depth):
        ax.text(x, 100 * v, f"{100 * v:.1f}%", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("% of test examples")
    ax.set_title("exit depth (Table 4)")
    fig.tight_layout()
    paths.append(_save(fig, run_dir / "exit_depth.png"))

    fig, ax = _figure(figsize=(5, 3.2))
    k_steps, ks = list(steps), [r["k"] for r in history]
    if k0 is not None and (not k_steps or k_steps[0] > 0):
        k_steps, ks = [0] + k_steps, [k0] + ks
    ax.step(k_steps, ks, where="post")
    ax.set_xlim(left=0)
    ax.set_yticks(range(1, len(experts) + 1))                        # k is an integer in 1..N
    ax.set_ylim(0.5, len(experts) + 0.5)
    ax.set_xlabel("step")
    ax.set_ylabel("k")
    ax.set_title("experts per example (annealed k)")
    fig.tight_layout()
    paths.append(_save(fig, run_dir / "k.png"))
    return paths


def _figure(rows: int = 1, cols: int = 1, figsize=(6, 4)):
    """A Matplotlib Figure that is not registered with pyplot: writing plots neither
    changes the caller's backend (a notebook keeps its inline plots) nor opens windows."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    axes = fig.subplots(rows, cols)
    return fig, axes


def _save(fig, path: Path) -> Path:
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    return path
