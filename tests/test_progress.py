"""Training progress on a log file: periodic lines, speed and ETA from measured steps."""
import io
import re

from adaref.training import progress as progress_mod
from adaref.training.progress import TrainingProgress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _run(monkeypatch, step_seconds, log_every, total=10, batch=100):
    clock = Clock()
    monkeypatch.setattr(progress_mod.time, "perf_counter", clock)
    log = io.StringIO()
    p = TrainingProgress(total, stream=log, log_every=log_every)
    for step, dt in enumerate(step_seconds, start=1):
        clock.now += dt
        p.update(step, step / total, batch, 0.5, None)
    return log.getvalue().splitlines()


def test_a_log_file_gets_a_line_every_log_every_seconds(monkeypatch):
    lines = _run(monkeypatch, [1.0] * 10, log_every=3.0)
    steps = [int(re.search(r"step\s+(\d+)/", l).group(1)) for l in lines]
    assert steps == [1, 4, 7, 10]            # the first step, then every 3 s


def test_speed_and_eta_ignore_the_first_compiling_step(monkeypatch):
    lines = _run(monkeypatch, [100.0, 1.0, 1.0, 1.0], log_every=0.0)
    assert "ETA -" in lines[0] and " - ex/s" in lines[0]
    last = lines[-1]
    assert re.search(r"\b100 ex/s", last)                    # 100 examples per 1 s step
    assert re.search(r"ETA\s+6s", last)                      # 6 steps left at 1 s, not 34 s each
