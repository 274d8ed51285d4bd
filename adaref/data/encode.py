"""New raw lines -> per-field ids, with the vocabulary of a prepared data set (§3.1).

:class:`Encoder` rebuilds, from a prepared directory's ``manifest.json`` and
``vocab.json`` (or the copies a training run keeps), the exact id map that
:func:`~adaref.data.pipeline.prepare` applied: the same numeric transforms, the same
kept levels in the same order, the same bins. Levels the training split never saw (or
saw too rarely) get id 0, the OOV row; missing values get the field's missing id.
Encoding the training file again therefore gives back the prepared ``ids.npy``
bit for bit.

Files to score may lack the label column (a Kaggle test set): ``labelled=None``
detects that from the first line; their labels come back as NaN.

>>> import os, tempfile, numpy as np
>>> from adaref.data import load
>>> from adaref.data.samples import sample_path
>>> tmp = tempfile.mkdtemp()
>>> ds = load("criteo", sample=True, out=os.path.join(tmp, "c"))
>>> enc = Encoder.from_prepared(ds.path)
>>> ids, labels = enc.encode(sample_path("criteo"))
>>> bool((ids == np.asarray(ds.ids)).all()), ids.shape
(True, (10181, 39))
>>> import shutil; del ds; shutil.rmtree(tmp)
"""
from __future__ import annotations

import json
import os

import numpy as np

from .codecs import TokenTable
from .config import DataOptions
from .pipeline import FieldPlan, field_keys, plan_fields
from .readers import DataFormatError, RawReader, open_binary
from .schema import SCHEMAS, Schema
from .vocab import FieldVocab

__all__ = ["Encoder"]


