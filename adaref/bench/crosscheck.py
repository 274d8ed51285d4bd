"""``python -m adaref.bench crosscheck``: time ``golden`` and ``compare`` on the paper's
configuration (F = 39, D = 16, L = 4, B = 256, float64 and float32) and the upstream one
(F = 38), each run as the command a user types, in-process, best of ``--repeat``.

Targets (issue: the cross-check toolkit): ``golden`` under 20 s, ``compare`` of such a
dump (the golden tensors themselves, so every tensor is checked) under 5 s.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time

import numpy as np

from adaref.argtypes import integer
from adaref.bench import plain


SUMMARY = "time golden and compare at the paper's size (F = 39, D = 16, L = 4, B = 256)"
RUNTIME = "about 10 s"     # default run, 2-core machine

def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m adaref.bench crosscheck", description=plain(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--batch", type=integer(1), default=256, help="examples (default 256)")
    p.add_argument("--repeat", type=integer(1), default=2, help="runs per setting, best kept (default 2)")
    args = p.parse_args(argv)

    from adaref.crosscheck.__main__ import main as cli
    from adaref.crosscheck.compare import load_golden

    print(f"{'preset':<9} {'dtype':<8} {'golden s':>9} {'compare s':>10} {'tensors':>8} {'MB':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for preset, dtype in (("paper", "float64"), ("paper", "float32"), ("upstream", "float64")):
            out = os.path.join(tmp, f"{preset}-{dtype}")
            argv_g = ["golden", "--preset", preset, "--dtype", dtype, "--batch", str(args.batch), "--out", out]
            sink = io.StringIO()
            with contextlib.redirect_stdout(sink):
                t_golden = _best(lambda: cli(argv_g), args.repeat)
            _, tensors = load_golden(out)
            theirs = os.path.join(tmp, "theirs.npz")
            np.savez(theirs, **tensors)
            with contextlib.redirect_stdout(sink):
                t_compare = _best(lambda: cli(["compare", out, theirs]), args.repeat)
            size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)) / 1e6
            print(f"{preset:<9} {dtype:<8} {t_golden:>9.2f} {t_compare:>10.2f} {len(tensors):>8} {size:>7.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
