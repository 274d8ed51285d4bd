"""Vectorised checking and decoding of raw field values, one *form* at a time.

A column of ``B`` raw values arrives as a zero-padded byte matrix ``chars`` of shape
``(B, W)`` (``uint8``) with the true ``lengths`` ``(B,)`` (see
:mod:`adaref.data.fields`). Each decoder returns a :class:`Decoded`: ``values``
``(B,)`` int64, a ``missing`` mask (empty value or a missing literal) and a ``bad``
mask of values not in the expected form, with the phrase used in error messages.
Nothing here loops over rows in Python, so the full 45M-row Criteo file decodes at
NumPy speed; only the ``token`` forms (iPinYou strings) go through a dict.

>>> chars, lengths = matrix_from_values([b"12", b"", b"-3", b"1a"])
>>> d = decode("int", chars, lengths)
>>> d.values.tolist(), d.missing.tolist(), d.bad.tolist()
([12, 0, -3, 0], [False, True, False, False], [False, False, False, True])
>>> decode("hex8", *matrix_from_values([b"0000000f", b"ABCDEF12"])).bad.tolist()
[False, True]
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Decoded", "EXPECTED", "decode", "matrix_from_values", "TokenTable", "row_bytes"]

#: The phrase after "expected" in ``FILE:LINE: field X: expected ..., got '...'``.
EXPECTED = {
    "label01": "a label 0 or 1",
    "int": "an integer",
    "hex8": "8 lowercase hex digits",
    "yymmddhh": "an hour YYMMDDHH",
    "token": "a non-empty value without control characters",
    "tagset": "a comma-separated list of tags",
    "id": "an identifier (printable ASCII, no spaces)",
}

#: Longest integer accepted (18 digits always fits int64).
MAX_INT_DIGITS = 18

_HEX = np.full(256, 255, dtype=np.uint8)
_HEX[48:58] = np.arange(10)
_HEX[97:103] = np.arange(10, 16)


@dataclass
class Decoded:
    """Decoded column: ``values`` (B,) int64, ``missing`` (B,) bool, ``bad`` (B,) bool."""

    values: np.ndarray
    missing: np.ndarray
    bad: np.ndarray


def matrix_from_values(values: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Byte strings to ``(chars (B, W) uint8, lengths (B,) int64)``.

    >>> c, n = matrix_from_values([b"ab", b""])
    >>> c.tolist(), n.tolist()
    ([[97, 98], [0, 0]], [2, 0])
    """
    lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
    width = int(lengths.max()) if len(values) else 0
    if width == 0:
        return np.zeros((len(values), 0), dtype=np.uint8), lengths
    arr = np.array(values, dtype=f"S{width}")
    return arr.view(np.uint8).reshape(len(values), width), lengths


def row_bytes(chars: np.ndarray, lengths: np.ndarray, i: int) -> bytes:
    """The raw bytes of row ``i``."""
    return bytes(chars[i, : lengths[i]])


