"""The raw formats of the three data sets of §4.1.1, column by column.

A :class:`Column` names one raw column, its *form* (what a valid value looks like,
checked by :mod:`adaref.data.codecs`) and its *role*:

* ``label`` -- the 0/1 click;
* ``numeric`` -- an integer feature transformed per ``TransformOptions.numeric_transform``;
* ``categorical`` -- a feature whose levels get per-field ids through a vocabulary;
* ``hour`` -- Avazu's YYMMDDHH, used per ``TransformOptions.avazu_hour``;
* ``ignore`` -- validated for form, not a feature (Avazu ``id``, iPinYou ``BidID``).

Decisions recorded here:

* **Criteo** (Kaggle ``train.txt``): no header, 40 tab-separated columns, label,
  I1..I13 (integers, possibly negative or empty) and C1..C26 (8 lowercase hex digits
  or empty). F = 39 (38 under ``upstream``, which drops I13).
* **Avazu** (Kaggle ``train``): header of 24 columns. ``id`` is not a feature;
  ``hour`` is not a feature by default (F = 21, the count §4.1.1 states), see
  ``avazu_hour``. The 8-hex-digit columns are checked as hex, the others as integers.
* **iPinYou** (the 18-column sample form): every column but ``BidID`` (an impression
  id) and ``IsClick`` (the label) is a field here, 16 in all; both presets then drop
  the two prices (:data:`adaref.data.config.IPINYOU_PRICES`: the clearing price is
  known only after the auction, and [38] uses neither as a feature), leaving F = 14.
  [38]'s processing also derives weekday, hour, OS and browser from the raw log's
  timestamp and user agent and uses the slot floor price; this form has none of those
  columns. ``UserTag`` (a comma-separated tag list) is one categorical level: the
  sorted, de-duplicated tag set. ``BiddingPrice`` and ``PayingPrice``, when kept, are
  the numeric fields (equal-frequency bins under ``paper``). ``null`` in Domain, URL
  and UserTag means missing.

>>> s = SCHEMAS["criteo"]
>>> len(s.columns), s.delimiter, s.header
(40, '\\t', None)
>>> [c.name for c in SCHEMAS["ipinyou"].features()][:3]
['BiddingPrice', 'IP', 'Region']
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Column", "Schema", "SCHEMAS"]


@dataclass(frozen=True)
class Column:
    """One raw column: ``name``, ``form`` (label01 | int | hex8 | yymmddhh | id | token | tagset)
    and ``role`` (label | numeric | categorical | hour | ignore)."""

    name: str
    form: str
    role: str
    #: Literal values meaning "missing" besides the empty string.
    missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class Schema:
    """A raw file format: columns, delimiter, header line (or ``None``), CSV quoting."""

    name: str
    columns: tuple[Column, ...]
    delimiter: str
    header: str | None
    quoted: bool = False

    def features(self) -> list[Column]:
        """Columns that can become fields (numeric, categorical, hour), in file order."""
        return [c for c in self.columns if c.role in ("numeric", "categorical", "hour")]

    def label_index(self) -> int | None:
        """Position of the label column; ``None`` for an unlabelled form (:meth:`without_label`)."""
        return next((i for i, c in enumerate(self.columns) if c.role == "label"), None)

    def without_label(self) -> "Schema":
        """The same format without its label column (files to score, e.g. a Kaggle test set).

        >>> s = SCHEMAS["avazu"].without_label()
        >>> len(s.columns), s.header.startswith("id,hour,")
        (23, True)
        """
        label = self.columns[self.label_index()].name
        header = (None if self.header is None else
                  self.delimiter.join(c for c in self.header.split(self.delimiter) if c != label))
        return Schema(self.name, tuple(c for c in self.columns if c.role != "label"), self.delimiter,
                      header, self.quoted)


def _criteo() -> Schema:
    cols = [Column("label", "label01", "label")]
    cols += [Column(f"I{i}", "int", "numeric") for i in range(1, 14)]
    cols += [Column(f"C{i}", "hex8", "categorical") for i in range(1, 27)]
    return Schema("criteo", tuple(cols), "\t", None)


_AVAZU_HEX = {"site_id", "site_domain", "site_category", "app_id", "app_domain", "app_category",
              "device_id", "device_ip", "device_model"}
_AVAZU_HEADER = ("id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,"
                 "app_category,device_id,device_ip,device_model,device_type,device_conn_type,"
                 "C14,C15,C16,C17,C18,C19,C20,C21")


def _avazu() -> Schema:
    cols = []
    for name in _AVAZU_HEADER.split(","):
        if name == "id":
            cols.append(Column(name, "id", "ignore"))
        elif name == "click":
            cols.append(Column(name, "label01", "label"))
        elif name == "hour":
            cols.append(Column(name, "yymmddhh", "hour"))
        else:
            cols.append(Column(name, "hex8" if name in _AVAZU_HEX else "int", "categorical"))
    return Schema("avazu", tuple(cols), ",", _AVAZU_HEADER)


_IPINYOU_HEADER = ("BidID,BiddingPrice,IP,Region,City,AdExchange,Domain,URL,AdSlotId,AdSlotWidth,"
                   "AdSlotHeight,AdSlotVisibility,AdSlotFormat,CreativeID,PayingPrice,Adid,UserTag,IsClick")


def _ipinyou() -> Schema:
    forms = {
        "BidID": ("id", "ignore"), "BiddingPrice": ("int", "numeric"), "IP": ("token", "categorical"),
        "Region": ("int", "categorical"), "City": ("int", "categorical"), "AdExchange": ("int", "categorical"),
        "Domain": ("token", "categorical"), "URL": ("token", "categorical"), "AdSlotId": ("token", "categorical"),
        "AdSlotWidth": ("int", "categorical"), "AdSlotHeight": ("int", "categorical"),
        "AdSlotVisibility": ("token", "categorical"), "AdSlotFormat": ("token", "categorical"),
        "CreativeID": ("int", "categorical"), "PayingPrice": ("int", "numeric"), "Adid": ("int", "categorical"),
        "UserTag": ("tagset", "categorical"), "IsClick": ("label01", "label"),
    }
    nulls = {"Domain", "URL", "UserTag"}
    cols = tuple(Column(n, *forms[n], missing=("null",) if n in nulls else ())
                 for n in _IPINYOU_HEADER.split(","))
    return Schema("ipinyou", cols, ",", _IPINYOU_HEADER, quoted=True)


SCHEMAS: dict[str, Schema] = {"criteo": _criteo(), "avazu": _avazu(), "ipinyou": _ipinyou()}
