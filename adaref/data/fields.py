"""Splitting a buffer of complete lines into per-column byte matrices, vectorised.

Input: ``buf``, a bytes object of whole lines, each ending in ``\\n`` (CRLF already
turned into LF by the reader). Output: a :class:`FieldSplit` with the byte offset of
every field, ``starts``/``ends`` of shape ``(B, C)`` for the ``B`` lines that have
exactly ``C`` fields, and the indices of the lines that do not. A column is then cut
out as a zero-padded ``(B, W)`` matrix by :meth:`FieldSplit.column`. No Python loop
runs per line, which is what makes the 45M-row Criteo file practical.

Used for the unquoted formats (Criteo, Avazu); quoted CSV (iPinYou) goes through
:func:`split_quoted`.

>>> s = split_delimited(b"1\\t2\\n\\n3\\t\\n", b"\\t", 2)
>>> s.good.tolist(), s.field_counts.tolist()
([0, 2], [2, 1, 2])
>>> chars, lengths = s.column(1)
>>> lengths.tolist()
[1, 0]
"""
from __future__ import annotations

import csv
from dataclasses import dataclass

import numpy as np

from .codecs import matrix_from_values

__all__ = ["FieldSplit", "split_delimited", "split_quoted", "line_starts"]

_PAD = 128  # zero bytes after the buffer, more than any column width read (cap + 1)


@dataclass
class FieldSplit:
    """Field offsets of one buffer: lines ``good`` (indices into the buffer's lines)
    have ``C`` fields at ``starts[i, j]:ends[i, j]``; ``field_counts`` is per line."""

    arr: np.ndarray          # (nbytes,) uint8 view of the buffer
    starts: np.ndarray       # (B, C) int64
    ends: np.ndarray         # (B, C) int64
    good: np.ndarray         # (B,) line indices with exactly C fields
    field_counts: np.ndarray  # (n_lines,) fields per line

    def column(self, j: int, cap: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Column ``j`` as ``(chars (B, W) uint8, lengths (B,))``, ``W <= cap + 1``.

        Values longer than ``cap`` are cut to ``cap + 1`` bytes, which is enough for
        every fixed form to reject them; their ``lengths`` stay true.
        """
        s = self.starts[:, j]
        lengths = self.ends[:, j] - s
        width = int(min(lengths.max(initial=0), cap + 1))
        if width == 0:
            return np.zeros((len(s), 0), dtype=np.uint8), lengths
        offs = np.arange(width)
        windows = np.lib.stride_tricks.sliding_window_view(self.arr, width)  # (nbytes, W), no copy
        chars = windows[s]                                 # arr is zero-padded: no window runs past it
        chars *= offs < lengths[:, None]                   # zero the bytes past each value
        return chars, lengths


def line_starts(buf: bytes) -> np.ndarray:
    """Byte offset of each line of ``buf`` (whole ``\\n``-terminated lines).

    >>> line_starts(b"ab\\nc\\n").tolist()
    [0, 3]
    """
    arr = np.frombuffer(buf, dtype=np.uint8)
    nl = np.flatnonzero(arr == 10)
    return np.concatenate(([0], nl[:-1] + 1)).astype(np.int64)


def split_delimited(buf: bytes, delimiter: bytes, ncols: int) -> FieldSplit:
    """Offsets of the fields of every line of ``buf`` (see the module docstring)."""
    if len(buf) >= (1 << 31) - _PAD:
        raise ValueError("split_delimited: buffer too large (2 GiB); use a smaller chunk_bytes")
    arr = np.frombuffer(buf + bytes(_PAD), dtype=np.uint8)    # zero padding for FieldSplit.column
    is_nl = arr == 10
    pos = np.flatnonzero(is_nl | (arr == delimiter[0]))       # every field end
    nl_at = is_nl[pos]
    line_of = np.cumsum(nl_at) - nl_at                          # line of each field end
    n_lines = int(nl_at.sum())
    counts = np.bincount(line_of, minlength=n_lines)
    good_line = counts == ncols
    keep = good_line[line_of]
    starts_all = np.empty_like(pos)
    starts_all[:1] = 0
    starts_all[1:] = pos[:-1] + 1
    starts = starts_all[keep].reshape(-1, ncols)
    ends = pos[keep].reshape(-1, ncols)
    return FieldSplit(arr, starts, ends, np.flatnonzero(good_line), counts)


def split_quoted(lines: list[bytes], delimiter: str, ncols: int, max_field: int | None = None,
                 too_long: dict | None = None):
    """Quoted-CSV lines to per-column matrices (slow path, for the iPinYou form).

    Returns ``(columns, good, field_counts)``: ``columns[j]`` is ``(chars, lengths)``
    over the ``good`` lines (those with ``ncols`` fields), as in :class:`FieldSplit`;
    a line whose quoting is malformed has field count -1. With ``max_field``, a line
    with a longer field is left out of ``good`` (so no matrix is as wide as it) and
    recorded in ``too_long`` as ``line index -> (column, length)``.
    Lines must already be valid UTF-8 without NUL bytes.

    >>> cols, good, counts = split_quoted([b'a,"x,y"\\n', b'b\\n'], ",", 2)
    >>> good.tolist(), counts.tolist(), cols[1][1].tolist()
    ([0], [2, 1], [3])
    """
    rows = []
    counts = np.zeros(len(lines), dtype=np.int64)
    good = []
    for i, line in enumerate(lines):
        try:
            fields = next(csv.reader([line.decode("utf-8").rstrip("\n")], delimiter=delimiter, strict=True), [])
        except csv.Error:
            counts[i] = -1  # malformed quoting
            continue
        counts[i] = len(fields)
        if len(fields) == ncols:
            if max_field is not None:
                sizes = [len(f) for f in fields]
                if 4 * max(sizes) > max_field:     # a character is 1-4 bytes: count bytes
                    long = [(j, len(f.encode("utf-8"))) for j, f in enumerate(fields)]
                    j, n = max(long, key=lambda x: x[1])
                    if n > max_field:
                        if too_long is not None:
                            too_long[i] = (j, n)
                        continue
            good.append(i)
            rows.append(fields)
    columns = []
    for j in range(ncols):
        columns.append(matrix_from_values([r[j].encode("utf-8") for r in rows]))
    return columns, np.asarray(good, dtype=np.int64), counts
