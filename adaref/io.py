"""Saving and loading arrays as ``.npz`` and documents as JSON: atomic writes, no
pickle, clear errors.

A file holds named float/int arrays plus one JSON document (``meta``: a model's config,
a training state, ...) stored as the UTF-8 bytes of the key ``__meta__``. Loading uses
``allow_pickle=False``: an object array is refused, never unpickled.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

META_KEY = "__meta__"


class NpzError(ValueError):
    """A file that is not a valid adaref ``.npz`` (corrupt, truncated, pickled, ...)."""


def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray],
             meta: dict[str, Any] | None = None) -> Path:
    """Write ``arrays`` (and ``meta``, if given, as JSON) to ``path`` atomically and
    byte-reproducibly (:func:`write_npz`).

    The file is written under a temporary name in the same folder, flushed to disk and
    renamed over ``path``, so a reader never sees a half-written file and an
    interrupted save leaves the previous file intact.
    """
    path = Path(path)
    if META_KEY in arrays:
        raise ValueError(f"save_npz: {META_KEY!r} is reserved for the metadata")
    for key, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise NpzError(f"save_npz: array {key!r} has dtype object; only numeric arrays are saved")
    payload = dict(arrays)
    if meta is not None:          # without meta, a plain .npz (np.load shows only the arrays)
        payload[META_KEY] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write_npz(fh, payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())         # as an ordinary file (mkstemp makes it 0600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_npz(fh, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` to an open binary file, but byte-reproducible: every member gets the
    same fixed timestamp (np.savez stamps the current time), so the same arrays give the
    same bytes. Members are stored uncompressed, in the dict's order; no pickle."""
    with zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o600 << 16
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def load_npz(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by :func:`save_npz`: ``(arrays, meta)``.

    Raises :class:`NpzError` naming the file (and the array) when the file is missing,
    not a zip archive, truncated, holds an object (pickled) array, or has bad metadata.
    """
    path = Path(path)
    if path.is_dir():
        raise NpzError(f"{path}: is a directory, not a .npz file")
    if not path.is_file():
        raise NpzError(f"{path}: no such file")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):     # a member first, or an empty archive
        raise NpzError(f"{path}: not a .npz file (no zip header; {path.stat().st_size} bytes)")
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            for key in archive.files:
                try:
                    arrays[key] = archive[key]
                except ValueError as e:
                    if "allow_pickle" in str(e):
                        raise NpzError(f"{path}: array {key!r} is an object array; refusing to "
                                       f"unpickle it (allow_pickle=False)") from None
                    raise NpzError(f"{path}: array {key!r} cannot be read: {e}") from None
    except NpzError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
        raise NpzError(f"{path}: not a valid .npz file (corrupt or truncated?): {e}") from None
    meta_bytes = arrays.pop(META_KEY, None)
    try:
        meta = {} if meta_bytes is None else json.loads(meta_bytes.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NpzError(f"{path}: metadata is not valid JSON: {e}") from None
    return arrays, meta


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically (a temporary file in the
    same folder, renamed over ``path``): a reader sees the old or the new document."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
