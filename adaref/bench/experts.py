"""Benchmark of the five experts: ``python -m adaref.bench experts [options]``.

For each expert (both presets' arrangements selectable) at B x F x D (default 4096 x
39 x 16, float32), on the Numba path and on the NumPy-twin path:

* forward time and forward+backward time (best of ``--repeats`` rounds, after a
  warm-up that also compiles the Numba kernels; the two paths and the ceiling matmul
  are timed interleaved, round by round, so that load from other processes on a
  shared machine hits them alike);
* achieved GFLOP/s: forward = flops() x B / time; forward+backward counts 3 x the
  forward FLOPs (the usual convention: the backward pass of a matmul is two matmuls);
* the Numba/NumPy speed-up (NumPy time / Numba time: > 1 means Numba is faster);

and as the ceiling, the float32 rate NumPy's BLAS reaches for (B x FD) @ (FD x FD)
(4096 x 624 @ 624 x 624 at the defaults), timed before and after every round. The
``%ceil`` column is the median over rounds of (the expert's forward+backward rate /
the ceiling's rate in the same round), which cancels most of the load that other
processes put on a shared machine; the header prints the best and the median
ceiling. A second table times each kernel alone on
its twin paths at the shapes the experts use. The header names the BLAS library and
its threads (threadpoolctl if installed, else ``numpy.show_config`` and the
environment). Nothing here changes the environment (e.g. ``OPENBLAS_CORETYPE``).
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Callable

import numpy as np

from adaref import Tensor, kernels
from adaref.bench import plain
from adaref.experts import EXPERTS, build_expert, expert_configs


SUMMARY = "each expert's forward and backward time, Numba against its NumPy twin, and GFLOP/s"
RUNTIME = "about 20 s"     # default run, 2-core machine

def blas_info() -> str:
    """One line: BLAS library, version, threads, and relevant environment variables."""
    env = ", ".join(f"{k}={os.environ[k]}" for k in sorted(os.environ)
                    if k.startswith(("OPENBLAS_", "OMP_", "MKL_", "NUMBA_NUM")))
    try:
        from threadpoolctl import threadpool_info

        pools = [f"{p.get('internal_api')} {p.get('version')} ({p.get('num_threads')} threads, "
                 f"{p.get('architecture')})" for p in threadpool_info() if p.get("user_api") == "blas"]
        lib = "; ".join(pools) or "no BLAS pool found by threadpoolctl"
    except ImportError:
        try:
            blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
            lib = f"{blas.get('name')} {blas.get('version')} (numpy.show_config; threadpoolctl " \
                  f"not installed, threads: OpenBLAS default = {os.cpu_count()} cores unless set)"
        except Exception as e:  # noqa: BLE001  (an informational header only)
            lib = f"unknown ({type(e).__name__}: {e})"
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (f"BLAS: {lib}; env: {env or 'none'}; CPU: {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, load average {load} (other processes skew timings); "
            f"numpy {np.__version__}")


def best_time(fn: Callable[[], object], repeats: int) -> float:
    fn()                                                   # warm-up (and JIT compile)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def time_expert(expert, x: np.ndarray, x0: np.ndarray, repeats: int,
                ceiling: Callable[[], object]) -> tuple[dict, dict, list]:
    """Time one expert on both paths, interleaved with the ceiling matmul.

    Each round times the ceiling matmul, then forward and forward+backward on each
    backend, then the ceiling again, so that load from other processes on a shared
    machine hits them alike. Returns the best (forward, forward+backward) times per
    backend, per backend the list over rounds of (round's ceiling time / round's
    forward+backward time), and every ceiling time.
    """
    g = np.ones(x.shape, dtype=x.dtype)

    def forward():
        return expert(Tensor(x, requires_grad=True), Tensor(x0, requires_grad=True))

    def forward_backward():
        expert.zero_grad()
        forward().backward(g)

    def once(fn):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    best = {b: [np.inf, np.inf] for b in kernels.BACKENDS}
    ratios: dict = {b: [] for b in kernels.BACKENDS}
    ceilings = []
    for backend in kernels.BACKENDS:                       # warm-up and JIT compile
        with kernels.use_backend(backend):
            forward_backward()
    for _ in range(repeats):
        before, round_times = once(ceiling), {}
        for backend in kernels.BACKENDS:
            with kernels.use_backend(backend):
                best[backend][0] = min(best[backend][0], once(forward))
                round_times[backend] = once(forward_backward)
                best[backend][1] = min(best[backend][1], round_times[backend])
        after = once(ceiling)
        ceilings += [before, after]
        for backend in kernels.BACKENDS:
            ratios[backend].append((before + after) / 2 / round_times[backend])
    return best, ratios, ceilings


def kernel_cases(b: int, f: int, d: int, dtype) -> list[tuple[str, str, Callable[[], None]]]:
    """(kernel, shape, call) at the shapes the experts use."""
    from adaref.kernels import attention as ka
    from adaref.kernels import conv as kc
    from adaref.kernels import hadamard as kh

    rng = np.random.default_rng(1)
    arr = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    n = f * d
    z, u, g, out, gz, gu = (arr(b, n) for _ in range(6))
    bias, gb = arr(n), arr(n)
    heads, dh = 2, d // 2
    q, k, v, o = (arr(b, f, heads, dh) for _ in range(4))
    gq, gk, gv = (arr(b, f, heads, dh) for _ in range(3))
    mask = np.ones((b, f), dtype=bool)
    ka.attention_forward(o, None, q, k, v, mask, 0.35)
    x, width = arr(b, f, d), 3
    cols, gx = np.empty((b, f, width * d), dtype=dtype), np.empty((b, f, d), dtype=dtype)
    h = arr(b, f, d)
    pooled, index = np.empty((b, f // 2, d), dtype=dtype), np.empty((b, f // 2, d), np.int64)
    kc.maxpool_forward(pooled, index, h, 2)
    gp = arr(b, f // 2, d)
    return [
        ("hadamard_forward", f"({b}, {n}) bias outside", lambda: kh.hadamard_forward(out, z, u, bias, 1)),
        ("hadamard_backward", f"({b}, {n}) bias outside",
         lambda: kh.hadamard_backward(gz, gu, gb, g, z, u, bias, 1)),
        ("bias_act_forward", f"({b}, {n}) relu", lambda: kh.bias_act_forward(out, z, bias, 1)),
        ("bias_act_backward", f"({b}, {n}) relu", lambda: kh.bias_act_backward(gz, gb, g, z, 1)),
        ("attention_forward", f"({b}, {f}, {heads}, {dh})",
         lambda: ka.attention_forward(o, None, q, k, v, mask, 0.35)),
        ("attention_backward", f"({b}, {f}, {heads}, {dh}) recomputes a",
         lambda: ka.attention_backward(gq, gk, gv, o, q, k, v, mask, 0.35)),
        ("im2col", f"({b}, {f}, {d}) K={width} same", lambda: kc.im2col(cols, x, 1)),
        ("col2im", f"({b}, {f}, {d}) K={width} same", lambda: kc.col2im(gx, cols, 1)),
        ("maxpool_forward", f"({b}, {f}, {d}) p=2", lambda: kc.maxpool_forward(pooled, index, h, 2)),
        ("maxpool_backward", f"({b}, {f}, {d}) p=2", lambda: kc.maxpool_backward(gx, gp, index, 2)),
    ]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m adaref.bench experts", description=plain(__doc__.split("\n")[0]),
                                     allow_abbrev=False)
    parser.add_argument("--batch", "-B", type=int, default=4096)
    parser.add_argument("--fields", "-F", type=int, default=39)
    parser.add_argument("--dim", "-D", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the best is reported")
    parser.add_argument("--preset", choices=["paper", "upstream"], default="paper")
    parser.add_argument("--experts", default=",".join(EXPERTS), help="comma-separated names")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--no-kernels", action="store_true", help="skip the per-kernel table")
    args = parser.parse_args(argv)
    names = [n for n in args.experts.split(",") if n]
    unknown = [n for n in names if n not in EXPERTS]
    if unknown:
        parser.error(f"unknown expert(s) {', '.join(unknown)}; known: {', '.join(EXPERTS)}")
    b, f, d, dtype = args.batch, args.fields, args.dim, np.dtype(args.dtype)

    print(blas_info())
    n = f * d
    mm_rng = np.random.default_rng(0)
    mm_a = mm_rng.standard_normal((b, n), dtype=np.float32)
    mm_w = mm_rng.standard_normal((n, n), dtype=np.float32)
    ceiling_call = lambda: mm_a @ mm_w  # noqa: E731
    t_mm = best_time(ceiling_call, args.repeats)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, f, d)).astype(dtype)
    x0 = rng.standard_normal((b, f, d)).astype(dtype)
    configs = expert_configs(args.preset)
    rows, ceilings = [], []
    for name in names:
        expert = build_expert(name, configs[name], f, d, rng=np.random.default_rng(0), dtype=dtype)
        times, ratios, round_ceilings = time_expert(expert, x, x0, args.repeats, ceiling_call)
        ceilings += round_ceilings
        rows.append((name, expert.flops(), times, ratios))
    t_best, t_median = min(t_mm, min(ceilings)), float(np.median(ceilings))
    rate = lambda t: 2.0 * b * n * n / t / 1e9  # noqa: E731
    print(f"ceiling: float32 ({b} x {n}) @ ({n} x {n}): best {t_best * 1e3:.2f} ms = "
          f"{rate(t_best):.1f} GFLOP/s, median over rounds {t_median * 1e3:.2f} ms = "
          f"{rate(t_median):.1f} GFLOP/s")
    print(f"experts ({args.preset} preset), B={b}, F={f}, D={d}, {args.dtype}, best of "
          f"{args.repeats} interleaved rounds; fwd+bwd GFLOP/s counts 3 x forward FLOPs;\n"
          f"%ceil = median over rounds of (fwd+bwd rate / ceiling rate in the same round), "
          f"which cancels most of the load from other processes\n")
    header = (f"{'expert':<7} {'MFLOP/ex':>9} | {'numba fwd ms':>12} {'GF/s':>6} {'fwd+bwd ms':>10} "
              f"{'GF/s':>6} {'%ceil':>6} | {'numpy fwd ms':>12} {'GF/s':>6} {'fwd+bwd ms':>10} "
              f"{'GF/s':>6} {'%ceil':>6} | {'speedup fwd':>11} {'fwd+bwd':>7}")
    print(header)
    print("-" * len(header))
    for name, flops, times, ratios in rows:
        row = f"{name:<7} {flops / 1e6:>9.3f} |"
        for backend in kernels.BACKENDS:
            t_f, t_fb = times[backend]
            gf, gfb = flops * b / t_f / 1e9, 3 * flops * b / t_fb / 1e9
            share = 3 * flops / (2.0 * n * n) * float(np.median(ratios[backend]))
            row += (f" {t_f * 1e3:>12.2f} {gf:>6.1f} {t_fb * 1e3:>10.2f} {gfb:>6.1f} "
                    f"{100 * share:>5.0f}% |")
        (nf, nfb), (pf, pfb) = times["numba"], times["numpy"]
        row += f" {pf / nf:>11.2f} {pfb / nfb:>7.2f}"
        print(row, flush=True)

    if not args.no_kernels:
        print(f"\nkernels alone ({args.dtype}); speedup = NumPy time / Numba time")
        header = f"{'kernel':<19} {'shape':<26} {'numba ms':>9} {'numpy ms':>9} {'speedup':>8}"
        print(header)
        print("-" * len(header))
        for kname, shape, call in kernel_cases(b, f, d, dtype):
            t = {backend: np.inf for backend in kernels.BACKENDS}
            for backend in kernels.BACKENDS:                   # warm-up and JIT compile
                with kernels.use_backend(backend):
                    call()
            for _ in range(args.repeats):                      # interleaved rounds
                for backend in kernels.BACKENDS:
                    with kernels.use_backend(backend):
                        start = time.perf_counter()
                        call()
                        t[backend] = min(t[backend], time.perf_counter() - start)
            print(f"{kname:<19} {shape:<26} {t['numba'] * 1e3:>9.2f} {t['numpy'] * 1e3:>9.2f} "
                  f"{t['numpy'] / t['numba']:>8.2f}", flush=True)
    return 0
