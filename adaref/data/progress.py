"""A one-line progress display with rows/s, for the long passes over big files.

Writes to ``stream`` (stderr by default) at most every ``every`` seconds: in place
with ``\\r`` on a terminal, one line per update otherwise. Disabled, it does nothing.

>>> import io
>>> s = io.StringIO()
>>> p = Progress("pass 1/2 count", total=100, stream=s, enabled=True, every=0.0)
>>> p.update(rows=50, done=50); p.close()
>>> "50 rows" in s.getvalue() and "50%" in s.getvalue()
True
"""
from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    """Progress of one pass: ``update(rows, done)`` with ``done`` out of ``total``
    units (lines or bytes), ``close()`` prints the final rate."""

    def __init__(self, label: str, total: int, stream=None, enabled: bool = True, every: float = 1.0,
                 unit: str = "rows"):
        self.label = label
        self.unit = unit
        self.total = max(int(total), 1)
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.every = every
        self.start = time.perf_counter()
        self._last = -1e9
        self.rows = 0
        self.done = 0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._shown = None

    def _line(self) -> str:
        dt = max(time.perf_counter() - self.start, 1e-9)
        pct = f"{100.0 * self.done / self.total:.0f}%"
        if self.unit == "bytes":
            return f"{self.label}: {self.done / 1e6:,.0f} MB, {self.done / 1e6 / dt:,.0f} MB/s, {pct}, {dt:.1f} s"
        return f"{self.label}: {self.rows:,} rows, {self.rows / dt:,.0f} rows/s, {pct}, {dt:.1f} s"

    def update(self, rows: int, done: int) -> None:
        self.rows, self.done = rows, done
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last >= self.every:
            self._last = now
            self._shown = (self.rows, self.done)
            self.stream.write(("\r" + self._line()) if self._tty else self._line() + "\n")
            self.stream.flush()

    def rate(self) -> float:
        """Rows per second so far."""
        return self.rows / max(time.perf_counter() - self.start, 1e-9)

    def close(self) -> None:
        if self.enabled and (self._tty or self._shown != (self.rows, self.done)):
            self.stream.write(("\r" + self._line() + "\n") if self._tty else self._line() + "\n")
            self.stream.flush()
