"""Training progress on a terminal: one line updated in place (plain lines when the
stream is not a terminal; nothing when disabled)."""
from __future__ import annotations

import sys
import time


class TrainingProgress:
    """``update(step, epoch, examples, loss, val_auc)`` prints step, epoch, examples/s,
    loss, the last validation AUC and the ETA (from ``total_steps``)."""

    def __init__(self, total_steps: int, *, enabled: bool = True, stream=None, every: float = 0.5):
        self.total, self.enabled, self.every = max(total_steps, 1), enabled, every
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self.first_step = None
        self.last = -1e9
        self.examples = 0

    def update(self, step: int, epoch: float, examples: int, loss: float,
               val_auc: float | None, force: bool = False) -> None:
        if not self.enabled:
            return
        if self.first_step is None:
            self.first_step = step - 1
        self.examples += examples
        now = time.perf_counter()
        if not force and now - self.last < self.every:
            return
        if not self.tty and not force:
            return                       # plain output: one line per evaluation only
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = self.examples / elapsed
        done = step - self.first_step
        eta = elapsed / max(done, 1) * max(self.total - step, 0)
        auc = f"{val_auc:.4f}" if val_auc is not None else "  -   "
        line = (f"step {step:>6}/{self.total}  epoch {epoch:5.2f}  {rate:8,.0f} ex/s  "
                f"loss {loss:.4f}  val AUC {auc}  ETA {eta:5.0f}s")
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
