"""Claiming a directory for one process: lock files that name their owner.

A lock is a small JSON file (``{"pid", "host", "started", "argv"}``) created with
``O_CREAT | O_EXCL``, so of two processes claiming the same directory at the same
moment exactly one succeeds. A lock whose process has died (same host, no such pid,
or a pid that started after the lock was written) is *stale*: it is taken over, and
:attr:`DirectoryLock.took_over` describes the dead owner so that the caller can say so.
A lock held by a live process, or written on another host (its process cannot be
checked from here), is refused with :class:`LockHeld` naming the holder.

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> a = DirectoryLock(d).acquire()
>>> try:
...     DirectoryLock(d).acquire()
... except LockHeld as e:
...     print(str(e).split(":")[1].strip().startswith("in use by process"))
True
>>> a.release()
>>> DirectoryLock(d).acquire().release()
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["LockHeld", "DirectoryLock", "owner_record", "owner_state", "describe_owner"]

LOCK_NAME = ".adaref.lock"
#: An empty or unreadable lock (its writer died between creating and filling it) is
#: taken over only once it is this old, so that a lock being written is never stolen.
UNREADABLE_GRACE_SECONDS = 10.0


class LockHeld(RuntimeError):
    """The directory is claimed by another live process (the message names it)."""


def owner_record() -> dict[str, Any]:
    """Who this process is: pid, host, start time (Unix seconds) and command line."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": round(time.time(), 3),
            "argv": " ".join(sys.argv)[:300]}


def _process_start(pid: int) -> float | None:
    """Start time (Unix seconds) of ``pid`` from /proc, or ``None`` where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as fh:
            boot = next(int(line.split()[1]) for line in fh if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def owner_state(record: Any) -> str:
    """``"alive"``, ``"dead"`` or ``"unknown"`` (another host, or no usable record)."""
    if not isinstance(record, dict) or not isinstance(record.get("pid"), int) or record["pid"] <= 0:
        return "unknown"
    if record.get("host") != socket.gethostname():
        return "unknown"
    pid = record["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "dead"
    except PermissionError:          # exists, owned by another user
        return "alive"
    started, began = record.get("started"), _process_start(pid)
    if isinstance(started, (int, float)) and began is not None and began > started + 2:
        return "dead"                # the pid was reused by a process started after the lock
    return "alive"


def describe_owner(record: Any) -> str:
    """``process 123 on host h, started 2024-05-01 12:00:00 (python -m adaref.train ...)``."""
    if not isinstance(record, dict):
        return "an unknown process (unreadable lock)"
    started = record.get("started")
    when = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
            if isinstance(started, (int, float)) else "at an unknown time")
    argv = f" ({record['argv']})" if record.get("argv") else ""
    return f"process {record.get('pid')} on host {record.get('host')}, started {when}{argv}"


class DirectoryLock:
    """The lock file ``directory/.adaref.lock`` (see the module docstring).

    :meth:`acquire` creates ``directory`` if needed and claims it, or raises
    :class:`LockHeld`; :meth:`release` removes the lock if it is still this one's.
    Usable as a context manager.
    """

    def __init__(self, directory: str | os.PathLike, name: str = LOCK_NAME):
        self.directory = Path(directory)
        self.path = self.directory / name
        self.record: dict | None = None
        self.took_over: str | None = None

    def _read(self) -> Any:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise
        except (OSError, ValueError):
            return None

    def acquire(self) -> "DirectoryLock":
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            record = owner_record()
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    holder = self._read()
                except FileNotFoundError:
                    continue                 # released meanwhile: try again
                state = owner_state(holder)
                if holder is None:
                    try:
                        age = time.time() - self.path.stat().st_mtime
                    except FileNotFoundError:
                        continue
                    if age < UNREADABLE_GRACE_SECONDS:
                        raise LockHeld(f"{self.directory}: in use (its lock {self.path} is being written "
                                       f"by another process)") from None
                    state = "dead"
                if state != "dead":
                    where = ("" if state == "alive" else
                             "; it cannot be checked from this host: if that process is gone, delete "
                             f"{self.path}")
                    raise LockHeld(f"{self.directory}: in use by {describe_owner(holder)}{where}") from None
                self.took_over = describe_owner(holder)
                with contextlib.suppress(FileNotFoundError):   # another claimant removed it first
                    os.unlink(self.path)     # stale: its process is gone
                continue
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(record, fh)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)     # a half-written lock would block the directory
                raise
            self.record = record
            return self
        raise LockHeld(f"{self.directory}: could not claim {self.path} (other processes keep claiming it)")

    def release(self) -> None:
        """Remove the lock file if it still holds this process's record."""
        if self.record is None:
            return
        try:
            with contextlib.suppress(FileNotFoundError):     # removed by hand: nothing to release
                if self._read() == self.record:
                    os.unlink(self.path)
        finally:
            self.record = None

    def __enter__(self) -> "DirectoryLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
