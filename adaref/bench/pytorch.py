"""``python -m adaref.bench pytorch``: adaref against an equivalent PyTorch eager model.

The PyTorch side is :mod:`adaref.crosscheck.torch_port`, the independent PyTorch
AdaEnsemble of the cross-check toolkit (written with ``torch.nn.functional``:
``F.linear``, ``F.conv1d``, ``F.scaled_dot_product_attention``, ``F.layer_norm``),
loaded with the same weights, on the same batch, in float32, eager mode, with
``torch.optim.Adam``. It computes the experts **densely** (every expert on every
example, the combine weights zero outside the top-k) and the hard exit as the full-depth
network read at each example's exit layer, so the comparisons of equal work are:

* ``train``: one training step at k = 5 (every expert on every example in both), the
  soft depth mixture through all L layers, eq. 18's objective, backward, Adam on every
  parameter; the gates' jitter is switched off in both (the port has none);
* ``infer full``: inference at k = 5 without the controller (all L layers, every expert).

Two more rows show what each computes as designed: ``infer hard`` (with the controller:
adaref runs Algorithm 1, each example stops at its exit layer; the port runs full depth)
and ``train k`` at the ``--k`` given (adaref dispatches each example to its k experts;
the port still runs all five). Rounds alternate between the two implementations; each
time is a median. PyTorch uses its default intra-op threads unless ``--torch-threads``.
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from adaref import kernels, no_grad, runtime
from adaref.argtypes import integer
from adaref.bench import plain
from adaref.model import AdaEnsemble, model_config
from adaref.optim import Adam
from adaref.training.objective import objective

SUMMARY = "adaref against an equivalent PyTorch eager model (the cross-check port), same weights"
RUNTIME = "about 2 min"     # default run, 2-core machine


def _config(controller: bool):
    base = model_config("paper", dim=16, num_layers=4)
    return model_config("paper", dim=16, num_layers=4, gate={**base.gate.to_dict(), "jitter": 0.0},
                        controller={**base.controller.to_dict(), "enabled": controller,
                                    "gate": {**base.controller.gate.to_dict(), "jitter": 0.0}})


def _pair(controller: bool, vocab, ids, labels, k: int, form: str):
    """(adaref train step, torch train step, adaref inference, torch inference) closures."""
    import torch

    from adaref.crosscheck.torch_port import TorchPort, model_forward
    from adaref.crosscheck.torch_port import objective as torch_objective

    cfg = _config(controller)
    model = AdaEnsemble(cfg, vocab, rng=np.random.default_rng(0), dtype=np.float32)
    port = TorchPort(cfg, vocab, model.state_dict(), np.float32)
    params = {n: t.detach().clone().requires_grad_(True) for n, t in port.params.items()}
    t_opt = torch.optim.Adam(list(params.values()), lr=1e-3)
    a_opt = Adam(model.named_parameters(), lr=1e-3)
    ids64 = ids.astype(np.int64)
    y = torch.as_tensor(labels)

    def adaref_train():
        model.train()
        model.zero_grad()
        loss, _ = objective(model(ids, k=k, form=form if controller else None), labels, 0.01, 0.01)
        loss.backward()
        a_opt.step()

    def torch_train():
        t_opt.zero_grad()
        out = model_forward(params, cfg, port.expert_cfgs, vocab, ids64, k, form if controller else "full")
        torch_objective(out, y, (0.01, 0.01, 0.0))[0].backward()
        t_opt.step()

    def adaref_infer():
        model.eval()
        with no_grad():
            model(ids, k=k)

    def torch_infer():
        with torch.no_grad():
            model_forward(params, cfg, port.expert_cfgs, vocab, ids64, k, "hard" if controller else "full")

    return adaref_train, torch_train, adaref_infer, torch_infer


def _median_rates(fns: dict, batch: int, rounds: int) -> dict:
    for fn in fns.values():          # untimed: compilation, caches, optimiser state
        fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: batch / float(np.median(v)) for name, v in times.items()}


def main(argv: list[str]) -> int:
    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    p = argparse.ArgumentParser(allow_abbrev=False, prog="python -m adaref.bench pytorch",
                                description=plain(__doc__), formatter_class=Formatter)
    p.add_argument("--batch", type=integer(1), default=4096, help="examples per batch")
    p.add_argument("--rounds", type=integer(1), default=5, help="timed rounds (median)")
    p.add_argument("--k", type=integer(1), default=3, help="k of the 'as designed' rows (1..5)")
    p.add_argument("--torch-threads", type=integer(1), default=None,
                   help="torch.set_num_threads (default: PyTorch's own choice)")
    args = p.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("adaref.bench pytorch: needs PyTorch (pip install 'adaref[torch]')")
        return 2
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    F, B = 39, args.batch
    vocab = [1000] * F
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 1000, size=(B, F))
    labels = rng.integers(0, 2, size=B).astype(np.float32)
    print(f"B = {B}, F = {F}, D = 16, L = 4, float32, paper preset, jitter off; adaref kernels: "
          f"{kernels.backend()}, {runtime.describe()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    rows = [("train k = 5 (soft, all layers)", True, 5, "soft", "train"),
            ("infer full (k = 5, no controller)", False, 5, "full", "infer"),
            (f"infer hard (k = {args.k}, controller)", True, args.k, "hard", "infer"),
            (f"train k = {args.k} (soft)", True, args.k, "soft", "train")]
    head = f"{'setting':<36} {'adaref ex/s':>11} {'torch ex/s':>11} {'adaref/torch':>12}"
    print(head + "\n" + "-" * len(head))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="gate combine='gates' with k = 1")
        for label, controller, k, form, what in rows:
            a_train, t_train, a_infer, t_infer = _pair(controller, vocab, ids, labels, k, form)
            fns = {"adaref": a_train, "torch": t_train} if what == "train" else {"adaref": a_infer,
                                                                                "torch": t_infer}
            rates = _median_rates(fns, B, args.rounds if what == "train" else 2 * args.rounds)
            print(f"{label:<36} {rates['adaref']:>11,.0f} {rates['torch']:>11,.0f} "
                  f"{rates['adaref'] / rates['torch']:>12.2f}")
    print("\nThe first two rows are equal work (every expert on every example, all layers); the last")
    print("two show each as designed (adaref sparse dispatch and Algorithm 1's early exit; the port dense).")
    return 0