class Encoder:
    """The id map of one prepared data set, applied to new raw files.

    Build it with :meth:`from_prepared` (a directory holding ``manifest.json`` and
    ``vocab.json``); :meth:`encode` reads files in the data set's raw format.
    """

    def __init__(self, manifest: dict, vocab: dict, where: str = "vocab.json"):
        dataset = manifest.get("dataset")
        if dataset not in SCHEMAS:
            raise DataFormatError(f"{where}: unknown dataset {dataset!r} in the manifest")
        self.dataset = dataset
        self.options = DataOptions.from_dict(manifest["options"])
        self.schema = SCHEMAS[dataset]
        self.plans = plan_fields(self.schema, self.options.transform)
        fields = vocab.get("fields") if isinstance(vocab, dict) else None
        names = [p.name for p in self.plans]
        if not isinstance(fields, list) or [f.get("name") for f in fields] != names:
            raise DataFormatError(f"{where}: its fields do not match the {dataset} fields of these data "
                                  f"options ({len(names)} fields: {', '.join(names[:4])}, ...)")
        if list(manifest.get("field_names", names)) != names:
            raise DataFormatError(f"{where}: manifest field_names differ from the data options' fields")
        self.token_tables: dict[str, TokenTable] = {}
        self.vocabs = [self._vocab(plan, entry, where) for plan, entry in zip(self.plans, fields)]
        sizes = [v.size for v in self.vocabs]
        if "vocab_sizes" in manifest and list(manifest["vocab_sizes"]) != sizes:
            raise DataFormatError(f"{where}: vocabulary sizes {sizes} differ from the manifest's "
                                  f"{manifest['vocab_sizes']}")
        self.field_names = names
        self.vocab_sizes = sizes

    @classmethod
    def from_prepared(cls, directory: str | os.PathLike) -> "Encoder":
        """The encoder of a directory holding ``manifest.json`` and ``vocab.json``."""
        directory = os.fspath(directory)
        docs = []
        for name in ("manifest.json", "vocab.json"):
            path = os.path.join(directory, name)
            try:
                with open(path, encoding="utf-8") as f:
                    docs.append(json.load(f))
            except FileNotFoundError:
                raise DataFormatError(f"{path}: missing; a prepared data set (or a run directory "
                                      f"written by adaref.train) holds it") from None
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise DataFormatError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
        return cls(docs[0], docs[1], where=os.path.join(directory, "vocab.json"))

    # ------------------------------------------------------------------------------
    def _vocab(self, plan: FieldPlan, entry: dict, where: str) -> FieldVocab:
        """One field's :class:`FieldVocab` from its ``vocab.json`` entry (the inverse of
        :meth:`FieldVocab.to_json`: kept values back to the keys the reader produces)."""
        try:
            if entry["kind"] == "quantile":
                return FieldVocab.quantile(plan.name, np.asarray(entry["bin_edges"], dtype=np.int64))
            values = entry["values"]
            column = next(c for c in self.schema.columns if c.name == plan.column)
            if column.form in ("token", "tagset"):       # keys are positions in a frozen table
                table = TokenTable(column.form, column.missing)
                for v in values:
                    table.index[v.encode("utf-8")] = len(table.tokens)
                    table.tokens.append(v)
                table.frozen = True                     # unseen values: key -1, not found
                self.token_tables[plan.column] = table
                keys = np.arange(len(values), dtype=np.int64)
            elif plan.kind == "numeric" and self.options.transform.numeric_transform in ("winners_log",
                                                                                         "authors_log"):
                keys = np.array([int(v.removeprefix("level ")) for v in values], dtype=np.int64)
            elif column.form == "hex8":
                keys = np.array([int(v, 16) for v in values], dtype=np.int64)
            else:
                keys = np.array([int(v) for v in values], dtype=np.int64)
            first = int(entry["first_id"])
            vocab = FieldVocab(plan.name, "categorical", first, 1 if "1" in entry["special_ids"] else 0,
                               keys, np.zeros(len(keys), dtype=np.int64))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DataFormatError(f"{where}: field {plan.name}: damaged entry "
                                  f"({type(e).__name__}: {e})") from None
        if len(keys) and np.any(np.diff(keys) <= 0):
            raise DataFormatError(f"{where}: field {plan.name}: values are not in ascending key order")
        if vocab.size != entry.get("size", vocab.size):
            raise DataFormatError(f"{where}: field {plan.name}: {vocab.size} ids, the entry says {entry['size']}")
        return vocab

    def _labelled(self, path: str) -> bool:
        """Whether ``path`` has the label column, from its header or its first line's columns."""
        with open_binary(path) as f:
            first = f.readline(1 << 20).rstrip(b"\r\n").decode("utf-8", errors="replace")
        if self.schema.header is not None:
            return first != self.schema.without_label().header
        n = len(self.schema.columns)
        return first.count(self.schema.delimiter) + 1 != n - 1

    def encode(self, paths, labelled: bool | None = None,
               on_bad_line: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(ids (B, F) int32, labels (B,) float32)`` of the raw files ``paths`` (read in
        order). ``labelled``: whether the files have the label column (``None``: look at
        the first file; unlabelled rows get NaN labels). ``on_bad_line``: ``"error"``
        (default, the data options' choice) or ``"skip"``; skipped lines are counted in
        :attr:`skipped`."""
        paths = [os.fspath(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
        if not paths:
            raise DataFormatError("encode: no input file given")
        if labelled is None:
            labelled = self._labelled(paths[0])
        schema: Schema = self.schema if labelled else self.schema.without_label()
        read = self.options.read
        if on_bad_line is not None:
            read = type(read)(**{**read.to_dict(), "on_bad_line": on_bad_line})
        reader = RawReader(paths, schema, read, self.token_tables)
        blocks, labels = [], []
        for rec in reader:
            block = np.empty((len(rec.labels), len(self.plans)), dtype=np.int32)   # (b, F)
            for j, (plan, vocab) in enumerate(zip(self.plans, self.vocabs)):
                keys, missing = field_keys(plan, rec.columns[plan.column], self.options.transform)
                block[:, j] = vocab.encode(keys, missing)
            blocks.append(block)
            labels.append(rec.labels)
        self.skipped = reader.bad.to_dict()
        if not blocks:
            raise DataFormatError(f"{paths[0]}: no data lines to encode")
        return np.concatenate(blocks), np.concatenate(labels)
