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
time is a median. PyTorch runs in a process of its own, which imports torch before
adaref so that its OpenMP threads keep PyTorch's default wait policy (adaref's
``OMP_WAIT_POLICY=PASSIVE``, set for Numba's threads, slows PyTorch by about 6% when
they share a process), with its default intra-op threads unless ``--torch-threads``.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
import warnings

import numpy as np

import adaref
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


def _data(batch: int):
    """The benchmark's batch: F = 39 fields of 1,000 ids each, from seed 0 (both sides)."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 1000, size=(batch, 39))
    labels = rng.integers(0, 2, size=batch).astype(np.float32)
    return [1000] * 39, ids, labels


def _model(controller: bool, vocab) -> AdaEnsemble:
    """The weights both sides start from (seed 0, float32)."""
    return AdaEnsemble(_config(controller), vocab, rng=np.random.default_rng(0), dtype=np.float32)


def _adaref_fns(controller: bool, vocab, ids, labels, k: int, form: str):
    """(training step, inference) closures of adaref."""
    model = _model(controller, vocab)
    opt = Adam(model.named_parameters(), lr=1e-3)

    def train():
        model.train()
        model.zero_grad()
        loss, _ = objective(model(ids, k=k, form=form if controller else None), labels, 0.01, 0.01)
        loss.backward()
        opt.step()

    def infer():
        model.eval()
        with no_grad():
            model(ids, k=k)

    return train, infer


def _torch_fns(controller: bool, vocab, ids, labels, k: int, form: str):
    """(training step, inference) closures of the PyTorch port, loaded with the weights
    of :func:`_model`."""
    import torch

    from adaref.crosscheck.torch_port import TorchPort, model_forward
    from adaref.crosscheck.torch_port import objective as torch_objective

    cfg = _config(controller)
    port = TorchPort(cfg, vocab, _model(controller, vocab).state_dict(), np.float32)
    params = {n: t.detach().clone().requires_grad_(True) for n, t in port.params.items()}
    opt = torch.optim.Adam(list(params.values()), lr=1e-3)
    ids64, y = ids.astype(np.int64), torch.as_tensor(labels)

    def train():
        opt.zero_grad()
        out = model_forward(params, cfg, port.expert_cfgs, vocab, ids64, k, form if controller else "full")
        torch_objective(out, y, (0.01, 0.01, 0.0))[0].backward()
        opt.step()

    def infer():
        with torch.no_grad():
            model_forward(params, cfg, port.expert_cfgs, vocab, ids64, k, "hard" if controller else "full")

    return train, infer


class _TorchWorker:
    """The PyTorch side in a process of its own, which imports torch before adaref: its
    OpenMP threads keep PyTorch's defaults (adaref sets ``OMP_WAIT_POLICY=PASSIVE`` for
    Numba when it loads first, which costs PyTorch about 6% here) and the two runtimes'
    threads never share a process. It times each step itself and reports it."""

    def __init__(self, batch: int, threads: int | None):
        code = ("import os; os.environ['ADAREF_BENCH_TORCH_OMP'] = os.environ.get('OMP_WAIT_POLICY', "
                "'default'); import torch, runpy, sys; sys.argv = ['adaref.bench._torch_worker'] + "
                "sys.argv[1:]; runpy.run_module('adaref.bench._torch_worker', run_name='__main__')")
        argv = [sys.executable, "-c", code, str(batch)] + ([str(threads)] if threads else [])
        env = {k: v for k, v in os.environ.items() if k not in adaref._DEFAULTS_SET}   # the user's own
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.describe = self._read()

    def _read(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("adaref.bench pytorch: the PyTorch worker process stopped "
                               f"(exit code {self.proc.wait()}); see its error above")
        return line.strip()

    def step(self, row: tuple) -> float:
        """Seconds of one step of ``row`` = (controller, k, form, what), timed in the worker."""
        self.proc.stdin.write(" ".join(map(str, row)) + "\n")
        self.proc.stdin.flush()
        return float(self._read())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def _median_rates(adaref_fn, torch_fn, batch: int, rounds: int) -> dict:
    """Examples/s of each side, the median of ``rounds`` alternating rounds, after one
    untimed round (compilation, caches, optimiser state). ``torch_fn`` returns the
    seconds its worker measured."""
    adaref_fn()
    torch_fn()
    times = {"adaref": [], "torch": []}
    for _ in range(rounds):
        t = time.perf_counter()
        adaref_fn()
        times["adaref"].append(time.perf_counter() - t)
        times["torch"].append(torch_fn())
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
    if importlib.util.find_spec("torch") is None:
        print("adaref.bench pytorch: needs PyTorch (pip install 'adaref[torch]')")
        return 2
    B = args.batch
    vocab, ids, labels = _data(B)
    worker = _TorchWorker(B, args.torch_threads)
    try:
        print(f"B = {B}, F = 39, D = 16, L = 4, float32, paper preset, jitter off; adaref kernels: "
              f"{kernels.backend()}, {runtime.describe()}; {worker.describe} (its own process)")
        rows = [("train k = 5 (soft, all layers)", True, 5, "soft", "train"),
                ("infer full (k = 5, no controller)", False, 5, "full", "infer"),
                (f"infer hard (k = {args.k}, controller)", True, args.k, "hard", "infer"),
                (f"train k = {args.k} (soft)", True, args.k, "soft", "train")]
        head = f"{'setting':<36} {'adaref ex/s':>11} {'torch ex/s':>11} {'adaref/torch':>12}"
        print(head + "\n" + "-" * len(head))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="gate combine='gates' with k = 1")
            for label, controller, k, form, what in rows:
                train, infer = _adaref_fns(controller, vocab, ids, labels, k, form)
                rates = _median_rates(train if what == "train" else infer,
                                      lambda: worker.step((int(controller), k, form, what)), B,
                                      args.rounds if what == "train" else 2 * args.rounds)
                print(f"{label:<36} {rates['adaref']:>11,.0f} {rates['torch']:>11,.0f} "
                      f"{rates['adaref'] / rates['torch']:>12.2f}")
    finally:
        worker.close()
    print("\nThe first two rows are equal work (every expert on every example, all layers); the last")
    print("two show each as designed (adaref sparse dispatch and Algorithm 1's early exit; the port dense).")
    return 0
