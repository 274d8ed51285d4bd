"""Streaming readers for the raw Criteo, Avazu and iPinYou files (§4.1.1).

:class:`RawReader` reads one or more files of one :class:`~adaref.data.schema.Schema`
in chunks of about ``ReadOptions.chunk_bytes`` and yields :class:`Records`: labels
``(B,)`` float32 and, per feature column, decoded int64 values and a missing mask
``(B,)``. Memory is bounded by the chunk size, whatever the file size.

* ``.gz`` input is detected by its magic bytes and decompressed on the fly.
* LF and CRLF line endings are both accepted (CRLF becomes LF).
* Bad input is strict by default: the first bad line raises :class:`DataFormatError`
  with ``FILE:LINE: field I5: expected an integer, got 'abc'``. With
  ``on_bad_line="skip"`` bad lines are dropped and counted by reason in
  :class:`BadLines` (with the first few line numbers). Columns are never shifted: a
  line with the wrong number of fields is bad as a whole.

>>> import os, tempfile
>>> from adaref.data.config import ReadOptions
>>> from adaref.data.schema import SCHEMAS
>>> d = tempfile.mkdtemp()
>>> p = os.path.join(d, "t.txt")
>>> _ = open(p, "w").write("1\\t5" + "\\t" * 12 + "\\t68fd1e64" + "\\t" * 25 + "\\r\\n")
>>> recs = list(RawReader([p], SCHEMAS["criteo"], ReadOptions()))
>>> recs[0].labels.tolist(), recs[0].columns["I1"].values.tolist(), recs[0].columns["I2"].missing.tolist()
([1.0], [5], [True])
>>> import shutil; shutil.rmtree(d)
"""
from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from adaref.io import not_a_regular_file

from .codecs import EXPECTED, Decoded, TokenTable, decode, row_bytes
from .config import ReadOptions
from .fields import line_starts, split_delimited, split_quoted
from .schema import Schema

__all__ = ["DataFormatError", "BadLines", "Records", "RawReader", "open_binary"]


class DataFormatError(ValueError):
    """A raw input file is not in the expected format (message ``FILE:LINE: ...``)."""


def open_binary(path: str):
    """Open ``path`` for binary reading, decompressing gzip transparently. A path that
    is not a regular file (a directory, a FIFO, a device, ``-``) is refused by what it is."""
    problem = not_a_regular_file(path)
    if problem:
        raise DataFormatError(f"{path}: {problem}")
    try:
        f = open(path, "rb")
    except OSError as e:
        raise DataFormatError(f"{path}: cannot open: {e.strerror or e}") from None
    magic = f.read(2)
    f.seek(0)
    if magic == b"\x1f\x8b":
        f.close()
        return gzip.open(path, "rb")
    return f


@dataclass
class BadLines:
    """Counts of skipped lines by reason, with the first ``keep`` locations per reason."""

    keep: int = 5
    counts: dict = field(default_factory=dict)
    first: dict = field(default_factory=dict)

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        lst = self.first.setdefault(reason, [])
        if len(lst) < self.keep:
            lst.append(where)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        return {"total": self.total, "by_reason": dict(sorted(self.counts.items())),
                "first_lines": {k: self.first[k] for k in sorted(self.first)}}


@dataclass
class Records:
    """Good rows of one chunk: ``labels`` (B,) float32, ``columns[name]`` decoded
    feature columns (B,), ``data_index`` (B,) the 0-based data-line index across all
    input files (header lines excluded; bad lines keep their index), ``file_index``."""

    labels: np.ndarray
    columns: dict
    data_index: np.ndarray
    file_index: int


#: The UTF-8 byte-order mark (EF BB BF) that some editors and spreadsheet exports put
#: at the start of a file: dropped before the first line is read, as Python's
#: ``utf-8-sig`` codec does.
UTF8_BOM = b"\xef\xbb\xbf"


