"""bench pytorch runs and compares the same computation: both sides get the same weights."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")


def test_bench_pytorch_prints_every_row(capsys):
    from adaref.bench.pytorch import main

    assert main(["--batch", "32", "--rounds", "1", "--k", "2"]) == 0
    out = capsys.readouterr().out
    for row in ("train k = 5", "infer full", "infer hard (k = 2", "train k = 2"):
        assert row in out


def test_both_sides_compute_the_same_loss_before_the_first_step():
    """Equal work means the same function: the objective of both sides agrees at the start."""
    from adaref.bench.pytorch import _config
    from adaref.crosscheck.torch_port import TorchPort, model_forward, objective as t_objective
    from adaref.model import AdaEnsemble
    from adaref.training.objective import objective

    vocab = [20] * 39
    rng = np.random.default_rng(0)
    ids, labels = rng.integers(0, 20, size=(16, 39)), rng.integers(0, 2, size=16).astype(np.float64)
    cfg = _config(True)
    model = AdaEnsemble(cfg, vocab, rng=np.random.default_rng(0), dtype=np.float64)
    port = TorchPort(cfg, vocab, model.state_dict(), np.float64)
    model.train()
    ours = objective(model(ids, k=5, form="soft"), labels, 0.01, 0.01)[0].item()
    theirs = t_objective(model_forward(port.params, cfg, port.expert_cfgs, vocab, ids.astype(np.int64), 5, "soft"),
                         torch.as_tensor(labels), (0.01, 0.01, 0.0))[0].item()
    assert abs(ours - theirs) < 1e-10


def test_the_pytorch_worker_gets_the_users_thread_settings_not_adarefs():
    """The PyTorch side runs in its own process without the OMP_WAIT_POLICY default that
    adaref set for Numba (a value the user set is passed on), and answers a step."""
    import os

    import adaref
    from adaref.bench.pytorch import _TorchWorker

    expected = ("default" if "OMP_WAIT_POLICY" in adaref._DEFAULTS_SET
                else os.environ.get("OMP_WAIT_POLICY", "default"))
    worker = _TorchWorker(8, 1)
    try:
        assert worker.describe.endswith(f"1 threads, OMP_WAIT_POLICY {expected}")
        assert worker.step((1, 2, "soft", "train")) > 0
    finally:
        worker.close()
