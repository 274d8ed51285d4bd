"""The PyTorch side of ``python -m adaref.bench pytorch``, run in a process of its own.

Started by :class:`adaref.bench.pytorch._TorchWorker` with torch imported before adaref
(so PyTorch's OpenMP threads keep their default wait policy). Arguments: batch size and
optionally the number of torch threads. It prints one line describing torch, then
answers each request line ``controller k form what`` (e.g. ``1 3 soft train``) with the
seconds one step of that setting took, building each setting's model once.
"""
import os
import sys
import time
import warnings


def main(argv: list[str]) -> int:
    import torch

    from adaref.bench.pytorch import _data, _torch_fns

    batch = int(argv[0])
    if len(argv) > 1:
        torch.set_num_threads(int(argv[1]))
    vocab, ids, labels = _data(batch)
    policy = os.environ.get("ADAREF_BENCH_TORCH_OMP", "?")    # as torch loaded, before adaref
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY {policy}",
          flush=True)
    built = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="gate combine='gates' with k = 1")
        for line in sys.stdin:
            controller, k, form, what = line.split()
            key = (controller, k, form)
            if key not in built:
                built[key] = _torch_fns(controller == "1", vocab, ids, labels, int(k), form)
            fn = built[key][0 if what == "train" else 1]
            t = time.perf_counter()
            fn()
            print(time.perf_counter() - t, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
