"""Options of the data pipeline, and the two presets ``paper`` and ``upstream``.

Three frozen dataclasses, one per component, grouped in :class:`DataOptions`:

* :class:`ReadOptions` -- how raw files are read (bad-line policy, chunk size).
* :class:`TransformOptions` -- §3.1 / §4.1.1 feature transformation
  (``docs/decisions.md`` rows 1-3).
* :class:`SplitOptions` -- §4.1.1 train/validation/test split.

Every option is documented beside its field. ``from_dict`` rejects unknown keys by
name and values of the wrong type, so a typo never silently falls back to a default.

The presets are two settings of these options (:func:`preset_options`):

=====================  ==========================  ==============================
option                 ``paper``                   ``upstream`` (authors' code)
=====================  ==========================  ==============================
numeric_transform      Criteo ``winners_log``,     Criteo ``authors_log``,
                       iPinYou ``quantile``        iPinYou ``categorical``
                       (iPinYou prices, if kept)   (iPinYou prices, if kept)
numeric_missing        ``own_id``                  ``as_zero``
rare_rule              ``keep_ge`` (count >= 20)   ``keep_gt`` (count > 20)
rare_numeric           yes                         no (every numeric level kept)
oov_embedding          ``learned``                 ``zero``
drop_fields            iPinYou prices (F = 14)     Criteo ``I13`` (F = 38),
                                                   iPinYou prices (F = 14)
split kind             ``random`` 70/10/20         ``interleaved`` 80/0/20
=====================  ==========================  ==============================

>>> o = preset_options("upstream", "criteo")
>>> o.transform.drop_fields, o.split.kind, o.transform.oov_embedding
(('I13',), 'interleaved', 'zero')
>>> DataOptions.from_dict({"transform": {"rare_treshold": 5}})
Traceback (most recent call last):
...
adaref.data.config.OptionsError: TransformOptions: unknown option 'rare_treshold' (known: avazu_hour, drop_fields, n_bins, numeric_missing, numeric_transform, oov_embedding, rare_numeric, rare_rule, rare_threshold)
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field

__all__ = [
    "OptionsError", "ReadOptions", "TransformOptions", "SplitOptions", "DataOptions",
    "PRESETS", "DATASETS", "IPINYOU_PRICES", "SAMPLE_RARE_THRESHOLD", "preset_options",
]

PRESETS = ("paper", "upstream")
DATASETS = ("criteo", "avazu", "ipinyou")

#: iPinYou columns both presets leave out of the features. ``PayingPrice`` is the
#: auction's clearing price, known only once the impression is won, so not when a click
#: is predicted; [38]'s processing (``make-ipinyou-data``) writes it out as the bidding
#: target, never as a feature. ``BiddingPrice`` is the logging bidder's own bid, which
#: that bidder computed from its CTR estimate; [38] does not use it either. Keep them
#: (as numeric fields, ``numeric_transform``) with ``transform.drop_fields=[]``.
IPINYOU_PRICES = ("BiddingPrice", "PayingPrice")

#: Rare-category threshold used for the bundled ~10k-row samples (instead of 20).
#: §4.1.1's 20 is meant for 31M training rows. On the Criteo sample (7,126 training
#: rows, ``paper``, seed 0) the share of C1..C26 values that land on id 0 (missing
#: included), train / test, and the number of categorical ids are:
#: keep all: 11.4 % / 24.7 %, 34,352 ids; count >= 2: 24.6 % / 28.8 %, 9,896 ids;
#: count >= 20: 44.8 % / 45.3 %, 698 ids. ">= 2" drops exactly the values seen once,
#: which cannot be learned and would make the OOV row rarer in training than at test
#: time, while keeping 71 % of test values on their own rows.
SAMPLE_RARE_THRESHOLD = 2


class OptionsError(ValueError):
    """An option name or value is not valid."""


def _check_choice(owner: str, name: str, value, choices) -> None:
    if value not in choices:
        raise OptionsError(f"{owner}: option {name!r} must be one of {', '.join(map(repr, choices))}; got {value!r}")


class _Options:
    """Shared ``from_dict``/``to_dict`` for the option dataclasses."""

    @classmethod
    def from_dict(cls, values: dict):
        """Build from a plain dict; unknown keys and wrong types raise :class:`OptionsError`."""
        if not isinstance(values, dict):
            raise OptionsError(f"{cls.__name__}: expected a dict of options, got {type(values).__name__}")
        names = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for key, value in values.items():
            if key not in names:
                raise OptionsError(f"{cls.__name__}: unknown option {key!r} (known: {', '.join(sorted(names))})")
            kwargs[key] = _coerce(cls.__name__, key, value, hints[key])
        return cls(**kwargs)

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (tuples become lists)."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}


def _coerce(owner: str, key: str, value, hint):
    """Check ``value`` against the annotation ``hint``; lists become tuples."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise OptionsError(f"{owner}: option {key!r} expects a list, got {value!r}")
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        out = []
        for v in value:
            if item is float and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            if not isinstance(v, item) or isinstance(v, bool):
                raise OptionsError(f"{owner}: option {key!r} expects a list of {item.__name__}, got {v!r}")
            out.append(v)
        return tuple(out)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise OptionsError(f"{owner}: option {key!r} expects {hint.__name__}, got {value!r}")
    return value


