"""The on-disk encoded data set: layout, source fingerprints, cache key, atomic writes.

An encoded data set is a directory::

    ids.npy        (B, F) int32   per-field local ids (id 0 = OOV row)
    labels.npy     (B,)   float32 click labels 0/1
    split.npy      (B,)   int8    0 train, 1 validation, 2 test
    vocab.json     one vocabulary per field (kept raw values, bin edges, special ids)
    manifest.json  sources (path, size, sha256), options, fields, vocab sizes,
                   row counts, skipped lines, positive rates, cache key

Arrays are plain ``.npy`` (read with ``allow_pickle=False``, memory-mappable).

The cache key is the sha256 of the format version, the data set name, every source
file's sha256 and the full options; ``prepare`` reuses a directory whose manifest has
the same key and rebuilds it otherwise. A build is written to a temporary sibling
directory and renamed into place at the end, so an interrupted or failed build leaves
nothing partial under the final name.

>>> cache_key("criteo", ["ab"], {"x": 1}) == cache_key("criteo", ["ab"], {"x": 1})
True
>>> cache_key("criteo", ["ab"], {"x": 1}) == cache_key("criteo", ["ab"], {"x": 2})
False
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import zlib

import numpy as np

from adaref.locks import owner_record, owner_state

__all__ = ["FORMAT_VERSION", "ARRAYS", "fingerprint", "cache_key", "read_manifest", "is_complete",
           "write_json", "check_replaceable", "BuildDir", "NpyWriter"]

#: Bumped whenever the encoding of the same input and options changes.
FORMAT_VERSION = 1
ARRAYS = ("ids.npy", "labels.npy", "split.npy", "vocab.json", "manifest.json")


def fingerprint(path: str, has_header: bool, block: int = 8 << 20, on_progress=None) -> dict:
    """Size, sha256 (of the file as stored) and number of data lines (decompressed).

    A last line without a newline counts; the header line does not.

    >>> import os, tempfile
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "f.csv")
    >>> _ = open(p, "wb").write(b"h\\r\\na\\r\\nb")
    >>> fp = fingerprint(p, has_header=True)
    >>> fp["size"], fp["data_lines"], fp["sha256"][:12]
    (7, 2, '0e590af5e38b')
    >>> import shutil; shutil.rmtree(d)
    """
    h = hashlib.sha256()
    size = 0
    newlines = 0
    last = b""
    decomp = None
    with open(path, "rb") as f:
        while True:
            raw = f.read(block)
            if not raw:
                break
            if size == 0 and raw[:2] == b"\x1f\x8b":
                decomp = zlib.decompressobj(wbits=31)
            h.update(raw)
            size += len(raw)
            data = raw
            if decomp is not None:
                data = b""
                try:
                    while raw:
                        data += decomp.decompress(raw)
                        raw = decomp.unused_data if decomp.eof else b""
                        if decomp.eof:
                            decomp = zlib.decompressobj(wbits=31)
                except zlib.error as e:
                    from .readers import DataFormatError

                    raise DataFormatError(f"{path}: corrupt gzip data near byte {size:,} of the file "
                                          f"({e}); the file is damaged, not only truncated") from None
            if data:
                newlines += data.count(b"\n")
                last = data[-1:]
            if on_progress is not None:
                on_progress(size)
    lines = newlines + (1 if last not in (b"", b"\n") else 0)
    return {"path": os.path.abspath(path), "size": size, "sha256": h.hexdigest(),
            "data_lines": max(0, lines - (1 if has_header else 0))}


def cache_key(dataset: str, sha256s: list[str], options: dict) -> str:
    """sha256 of (format version, dataset, source hashes, options)."""
    blob = json.dumps({"format": FORMAT_VERSION, "dataset": dataset, "sources": list(sha256s),
                       "options": options}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def read_manifest(directory: str) -> dict | None:
    """The manifest of ``directory``, or ``None`` when there is none (or it is unreadable)."""
    try:
        with open(os.path.join(directory, "manifest.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def is_complete(directory: str) -> bool:
    """Whether every file of the layout exists in ``directory``."""
    return all(os.path.isfile(os.path.join(directory, name)) for name in ARRAYS)


def write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=False)
        f.write("\n")


def _replaceable(path: str) -> bool:
    """Whether ``path`` may be replaced by a build: an empty directory, or one holding
    only files of the layout (plus ``probs.npy``/``terms.npy`` of synthetic data)."""
    if not os.path.isdir(path):
        return False
    names = set(os.listdir(path))
    if not names:
        return True
    return "manifest.json" in names and names <= set(ARRAYS) | {"probs.npy", "terms.npy"}


def check_replaceable(path: str) -> None:
    """Raise ``FileExistsError`` when ``path`` exists and a build must not replace it."""
    if os.path.exists(path) and not _replaceable(path):
        raise FileExistsError(
            f"{os.path.abspath(path)} exists and is not an adaref data directory (no manifest.json, or other "
            f"files in it); refusing to replace it -- choose another output directory")


#: The file naming the process that builds a temporary build directory.
OWNER_FILE = ".owner.json"
#: A build directory that names no owner is removed once it is this old.
ORPHAN_AGE_SECONDS = 3600


def remove_orphaned_builds(final: str) -> list[str]:
    """Remove the temporary build directories of ``final`` (``.NAME.tmp-*``, and the
    ``.old`` copies of a replaced build) left by a ``prepare`` that was killed: those
    whose owner process is no longer running on this host. A build in progress in
    another live process is left alone. Returns the paths removed."""
    parent, name = os.path.dirname(final), os.path.basename(final)
    removed = []
    try:
        entries = os.listdir(parent)
    except OSError:
        return removed
    for entry in entries:
        if not entry.startswith(f".{name}.tmp-"):
            continue
        path = os.path.join(parent, entry)
        owner_dir = path[:-len(".old")] if entry.endswith(".old") else path
        try:
            with open(os.path.join(owner_dir, OWNER_FILE), encoding="utf-8") as fh:
                owner = json.load(fh)
        except (OSError, ValueError):
            owner = None
        if entry.endswith(".old") and not os.path.exists(owner_dir):
            state = "dead"                  # the build it made way for is gone
        elif owner is None:                 # killed while committing, or a build of an older adaref
            try:
                state = "dead" if time.time() - os.path.getmtime(path) > ORPHAN_AGE_SECONDS else "unknown"
            except OSError:
                state = "unknown"
        else:
            state = owner_state(owner)
        if state == "dead":
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


class BuildDir:
    """A temporary sibling of ``final``; :meth:`commit` renames it into place.

    Used as a context manager: on an exception the temporary directory is removed
    and ``final`` is left as it was. An existing ``final`` is only ever replaced when
    it is empty or an encoded data set (never a user's other directory).
    """

    def __init__(self, final: str):
        self.final = os.path.abspath(final)
        check_replaceable(self.final)
        parent = os.path.dirname(self.final)
        os.makedirs(parent, exist_ok=True)
        self.removed = remove_orphaned_builds(self.final)
        self.path = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(self.final)}.tmp-")
        with open(os.path.join(self.path, OWNER_FILE), "w", encoding="utf-8") as fh:
            json.dump(owner_record(), fh)

    def commit(self) -> None:
        """Rename the build into place, moving an existing ``final`` aside first.

        Two processes building the same directory at once (same input and options,
        so the same content) may race: whichever rename loses retries, and the last
        complete build stays.
        """
        parent, name = os.path.dirname(self.final), os.path.basename(self.final)
        os.unlink(os.path.join(self.path, OWNER_FILE))
        for attempt in range(5):
            old = None
            if os.path.exists(self.final):
                old = f"{self.path}.old"
                try:
                    os.rename(self.final, old)
                except FileNotFoundError:
                    old = None  # another process moved it away first
            try:
                os.rename(self.path, self.final)
            except OSError:
                if attempt == 4:
                    raise
                continue  # another build landed between our two renames
            finally:
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
            return

    def __enter__(self) -> "BuildDir":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and os.path.exists(self.path):
            shutil.rmtree(self.path, ignore_errors=True)


class NpyWriter:
    """Write a ``.npy`` file of known shape row block by row block, with plain writes.

    The output never sits in this process's memory (unlike a writable memmap, whose
    dirty pages count in its resident set), so peak memory does not grow with the
    number of rows. :meth:`close` checks that exactly ``shape[0]`` rows were written.

    >>> import os, tempfile
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "a.npy")
    >>> w = NpyWriter(p, np.int32, (3, 2))
    >>> w.write(np.ones((2, 2), np.int32)); w.write(np.zeros((1, 2), np.int32)); w.close()
    >>> np.load(p, allow_pickle=False).tolist()
    [[1, 1], [1, 1], [0, 0]]
    >>> import shutil; shutil.rmtree(d)
    """

    def __init__(self, path: str, dtype, shape: tuple[int, ...]):
        self.dtype = np.dtype(dtype)
        self.shape = tuple(shape)
        self.rows = 0
        self._f = open(path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        np.lib.format.write_array_header_2_0(self._f, header)

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.shape[1:] or self.rows + len(block) > self.shape[0]:
            raise ValueError(f"NpyWriter: block {block.shape} does not fit {self.shape} after {self.rows} rows")
        self._f.write(block.tobytes())
        self.rows += len(block)

    def close(self) -> None:
        self._f.close()
        if self.rows != self.shape[0]:
            raise ValueError(f"NpyWriter: wrote {self.rows} rows, expected {self.shape[0]}")