def _read(f, size: int, path: str) -> bytes:
    """``f.read(size)``, with a truncated or corrupt .gz reported as a data error."""
    try:
        return f.read(size)
    except (OSError, EOFError, zlib.error) as e:
        raise DataFormatError(f"{path}: cannot read (corrupt or truncated file?): {e}") from None


def _show(raw: bytes, limit: int = 40) -> str:
    text = raw.decode("utf-8", errors="backslashreplace")
    return repr(text if len(text) <= limit else text[:limit] + "...")


class RawReader:
    """Iterate :class:`Records` over ``paths`` (read in order, as one data stream).

    ``token_tables`` (column name -> :class:`TokenTable`) carries the interning of
    string columns from one pass to the next; :attr:`bad` collects skipped lines;
    :attr:`lines_per_file` counts data lines read; ``on_progress(bytes_done)`` is
    called once per chunk.
    """

    def __init__(self, paths, schema: Schema, options: ReadOptions, token_tables: dict | None = None,
                 on_progress=None):
        self.paths = [os.fspath(p) for p in paths]
        self.schema = schema
        self.options = options
        self.bad = BadLines(keep=options.report_lines)
        self.lines_per_file: list[int] = []
        self.on_progress = on_progress
        cols = schema.columns
        self._label = schema.label_index()
        self._feature_idx = [i for i, c in enumerate(cols) if c.role in ("numeric", "categorical", "hour")]
        self.token_tables = token_tables if token_tables is not None else {}
        for c in cols:
            if c.form in ("token", "tagset") and c.role != "ignore" and c.name not in self.token_tables:
                self.token_tables[c.name] = TokenTable(c.form, c.missing)

    # -- file level -------------------------------------------------------------
    def __iter__(self) -> Iterator[Records]:
        data_index = 0
        done = 0
        for file_index, path in enumerate(self.paths):
            n_lines = 0
            for buf, first_line in self._buffers(path):
                recs = self._parse(buf, path, first_line, data_index, file_index)
                n = buf.count(b"\n")
                n_lines += n
                data_index += n
                done += len(buf)
                if self.on_progress is not None:
                    self.on_progress(done)
                if recs is not None:
                    yield recs
            self.lines_per_file.append(n_lines)

    def _buffers(self, path: str):
        """Yield ``(buf, line number of its first line)``; ``buf`` is whole LF lines."""
        size = self.options.chunk_bytes
        with open_binary(path) as f:
            first = _read(f, size, path)
            if first.startswith(UTF8_BOM):     # an encoding mark some editors write, not data
                first = first[len(UTF8_BOM):]
            if not first:
                raise DataFormatError(f"{path}: empty file")
            line_no = 1
            carry = first
            if self.schema.header is not None:
                carry = self._check_header(path, f, carry)
                line_no = 2
            while True:
                block = _read(f, size, path)
                buf = carry + block
                if not block:
                    if buf:
                        if not buf.endswith(b"\n"):
                            buf += b"\n"
                        yield self._lf(buf), line_no
                    return
                cut = buf.rfind(b"\n")
                if cut < 0:
                    carry = self._cap_line(buf, f, path, line_no)
                    continue
                out, carry = buf[: cut + 1], buf[cut + 1:]
                yield self._lf(out), line_no
                line_no += out.count(b"\n")

    def _cap_line(self, buf: bytes, f, path: str, line_no: int) -> bytes:
        """``buf``, a line without its end so far, unless it is already longer than
        ``max_line_bytes``: then the error (strict) or the line cut to ``max_line_bytes``
        + 1 bytes with the rest of it read and dropped, so that :meth:`_parse` reports
        it as too long and memory stays bounded (skip)."""
        limit = self.options.max_line_bytes
        if len(buf) <= limit + 1:
            return buf
        if self.options.on_bad_line == "error":
            raise DataFormatError(f"{path}:{line_no}: line longer than read.max_line_bytes = {limit:,} "
                                  f"bytes (no line end in its first {len(buf):,} bytes)")
        head = buf[:limit + 1]
        while True:
            block = _read(f, self.options.chunk_bytes, path)
            if not block:
                return head
            end = block.find(b"\n")
            if end >= 0:
                return head + block[end:]

    @staticmethod
    def _lf(buf: bytes) -> bytes:
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
            if buf.endswith(b"\r"):
                buf = buf[:-1] + b"\n"
        return buf

    def _check_header(self, path: str, f, carry: bytes) -> bytes:
        while b"\n" not in carry:
            if len(carry) > self.options.max_line_bytes:
                raise DataFormatError(f"{path}:1: not {'an' if self.schema.name[0] in 'aeiou' else 'a'} "
                                      f"{self.schema.name} file (no header line end in its first "
                                      f"{len(carry):,} bytes)")
            more = _read(f, self.options.chunk_bytes, path)
            if not more:
                break
            carry += more
        line, _, rest = carry.partition(b"\n")
        got = line.rstrip(b"\r").decode("utf-8", errors="backslashreplace")
        if got != self.schema.header:
            raise DataFormatError(
                f"{path}:1: not {'an' if self.schema.name[0] in 'aeiou' else 'a'} {self.schema.name} "
                f"file (wrong header): expected "
                f"{self.schema.header[:60]!r}..., got {got[:60]!r}")
        return rest

    # -- chunk level -------------------------------------------------------------
    def _parse(self, buf: bytes, path: str, first_line: int, first_index: int, file_index: int):
        """Parse one buffer of whole lines into :class:`Records` (``None`` if no line is good)."""
        schema = self.schema
        ncols = len(schema.columns)
        opts = self.options
        line_bad = _byte_checks(buf)  # line index -> (reason, message)
        _line_length_checks(buf, opts.max_line_bytes, line_bad)
        if schema.quoted:
            lines = [ln + b"\n" for ln in buf.split(b"\n")[:-1]]
            for i in line_bad:
                lines[i] = b"\n"
            too_long: dict = {}
            columns, good, counts = split_quoted(lines, schema.delimiter, ncols, opts.max_field_bytes, too_long)
            for i, (j, n) in too_long.items():
                line_bad.setdefault(i, _field_too_long(schema.columns[j].name, n, opts.max_field_bytes))
            split = None
        else:
            split = split_delimited(buf, schema.delimiter.encode(), ncols)
            good, counts = split.good, split.field_counts
            columns = None
            if len(buf) > opts.max_field_bytes and len(good):
                widths = split.ends - split.starts                              # (B, C)
                for k in np.flatnonzero(widths.max(axis=1) > opts.max_field_bytes).tolist():
                    j = int(widths[k].argmax())
                    line_bad.setdefault(int(good[k]), _field_too_long(schema.columns[j].name,
                                                                      int(widths[k, j]), opts.max_field_bytes))
        _field_count_checks(buf, counts, ncols, "tab" if schema.delimiter == "\t" else "comma", line_bad)

        # decode every column of the structurally good lines
        b = len(good)
        bad_col = np.full(b, -1, dtype=np.int64)  # first bad column per good line
        decoded: dict[int, Decoded] = {}
        for j, col in enumerate(schema.columns):
            if split is not None:
                chars, lengths = split.column(j)
            else:
                chars, lengths = columns[j]
            if col.form in ("token", "tagset") and col.role != "ignore":
                d = self.token_tables[col.name].decode(chars, lengths)
            else:
                d = decode(col.form, chars, lengths)
            newly = d.bad & (bad_col < 0)
            bad_col[newly] = j
            decoded[j] = d
        for k in np.flatnonzero(bad_col >= 0).tolist():
            i = int(good[k])
            if i in line_bad:
                continue
            j = int(bad_col[k])
            col = schema.columns[j]
            if split is not None:
                raw = buf[split.starts[k, j]:split.ends[k, j]]
            else:
                raw = row_bytes(*columns[j], k)
            line_bad[i] = (f"field {col.name}: expected {EXPECTED[col.form]}",
                           f"field {col.name}: expected {EXPECTED[col.form]}, got {_show(raw)}")
            if self.options.on_bad_line == "error":
                break  # one bad line is enough to stop, below

        if line_bad:
            bad_lines = sorted(line_bad)
            if self.options.on_bad_line == "error":
                i = bad_lines[0]
                raise DataFormatError(f"{path}:{first_line + i}: {line_bad[i][1]}")
            for i in bad_lines:
                self.bad.add(line_bad[i][0], f"{path}:{first_line + i}")

        keep = np.ones(b, dtype=bool)
        if line_bad:
            keep = ~np.isin(good, np.fromiter(line_bad, dtype=np.int64, count=len(line_bad)))
        if not keep.any():
            return None
        labels = (decoded[self._label].values[keep].astype(np.float32) if self._label is not None
                  else np.full(int(keep.sum()), np.nan, dtype=np.float32))     # unlabelled: NaN
        cols = {schema.columns[j].name: Decoded(decoded[j].values[keep], decoded[j].missing[keep],
                                                decoded[j].bad[keep])
                for j in self._feature_idx}
        return Records(labels, cols, first_index + good[keep], file_index)


