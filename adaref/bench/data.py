"""Data-pipeline benchmark: ``python -m adaref.bench data [--rows 1000000,4000000]``.

For each size, writes a synthetic Criteo ``train.txt``-format file (planted rows from
:mod:`adaref.data.synthetic`, 39 fields, about 250 bytes a line like the real file),
runs ``prepare`` on it (preset ``paper``) in a fresh child process, and reports rows/s
and the child's peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``).

Bounded memory means: peak RSS minus the output arrays is about the same at every size.
``prepare`` streams the output arrays (ids, labels, split codes) to disk with plain
writes, so none of them is resident and the peak RSS itself must stay flat; the
benchmark checks that the largest size's peak is within 10 % of the smallest's. It also projects
the time for the full 45,840,617-line Criteo ``train.txt`` from the largest run's rate.
Not a test: it takes minutes and a few GB of disk in ``--workdir`` (default: a
temporary directory, removed afterwards unless ``--keep``).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from adaref.bench import plain


SUMMARY = "prepare throughput and peak memory on generated Criteo-format files"
RUNTIME = "about 80 s"     # default run, 2-core machine

CRITEO_FULL_ROWS = 45_840_617


def _child(path: str, out: str) -> int:
    from adaref.data.config import preset_options
    from adaref.data.pipeline import prepare

    t = time.perf_counter()
    m = prepare("criteo", path, preset_options("paper", "criteo"), out, preset="paper", progress=True, rebuild=True)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    out_bytes = sum(os.path.getsize(os.path.join(out, f)) for f in ("ids.npy", "labels.npy", "split.npy"))
    print(json.dumps({"rows": m["rows"]["encoded"], "seconds": seconds, "peak_rss": peak,
                      "output_bytes": out_bytes, "vocab_sizes": m["vocab_sizes"]}))
    return 0


def _write(path: str, rows: str, max_vocab: str) -> int:
    from adaref.data.synthetic import SynthOptions, write_criteo_text

    t = time.perf_counter()
    info = write_criteo_text(SynthOptions(rows=int(rows), max_vocab=int(max_vocab), seed=0), path, progress=True)
    print(json.dumps({"file_bytes": info["bytes"], "generate_seconds": time.perf_counter() - t}))
    return 0


def _in_child(*args: str) -> dict:
    """Run ``python -m adaref.bench data ARGS`` and parse its last stdout line (JSON).

    Each step runs in its own process and this parent holds no data: Linux keeps
    ``ru_maxrss`` across fork and exec, so a child's peak also covers the parent's
    memory at the moment it was started (here only the interpreter and imports).
    """
    # glibc raises its mmap threshold after big frees and then keeps freed chunk-sized
    # blocks in the heap, so RSS would drift with allocation history; a fixed threshold
    # returns every large block at once and RSS tracks live memory (no effect elsewhere).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_", "1048576")}
    proc = subprocess.run([sys.executable, "-m", "adaref.bench", "data", *args],
                          stdout=subprocess.PIPE, text=True, check=True, env=env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _run_one(rows: int, workdir: str, max_vocab: int) -> dict:
    path = os.path.join(workdir, f"synth_criteo_{rows}.txt")
    out = os.path.join(workdir, f"enc_{rows}")
    info = _in_child("--write", path, str(rows), str(max_vocab))
    res = _in_child("--child", path, out)
    res.update(info)
    os.remove(path)
    shutil.rmtree(out, ignore_errors=True)
    return res


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m adaref.bench data", description=plain(__doc__.split("\n\n")[0]),
                                allow_abbrev=False)
    p.add_argument("--rows", default="1000000,4000000", help="comma-separated sizes (default 1000000,4000000)")
    p.add_argument("--max-vocab", type=int, default=20_000, help="largest synthetic vocabulary (default 20000)")
    p.add_argument("--workdir", help="where to write the files (default: a temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--child", nargs=2, metavar=("FILE", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--write", nargs=3, metavar=("FILE", "ROWS", "MAX_VOCAB"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return _child(*args.child)
    if args.write:
        return _write(*args.write)
    sizes = [int(s) for s in args.rows.split(",") if s.strip()]
    workdir = args.workdir or tempfile.mkdtemp(prefix="adaref-bench-data-")
    os.makedirs(workdir, exist_ok=True)
    results = []
    try:
        for n in sizes:
            print(f"== {n:,} rows", file=sys.stderr)
            results.append(_run_one(n, workdir, args.max_vocab))
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    mb = 1 << 20
    print("| rows | file MB | prepare s | rows/s | MB/s | peak RSS MB | output arrays on disk MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['rows']:,} | {r['file_bytes'] / mb:,.0f} | {r['seconds']:.1f} | {r['rows'] / r['seconds']:,.0f} "
              f"| {r['file_bytes'] / mb / r['seconds']:.1f} | {r['peak_rss'] / mb:,.0f} | {r['output_bytes'] / mb:,.0f} |")
    status = 0
    if len(results) >= 2:
        ratio = results[-1]["peak_rss"] / results[0]["peak_rss"]
        ok = ratio <= 1.10
        status = 0 if ok else 1
        print(f"\nbounded memory: peak RSS at {results[-1]['rows']:,} rows / at {results[0]['rows']:,} rows "
              f"= {ratio:.3f} ({'within' if ok else 'NOT within'} 10 %; the output arrays are streamed to disk, "
              f"not resident)")
    r = results[-1]
    rate = r["rows"] / r["seconds"]
    print(f"projected full Criteo train.txt ({CRITEO_FULL_ROWS:,} rows): {CRITEO_FULL_ROWS / rate / 60:.1f} min "
          f"at {rate:,.0f} rows/s (plus output arrays of {CRITEO_FULL_ROWS * (39 * 4 + 5) / 1e9:.1f} GB)")
    return status