@dataclass(frozen=True)
class ReadOptions(_Options):
    """How raw files are read (strict by default).

    >>> ReadOptions(on_bad_line="skip").on_bad_line
    'skip'
    """

    #: ``"error"``: the first bad line stops with ``FILE:LINE: field X: ...`` and nothing
    #: is written; ``"skip"``: bad lines are dropped, counted by reason, and reported.
    on_bad_line: str = "error"
    #: Bytes read per chunk; bounds the reader's working memory (about 20x this).
    chunk_bytes: int = 4 << 20
    #: How many line numbers per bad-line reason are kept for the summary/manifest.
    report_lines: int = 5
    #: Longest line accepted, in bytes (line end excluded). A longer line is a bad line
    #: (``FILE:LINE: line longer than read.max_line_bytes = ...``); the reader never
    #: holds more than this of a line without a line end. Real lines are under 2 KB.
    max_line_bytes: int = 64 << 10
    #: Longest field accepted, in bytes. A longer field makes its line bad
    #: (``FILE:LINE: field X: N bytes, longer than read.max_field_bytes = ...``). The
    #: parser's working memory per column is (lines in a chunk) x the longest field in
    #: the chunk, so this bounds it: about 60 MB per column at the default for iPinYou.
    max_field_bytes: int = 4 << 10

    def __post_init__(self):
        _check_choice("ReadOptions", "on_bad_line", self.on_bad_line, ("error", "skip"))
        if self.chunk_bytes < 1024:
            raise OptionsError(f"ReadOptions: chunk_bytes must be >= 1024, got {self.chunk_bytes}")
        if self.report_lines < 0:
            raise OptionsError("ReadOptions: report_lines must be >= 0")
        if not 64 <= self.max_field_bytes <= self.max_line_bytes:
            raise OptionsError(f"ReadOptions: max_field_bytes must be in [64, max_line_bytes = "
                               f"{self.max_line_bytes}], got {self.max_field_bytes}")
        if self.max_line_bytes > 1 << 30:
            raise OptionsError(f"ReadOptions: max_line_bytes must be <= 1 GiB, got {self.max_line_bytes}")


