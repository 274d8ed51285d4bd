"""A run directory's life cycle: claimed by one process, cleaned of a crash's leftovers.

:func:`claim` is what ``python -m adaref.train`` does first, before any slow work:

1. it claims the directory with a lock file naming this process
   (:class:`adaref.locks.DirectoryLock`); a second run on the same directory stops with
   :class:`RunDirectoryBusy` naming the holder, and the lock of a run that died (killed,
   out of memory, power cut) is taken over with a message;
2. it removes what an interrupted write can leave behind: the temporary files of the
   atomic writes (``.last.npz.*.tmp``, ``.best.npz.*.tmp``, ``.history.csv.tmp``,
   ``.*.json.tmp``, ``data/.vocab.json.tmp``);
3. it tells apart a run that never reached its first checkpoint (``config.json``
   written, no ``last.npz`` or ``metrics.json``): such a run has nothing to
   resume, so it is started again from step 0 (:attr:`RunDirectory.unstarted`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from adaref.locks import DirectoryLock, LockHeld

__all__ = ["RunDirectory", "RunDirectoryBusy", "claim", "TEMP_PATTERNS"]

#: Temporary names of the run directory's atomic writes (adaref.io.save_npz, write_json,
#: Trainer._write_history, Trainer._write_data_description): never a result.
TEMP_PATTERNS = (".last.npz.*.tmp", ".best.npz.*.tmp", ".best.pending.npz.*.tmp", ".history.csv.tmp",
                 ".*.json.tmp", "data/.*.tmp")
#: What a run writes before its first checkpoint; removed when it is started again.
EARLY_FILES = ("best.npz", "best.pending.npz", "history.csv")


class RunDirectoryBusy(LockHeld):
    """Another live process trains into this run directory (the message names it)."""


@dataclass
class RunDirectory:
    """A claimed run directory: ``lock`` (release with :meth:`release`), whether the
    directory was ``created`` by this claim, the temporary files ``removed``, the dead
    owner whose lock was taken over (``took_over``), and ``unstarted``: a run is there
    that stopped before its first checkpoint."""

    path: Path
    lock: DirectoryLock
    created: bool
    removed: list[str] = field(default_factory=list)
    took_over: str | None = None
    unstarted: bool = False

    def notes(self) -> list[str]:
        """One line per thing worth telling the user about this claim."""
        out = []
        if self.took_over:
            out.append(f"{self.path}: took over the lock of {self.took_over}, which is no longer running")
        if self.removed:
            out.append(f"{self.path}: removed {len(self.removed)} temporary file(s) left by an interrupted "
                       f"run: {', '.join(self.removed)}")
        return out

    def release(self) -> None:
        """Release the lock; remove the directory again if this claim created it and
        nothing was written into it."""
        self.lock.release()
        if self.created and self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()                  # created for nothing: a run that wrote files keeps them


def _remove_temporaries(path: Path) -> list[str]:
    removed = []
    for pattern in TEMP_PATTERNS:
        for tmp in sorted(path.glob(pattern)):
            if tmp.is_file():
                tmp.unlink()
                removed.append(str(tmp.relative_to(path)))
    return removed


def is_unstarted(path: Path) -> bool:
    """Whether ``path`` holds a run that stopped before its first checkpoint: a
    ``config.json`` that is a run configuration, but neither ``last.npz`` nor
    ``metrics.json`` (nothing to resume, no result)."""
    from adaref.config import ConfigError
    from adaref.training.config import RunConfig

    if (path / "last.npz").exists() or (path / "metrics.json").exists():
        return False
    try:
        RunConfig.from_dict(json.loads((path / "config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, ConfigError, RecursionError):
        return False
    return True


def claim(path: str | os.PathLike) -> RunDirectory:
    """Claim the run directory ``path`` (created if missing) for this process; see the
    module docstring. Raises :class:`RunDirectoryBusy` when another live run holds it."""
    path = Path(path)
    created = not path.exists()
    lock = DirectoryLock(path)
    try:
        lock.acquire()
    except LockHeld as e:
        raise RunDirectoryBusy(str(e)) from None
    try:
        claimed = RunDirectory(path, lock, created, took_over=lock.took_over)
        claimed.removed = _remove_temporaries(path)
        if (path / "config.json").exists() and is_unstarted(path):
            claimed.unstarted = True
    except BaseException:
        lock.release()
        raise
    return claimed


def reset_unstarted(claimed: RunDirectory) -> list[str]:
    """Remove what a run that stopped before its first checkpoint wrote besides its
    configuration (``best.npz``, ``history.csv``), so that nothing of it is mistaken for
    a result of the run started again. Returns the names removed."""
    removed = []
    for name in EARLY_FILES:
        target = claimed.path / name
        if target.is_file():
            target.unlink()
            removed.append(name)
    return removed
