"""Saving and loading arrays as ``.npz`` and documents as JSON: atomic writes, no
pickle, clear errors.

A file holds named float/int arrays plus one JSON document (``meta``: a model's config,
a training state, ...) stored as the UTF-8 bytes of the key ``__meta__``. Loading uses
``allow_pickle=False``: an object array is refused, never unpickled.
"""
from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

META_KEY = "__meta__"


class NpzError(ValueError):
    """A file that is not a valid adaref ``.npz`` (corrupt, truncated, pickled, ...)."""


def not_a_regular_file(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be read as an ordinary file (``"no such file"``, ``"is a
    directory"``, ``"is a named pipe (FIFO)"``, ...), or ``None`` when it is a regular
    file. adaref reads its inputs more than once (checksums, passes, checks), which a
    pipe, a device or standard input cannot give.

    >>> not_a_regular_file("/dev/null")
    'is a character device, not a regular file'
    >>> not_a_regular_file("-")
    "is '-': standard input is not supported (the file is read more than once); save it to a file"
    """
    if os.fspath(path) == "-":
        return ("is '-': standard input is not supported (the file is read more than once); "
                "save it to a file")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "no such file"
    except NotADirectoryError:
        return "no such file (a part of the path is not a directory)"
    except PermissionError:
        return "permission denied"
    except OSError as e:
        return f"cannot be examined ({e.strerror or e})"
    if stat.S_ISREG(mode):
        return None
    kinds = [(stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket")]
    kind = next((name for test, name in kinds if test(mode)), "not an ordinary file")
    return f"is {kind}, not a regular file"


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


#: Largest ``.npy`` header accepted (numpy writes a few hundred bytes; it refuses
#: more than 10,000 by default). A larger one is refused before it is parsed.
MAX_HEADER_BYTES = 10_000
#: Largest metadata document (``__meta__``) accepted.
MAX_META_BYTES = 64 << 20


def available_memory() -> int | None:
    """Bytes of memory available to this process (MemAvailable), or ``None``."""
    with contextlib.suppress(OSError, ValueError, IndexError):   # no /proc (not Linux): sysconf below
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n:,} bytes"


def _member_bytes(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> int:
    """The data bytes that member ``info`` declares in its ``.npy`` header, checked
    against the zip directory's size of the member, without reading the data."""
    name = info.filename
    if not name.endswith(".npy"):
        raise NpzError(f"{path}: member {name!r} is not an array (.npy); not an adaref .npz file")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise NpzError(f"{path}: member {name!r} uses an unsupported compression ({info.compress_type})")
    with zf.open(info) as fh:
        head = fh.read(12)
        if len(head) < 10 or head[:6] != b"\x93NUMPY":
            raise NpzError(f"{path}: member {name!r} is not a .npy array (no NUMPY magic)")
        major = head[6]
        if major == 1:
            hlen, prefix = int.from_bytes(head[8:10], "little"), 10
        elif major in (2, 3):
            hlen, prefix = int.from_bytes(head[8:12], "little"), 12
        else:
            raise NpzError(f"{path}: member {name!r} has an unknown .npy format version {major}")
        if hlen > MAX_HEADER_BYTES:
            raise NpzError(f"{path}: member {name!r} has a header of {hlen:,} bytes (limit "
                           f"{MAX_HEADER_BYTES:,}); refusing to parse it")
        text = (head[prefix:] + fh.read(hlen - (len(head) - prefix)))[:hlen]
    try:
        header = __import__("ast").literal_eval(text.decode("utf-8" if major == 3 else "latin1"))
        dtype = np.lib.format.descr_to_dtype(header["descr"])
        shape = tuple(header["shape"])
        if not all(isinstance(n, int) and n >= 0 for n in shape):
            raise ValueError(f"shape {shape}")
    except Exception as e:  # noqa: BLE001 -- any malformed header is the same error
        raise NpzError(f"{path}: member {name!r} has a malformed .npy header ({type(e).__name__}: "
                       f"{e})") from None
    if dtype.hasobject:
        raise NpzError(f"{path}: array {name[:-4]!r} is an object array; refusing to unpickle it "
                       f"(allow_pickle=False)")
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if declared != info.file_size - prefix - hlen:
        raise NpzError(f"{path}: member {name!r} declares shape {shape} {dtype} ({_gb(declared)}) but "
                       f"holds {_gb(max(info.file_size - prefix - hlen, 0))}; corrupt or forged")
    return declared


def check_npz_members(path: str | os.PathLike, limits: dict[str, int] | None = None
                      ) -> dict[str, int]:
    """The data bytes of each array of ``path`` (by key), from the zip directory and the
    ``.npy`` headers only: no array is read. Refused with :class:`NpzError` naming the
    member: a member that is not a ``.npy`` array, a header over
    :data:`MAX_HEADER_BYTES`, a header whose shape does not match the member's size, an
    object dtype, metadata over :data:`MAX_META_BYTES`, arrays that together exceed the
    memory available, and, with ``limits`` (key -> largest number of data bytes
    expected), any member not in ``limits`` or larger than its limit.
    """
    path = Path(path)
    sizes: dict[str, int] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if key in sizes:
                    raise NpzError(f"{path}: member {info.filename!r} appears twice")
                sizes[key] = _member_bytes(path, zf, info)
    except NpzError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, KeyError) as e:
        raise NpzError(f"{path}: not a valid .npz file (corrupt or truncated?): {e}") from None
    if sizes.get(META_KEY, 0) > MAX_META_BYTES:
        raise NpzError(f"{path}: its metadata is {_gb(sizes[META_KEY])} (limit {_gb(MAX_META_BYTES)})")
    if limits is not None:
        for key, size in sizes.items():
            if key == META_KEY:
                continue
            if key not in limits:
                raise NpzError(f"{path}: unexpected array {key!r} ({_gb(size)}); it is not part of "
                               f"this checkpoint's layout")
            if size > limits[key]:
                raise NpzError(f"{path}: array {key!r} is {_gb(size)}, more than the {_gb(limits[key])} "
                               f"expected")
    total, available = sum(sizes.values()), available_memory()
    if available is not None and total > available:
        raise NpzError(f"{path}: its arrays hold {_gb(total)}, more than the {_gb(available)} of memory "
                       f"available; refusing to read them")
    return sizes


def load_npz(path: str | os.PathLike, limits: dict[str, int] | None = None, meta_only: bool = False
             ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by :func:`save_npz`: ``(arrays, meta)``.

    Raises :class:`NpzError` naming the file (and the array) when the file is missing,
    not a regular file, not a zip archive, truncated, holds an object (pickled) array,
    has bad metadata, or fails :func:`check_npz_members` (``limits``: key -> largest
    data bytes expected; other keys are refused), which runs before any array is read.
    ``meta_only`` reads the metadata alone (``arrays`` is then empty), e.g. to check
    which model a checkpoint holds before its arrays are read.
    """
    path = Path(path)
    problem = not_a_regular_file(path)
    if problem:
        raise NpzError(f"{path}: {problem}")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):     # a member first, or an empty archive
        raise NpzError(f"{path}: not a .npz file (no zip header; {path.stat().st_size} bytes)")
    check_npz_members(path, None if meta_only else limits)
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            for key in archive.files:
                if meta_only and key != META_KEY:
                    continue
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
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise NpzError(f"{path}: metadata is not valid JSON: {type(e).__name__}: {e}") from None
    if not isinstance(meta, dict):
        raise NpzError(f"{path}: metadata is not a JSON object (got {type(meta).__name__})")
    return arrays, meta


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically (a temporary file in the
    same folder, renamed over ``path``): a reader sees the old or the new document."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