def _inside(chars: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    return np.arange(chars.shape[1]) < lengths[:, None]


def _decode_int(chars, lengths, max_digits=MAX_INT_DIGITS):
    b, w = chars.shape
    inside = _inside(chars, lengths)
    digit = (chars >= 48) & (chars <= 57)
    neg = (chars[:, 0] == 45) if w else np.zeros(b, dtype=bool)
    first = np.zeros(w, dtype=bool)
    first[:1] = True
    ok = np.where(inside, digit | ((chars == 45) & first), True).all(axis=1)
    ndigits = lengths - neg
    missing = lengths == 0
    bad = ~missing & ~(ok & (ndigits >= 1) & (ndigits <= max_digits))
    values = np.zeros(b, dtype=np.int64)
    for k in range(w):  # Horner over the (few) character positions, vectorised over rows
        take = inside[:, k] & digit[:, k] & ~bad
        values = np.where(take, values * 10 + (chars[:, k].astype(np.int64) - 48), values)
    values = np.where(neg, -values, values)
    return Decoded(values, missing, bad)


def _decode_hex8(chars, lengths):
    b = chars.shape[0]
    missing = lengths == 0
    if chars.shape[1] < 8:
        chars = np.pad(chars, ((0, 0), (0, 8 - chars.shape[1])))
    nib = _HEX[chars[:, :8]]
    good = (lengths == 8) & (nib != 255).all(axis=1)
    bad = ~missing & ~good
    values = np.zeros(b, dtype=np.uint32)
    for k in range(8):  # Horner over the 8 hex digits, vectorised over rows
        values = (values << np.uint32(4)) | nib[:, k]
    values = np.where(good, values, 0)
    return Decoded(values.astype(np.int64), missing, bad)


def _decode_label(chars, lengths):
    c0 = chars[:, 0] if chars.shape[1] else np.zeros(len(lengths), dtype=np.uint8)
    good = (lengths == 1) & ((c0 == 48) | (c0 == 49))
    return Decoded(np.where(good, c0.astype(np.int64) - 48, 0), np.zeros(len(lengths), dtype=bool), ~good)


def _decode_hour(chars, lengths):
    d = _decode_int(chars, lengths, max_digits=8)
    v = d.values
    mm, dd, hh = (v // 10000) % 100, (v // 100) % 100, v % 100
    good = ~d.bad & ~d.missing & (lengths == 8) & (mm >= 1) & (mm <= 12) & (dd >= 1) & (dd <= 31) & (hh <= 23)
    return Decoded(np.where(good, v, 0), np.zeros(len(lengths), dtype=bool), ~good)


def _decode_id(chars, lengths):
    inside = _inside(chars, lengths)
    printable = (chars >= 33) & (chars <= 126)
    good = (lengths >= 1) & (lengths <= 64) & np.where(inside, printable, True).all(axis=1)
    return Decoded(np.zeros(len(lengths), dtype=np.int64), np.zeros(len(lengths), dtype=bool), ~good)


def decode(form: str, chars: np.ndarray, lengths: np.ndarray) -> Decoded:
    """Check and decode a column of one numeric-like form (not ``token``/``tagset``).

    >>> decode("label01", *matrix_from_values([b"0", b"1", b"2", b""])).bad.tolist()
    [False, False, True, True]
    >>> decode("yymmddhh", *matrix_from_values([b"14102123", b"14102124"])).values.tolist()
    [14102123, 0]
    """
    if form == "int":
        return _decode_int(chars, lengths)
    if form == "hex8":
        return _decode_hex8(chars, lengths)
    if form == "label01":
        return _decode_label(chars, lengths)
    if form == "yymmddhh":
        return _decode_hour(chars, lengths)
    if form == "id":
        return _decode_id(chars, lengths)
    raise ValueError(f"decode: form {form!r} is not a fixed form; use TokenTable for token/tagset")


class TokenTable:
    """Interns string values (``token``/``tagset`` forms) to int64 keys, first seen first.

    ``frozen=True`` (the encoding pass) gives unseen values the key -1 (they are OOV)
    instead of growing the table. Keys are positions in :attr:`tokens`.

    >>> t = TokenTable("tagset", missing=("null",))
    >>> d = t.decode(*matrix_from_values([b"3,1", b"1,3,3", b"null", b"a\\tb"]))
    >>> d.values.tolist(), d.missing.tolist(), d.bad.tolist(), t.tokens
    ([0, 0, 0, 0], [False, False, True, False], [False, False, False, True], ['1,3'])
    """

    def __init__(self, form: str, missing: tuple[str, ...] = ()):
        if form not in ("token", "tagset"):
            raise ValueError(f"TokenTable: form must be token or tagset, got {form!r}")
        self.form = form
        self.missing = {m.encode() for m in missing}
        self.index: dict[bytes, int] = {}
        self.tokens: list[str] = []
        self.frozen = False

    def _canonical(self, raw: bytes) -> bytes | None:
        """Canonical form of a value, or ``None`` when it is not in the expected form."""
        if any(c < 32 or c == 127 for c in raw):
            return None
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if self.form == "tagset":
            tags = raw.split(b",")
            if any(not t.strip() for t in tags):
                return None
            return b",".join(sorted(set(t.strip() for t in tags)))
        return raw

    def decode(self, chars: np.ndarray, lengths: np.ndarray) -> Decoded:
        b = len(lengths)
        values = np.zeros(b, dtype=np.int64)
        missing = lengths == 0
        bad = np.zeros(b, dtype=bool)
        width = chars.shape[1]
        if b == 0 or width == 0:
            return Decoded(values, missing, bad)
        as_bytes = np.ascontiguousarray(chars).view(f"S{width}").reshape(b)
        uniq, inverse = np.unique(as_bytes, return_inverse=True)
        ukeys = np.zeros(len(uniq), dtype=np.int64)
        umiss = np.zeros(len(uniq), dtype=bool)
        ubad = np.zeros(len(uniq), dtype=bool)
        for i, raw in enumerate(uniq.tolist()):
            if raw == b"" or raw in self.missing:
                umiss[i] = True
                continue
            canon = self._canonical(raw)
            if canon is None:
                ubad[i] = True
                continue
            key = self.index.get(canon)
            if key is None:
                if self.frozen:
                    key = -1
                else:
                    key = self.index[canon] = len(self.tokens)
                    self.tokens.append(canon.decode("utf-8"))
            ukeys[i] = key
        inverse = inverse.reshape(b)
        return Decoded(ukeys[inverse], missing | umiss[inverse], ubad[inverse])
