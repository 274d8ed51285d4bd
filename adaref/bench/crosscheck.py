"""``python -m adaref.bench crosscheck``: time ``golden`` and ``compare`` on the paper's
configuration (F = 39, D = 16, L = 4, B = 256, float64 and float32) and the upstream one
(F = 38), two ways:

* first run: each command as a user first types it, ``python -m adaref.crosscheck
  golden --preset paper --batch 256 --out DIR`` and then ``python -m adaref.crosscheck
  compare DIR THEIRS.npz``, each in a new process, timed end to end (interpreter start,
  imports, Numba's kernels from its on-disk cache or compiled, the work, the files);
* warm: the same commands called in this process, best of ``--repeat`` (the first call
  pays the in-process imports).

Targets (issue: the cross-check toolkit): ``golden`` under 20 s, ``compare`` of such a
dump (the golden tensors themselves, so every tensor is checked) under 5 s.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from adaref.argtypes import integer
from adaref.bench import plain


SUMMARY = "time golden and compare at the paper's size (F = 39, D = 16, L = 4, B = 256)"
RUNTIME = "about 20 s"     # default run, 2-core machine

def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _first_run(argv: list[str]) -> float:
    """Seconds for ``python -m adaref.crosscheck ARGV`` in a new process; raises
    RuntimeError with its error output if it fails."""
    import adaref

    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(adaref.__file__)))     # this adaref, installed or not
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "adaref.crosscheck", *argv], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"python -m adaref.crosscheck {' '.join(argv)}: exit {done.returncode}: "
                           f"{done.stderr.strip()[-500:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m adaref.bench crosscheck", description=plain(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--batch", type=integer(1), default=256, help="examples (default 256)")
    p.add_argument("--repeat", type=integer(1), default=2, help="warm runs per setting, best kept (default 2)")
    args = p.parse_args(argv)

    from adaref.crosscheck.__main__ import main as cli
    from adaref.crosscheck.compare import load_golden

    print(f"{'':<18} {'first run (new process)':>24} {'warm (in process)':>22}")
    print(f"{'preset':<9} {'dtype':<8} {'golden s':>11} {'compare s':>12} {'golden s':>10} {'compare s':>11} "
          f"{'tensors':>8} {'MB':>5}")
    with tempfile.TemporaryDirectory() as tmp:
        for preset, dtype in (("paper", "float64"), ("paper", "float32"), ("upstream", "float64")):
            out = os.path.join(tmp, f"{preset}-{dtype}")
            argv_g = ["golden", "--preset", preset, "--dtype", dtype, "--batch", str(args.batch), "--out", out]
            theirs = os.path.join(tmp, "theirs.npz")
            try:
                first_golden = _first_run(argv_g)
                _, tensors = load_golden(out)
                np.savez(theirs, **tensors)
                first_compare = _first_run(["compare", out, theirs])
            except RuntimeError as e:
                print(f"adaref.bench crosscheck: {e}", file=sys.stderr)
                return 1
            sink = io.StringIO()
            with contextlib.redirect_stdout(sink):
                t_golden = _best(lambda: cli(argv_g), args.repeat)
                t_compare = _best(lambda: cli(["compare", out, theirs]), args.repeat)
            size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)) / 1e6
            print(f"{preset:<9} {dtype:<8} {first_golden:>11.2f} {first_compare:>12.2f} {t_golden:>10.2f} "
                  f"{t_compare:>11.2f} {len(tensors):>8} {size:>5.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