@dataclass(frozen=True)
class TransformOptions(_Options):
    """Feature transformation, §3.1 and §4.1.1 (docs/decisions.md rows 1-3).

    Ids are per-field local ids; id 0 of every field is the OOV row (rare, unseen, and
    missing categoricals). ``oov_embedding`` says how the embedding layer treats it.

    >>> TransformOptions(numeric_transform="quantile", n_bins=8).n_bins
    8
    """

    #: Numeric fields (Criteo I1..I13, iPinYou prices if kept): ``"winners_log"`` floor(ln(v)^2)
    #: for v > 2 else v (Criteo winners, row 1 ``paper``); ``"authors_log"``
    #: floor(ln(v^2 + 1)) (row 1 ``upstream``); ``"quantile"`` equal-frequency bins
    #: fitted on the training split (§3.1, row 2); ``"categorical"`` the raw integer
    #: is the level. The resulting levels then go through the rare threshold below
    #: (``quantile`` bins do not).
    numeric_transform: str = "winners_log"
    #: Number of equal-frequency bins for ``numeric_transform="quantile"`` (fewer
    #: when the training values have ties at the bin edges).
    n_bins: int = 10
    #: Missing numeric value: ``"own_id"`` gets id 1 of the field (``paper``);
    #: ``"as_zero"`` is read as the value 0 before the transform (``upstream``).
    numeric_missing: str = "own_id"
    #: Rare-level threshold, counted on the training split only (§4.1.1 uses 20).
    rare_threshold: int = 20
    #: ``"keep_ge"`` keeps levels with train count >= threshold (``paper``: "remove
    #: levels appearing less than 20 times"); ``"keep_gt"`` keeps count > threshold
    #: (``upstream``). Rare and unseen levels map to id 0.
    rare_rule: str = "keep_ge"
    #: Whether the rare threshold also applies to the levels of numeric fields: yes for
    #: ``paper`` (§4.1.1 thresholds every field); no for ``upstream``, whose code keeps
    #: every numeric bin (an identity column of 64 buckets) and thresholds only C1..C26.
    rare_numeric: bool = True
    #: How the embedding layer must treat id 0: ``"learned"`` (one learned OOV row per
    #: field, ``paper``) or ``"zero"`` (embeds to the zero vector, ``upstream``).
    oov_embedding: str = "learned"
    #: Field names left out of the encoded data (``upstream`` Criteo drops ``I13``; both
    #: presets drop the iPinYou prices, :data:`IPINYOU_PRICES`).
    drop_fields: tuple[str, ...] = ()
    #: Avazu ``hour`` (YYMMDDHH): ``"drop"`` -- validated, not a feature (21 fields as
    #: in §4.1.1); ``"hour_of_day"`` -- the HH part as a categorical field; ``"raw"``
    #: -- the whole YYMMDDHH as a categorical field.
    avazu_hour: str = "drop"

    def __post_init__(self):
        o = "TransformOptions"
        _check_choice(o, "numeric_transform", self.numeric_transform,
                      ("winners_log", "authors_log", "quantile", "categorical"))
        _check_choice(o, "numeric_missing", self.numeric_missing, ("own_id", "as_zero"))
        _check_choice(o, "rare_rule", self.rare_rule, ("keep_ge", "keep_gt"))
        _check_choice(o, "oov_embedding", self.oov_embedding, ("learned", "zero"))
        _check_choice(o, "avazu_hour", self.avazu_hour, ("drop", "hour_of_day", "raw"))
        if not 2 <= self.n_bins <= 100_000:
            raise OptionsError(f"{o}: n_bins must be in [2, 100000], got {self.n_bins}")
        if self.rare_threshold < 0:
            raise OptionsError(f"{o}: rare_threshold must be >= 0, got {self.rare_threshold}")
        if not isinstance(self.drop_fields, tuple):
            raise OptionsError(f"{o}: drop_fields must be a tuple of field names")

    def min_count(self) -> int:
        """Smallest training count a level needs to get its own id.

        >>> TransformOptions(rare_threshold=20, rare_rule="keep_gt").min_count()
        21
        """
        return self.rare_threshold + (1 if self.rare_rule == "keep_gt" else 0)


@dataclass(frozen=True)
class SplitOptions(_Options):
    """Train/validation/test split, §4.1.1.

    >>> SplitOptions(kind="positional", fractions=(0.8, 0.0, 0.2)).fractions
    (0.8, 0.0, 0.2)
    """

    #: ``"random"``: an exactly-sized uniformly random assignment from ``seed``
    #: (§4.1.1, ``paper``); ``"interleaved"``: by position within each block of 1,000
    #: lines, position p trains if p/1000 <= f_train (the authors' criteo_split.py, run by
    #: their data script: 801 of every 1,000 lines train, ``upstream``); ``"positional"``:
    #: the first lines train, the last test (their unused time split); ``"by_file"``: with
    #: several input files (iPinYou train + test), the first file is train, the last test.
    kind: str = "random"
    #: Train/validation/test fractions of the data lines (sum 1).
    fractions: tuple[float, ...] = (0.7, 0.1, 0.2)
    #: Seed of the random split; the same seed gives byte-identical split arrays.
    seed: int = 0

    def __post_init__(self):
        _check_choice("SplitOptions", "kind", self.kind, ("random", "interleaved", "positional", "by_file"))
        if len(self.fractions) != 3 or min(self.fractions) < 0 or abs(sum(self.fractions) - 1) > 1e-9:
            raise OptionsError(f"SplitOptions: fractions must be 3 non-negative numbers summing to 1, got {self.fractions}")
        if self.seed < 0:
            raise OptionsError("SplitOptions: seed must be >= 0")