def _byte_checks(buf: bytes) -> dict:
    """Lines of ``buf`` with a NUL byte or bytes that are not UTF-8 (fast when there are none)."""
    line_bad: dict[int, tuple[str, str]] = {}
    if b"\x00" not in buf and buf.isascii():
        return line_bad
    starts = line_starts(buf)
    arr = np.frombuffer(buf, dtype=np.uint8)
    for i in np.unique(np.searchsorted(starts, np.flatnonzero(arr == 0), side="right") - 1).tolist():
        line_bad[i] = ("NUL byte", "NUL byte in the line")
    high_lines = np.unique(np.searchsorted(starts, np.flatnonzero(arr >= 128), side="right") - 1)
    ends = np.append(starts[1:], len(buf))
    for i in high_lines.tolist():
        if i in line_bad:
            continue
        line = buf[starts[i]:ends[i]]
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as e:
            line_bad[i] = ("undecodable bytes", f"undecodable bytes (not UTF-8): {line[e.start:e.start + 8]!r}")
    return line_bad


def _field_too_long(name: str, n: int, limit: int) -> tuple[str, str]:
    return ("field too long", f"field {name}: {n:,} bytes, longer than read.max_field_bytes = {limit:,} "
                              f"(raise the limit if such values are real)")


def _line_length_checks(buf: bytes, limit: int, line_bad: dict) -> None:
    """Add the lines of ``buf`` longer than ``limit`` bytes to ``line_bad``."""
    if len(buf) <= limit + 1:
        return
    starts = line_starts(buf)
    lengths = np.diff(np.append(starts, len(buf))) - 1            # without the line end
    for i in np.flatnonzero(lengths > limit).tolist():
        size = f" ({int(lengths[i]):,} bytes)" if lengths[i] > limit + 1 else ""   # else cut by _cap_line
        line_bad.setdefault(i, ("line too long", f"line longer than read.max_line_bytes = {limit:,}{size}"))


def _field_count_checks(buf: bytes, counts: np.ndarray, ncols: int, sep: str, line_bad: dict) -> None:
    """Add the lines whose field count is not ``ncols`` to ``line_bad`` (first reason wins)."""
    wrong = np.flatnonzero(counts != ncols)
    if not len(wrong):
        return
    starts = line_starts(buf)
    for i in wrong.tolist():
        if i in line_bad:
            continue
        if buf[int(starts[i]):int(starts[i]) + 1] == b"\n":
            line_bad[i] = ("empty line", "empty line")
        elif counts[i] < 0:
            line_bad[i] = ("malformed CSV quoting", "malformed CSV quoting")
        else:
            hint = (" (one short: an unlabelled file, such as a Kaggle test set?)"
                    if counts[i] == ncols - 1 else "")
            line_bad[i] = ("wrong number of fields",
                           f"expected {ncols} {sep}-separated fields, got {int(counts[i])}{hint}")
