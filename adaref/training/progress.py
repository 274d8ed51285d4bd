"""Training progress: one line updated in place on a terminal; on a log file (any stream
that is not a terminal) a plain line every ``log_every`` seconds and at each evaluation;
nothing when disabled.

Speed and ETA are measured from the end of the first step on, so the first step's
one-off costs (Numba compilation, optimiser state, caches) do not distort them; until a
second step has finished they are shown as ``-``.
"""
from __future__ import annotations

import sys
import time


class TrainingProgress:
    """``update(step, epoch, examples, loss, val_auc)`` reports step, epoch, examples/s,
    loss, the last validation AUC and the ETA (from ``total_steps``).

    >>> import io
    >>> log = io.StringIO()
    >>> p = TrainingProgress(10, stream=log, log_every=0.0)
    >>> p.update(1, 0.1, 256, 0.69, None)                # the first step: no speed yet
    >>> log.getvalue().split()[:2], "ex/s" in log.getvalue(), log.getvalue().count("ETA -")
    (['step', '1/10'], True, 1)
    """

    def __init__(self, total_steps: int, *, enabled: bool = True, stream=None, every: float = 0.5,
                 log_every: float = 30.0):
        self.total, self.enabled, self.every, self.log_every = max(total_steps, 1), enabled, every, log_every
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = None               # end of the first step seen: speed is measured from here
        self.step0 = 0
        self.last = -1e9
        self.examples = 0            # examples since t0

    def update(self, step: int, epoch: float, examples: int, loss: float,
               val_auc: float | None, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.t0 is None:
            self.t0, self.step0 = now, step
        else:
            self.examples += examples
        interval = self.every if self.tty else self.log_every
        if not force and now - self.last < interval:
            return
        self.last = now
        elapsed, done = now - self.t0, step - self.step0
        if done > 0 and elapsed > 0:
            rate = f"{self.examples / elapsed:8,.0f}"
            eta = f"{elapsed / done * max(self.total - step, 0):5.0f}s"
        else:
            rate, eta = f"{'-':>8}", "-"
        auc = f"{val_auc:.4f}" if val_auc is not None else "  -   "
        line = (f"step {step:>6}/{self.total}  epoch {epoch:5.2f}  {rate} ex/s  "
                f"loss {loss:.4f}  val AUC {auc}  ETA {eta}")
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