@dataclass(frozen=True)
class DataOptions(_Options):
    """All options of one ``prepare`` run.

    >>> DataOptions.from_dict({"split": {"seed": 3}}).split.seed
    3
    """

    read: ReadOptions = field(default_factory=ReadOptions)
    transform: TransformOptions = field(default_factory=TransformOptions)
    split: SplitOptions = field(default_factory=SplitOptions)

    @classmethod
    def from_dict(cls, values: dict) -> "DataOptions":
        parts = {"read": ReadOptions, "transform": TransformOptions, "split": SplitOptions}
        if not isinstance(values, dict):
            raise OptionsError(f"DataOptions: expected a dict, got {type(values).__name__}")
        for key in values:
            if key not in parts:
                raise OptionsError(f"DataOptions: unknown section {key!r} (known: {', '.join(parts)})")
        return cls(**{k: parts[k].from_dict(v) for k, v in values.items()})

    def to_dict(self) -> dict:
        return {"read": self.read.to_dict(), "transform": self.transform.to_dict(), "split": self.split.to_dict()}

    def with_values(self, values: dict) -> "DataOptions":
        """A copy with ``{"section.name": value}`` entries replaced (checked as ``from_dict``).

        >>> preset_options("paper", "criteo").with_values({"transform.rare_threshold": 2}).transform.rare_threshold
        2
        >>> preset_options("paper", "criteo").with_values({"read": {"on_bad_line": "skip"}}).read.on_bad_line
        'skip'
        """
        d = self.to_dict()
        flat = {}
        for dotted, value in values.items():       # {"read": {"on_bad_line": ...}} as read.on_bad_line
            if "." not in dotted and dotted in d and isinstance(value, dict):
                flat.update({f"{dotted}.{name}": v for name, v in value.items()})
            else:
                flat[dotted] = value
        for dotted, value in flat.items():
            section, _, name = dotted.partition(".")
            if section not in d or not name:
                raise OptionsError(f"unknown option {dotted!r}: write SECTION.NAME with SECTION one of read, transform, split")
            if name not in d[section]:
                raise OptionsError(f"unknown option {dotted!r} (known in {section}: {', '.join(sorted(d[section]))})")
            d[section][name] = value
        return DataOptions.from_dict(d)


def preset_options(preset: str, dataset: str) -> DataOptions:
    """The options of preset ``paper`` or ``upstream`` for ``dataset``.

    >>> preset_options("paper", "ipinyou").transform.numeric_transform
    'quantile'
    """
    _check_choice("preset_options", "preset", preset, PRESETS)
    _check_choice("preset_options", "dataset", dataset, DATASETS)
    prices = IPINYOU_PRICES if dataset == "ipinyou" else ()
    if preset == "paper":
        numeric = {"criteo": "winners_log", "avazu": "winners_log", "ipinyou": "quantile"}[dataset]
        return DataOptions(transform=TransformOptions(numeric_transform=numeric, drop_fields=prices))
    numeric = {"criteo": "authors_log", "avazu": "authors_log", "ipinyou": "categorical"}[dataset]
    return DataOptions(
        transform=TransformOptions(
            numeric_transform=numeric, numeric_missing="as_zero", rare_rule="keep_gt", rare_numeric=False,
            oov_embedding="zero", drop_fields=("I13",) if dataset == "criteo" else prices,
        ),
        split=SplitOptions(kind="interleaved", fractions=(0.8, 0.0, 0.2)),
    )
