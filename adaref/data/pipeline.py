"""``prepare``: raw files -> an encoded, cached data set, in bounded memory.

Three streaming reads of the input, none holding more than a chunk of rows:

0. *fingerprint*: size, sha256 and data-line count of each file (cache key, split sizes);
1. *count*: parse every line, count each field's levels on the training split only
   (§4.1.1 rare threshold; quantile bins, §3.1) -- then build the vocabularies;
2. *encode*: parse again, append ids ``(B, F)`` int32, labels ``(B,)`` float32 and
   split codes ``(B,)`` int8 block by block to ``.npy`` files (plain writes, so the
   output never sits in memory).

Working memory is a chunk of rows plus the level counts, which grow with the number
of distinct levels, not with the number of rows; nothing row-sized is held in memory. See :mod:`adaref.data.cache` for the layout and the reuse
rule, :mod:`adaref.data.vocab` for the id layout.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from adaref.io import not_a_regular_file

from .cache import (FORMAT_VERSION, BuildDir, NpyWriter, cache_key, check_replaceable, fingerprint, is_complete,
                    read_manifest, write_json)
from .config import DataOptions, OptionsError, TransformOptions
from .progress import Progress
from .readers import DataFormatError, RawReader
from .schema import SCHEMAS, Schema
from .splits import SPLIT_NAMES, SplitAssigner
from .transforms import authors_log, quantile_edges, winners_log
from .vocab import FieldVocab, KeyCounter

__all__ = ["FieldPlan", "plan_fields", "prepare"]


@dataclass(frozen=True)
class FieldPlan:
    """One output field: its ``name``, the raw ``column`` it comes from, and ``kind``
    (``categorical`` | ``numeric`` | ``hour_of_day`` | ``hour_raw``)."""

    name: str
    column: str
    kind: str
    form: str


def plan_fields(schema: Schema, options: TransformOptions) -> list[FieldPlan]:
    """The output fields of ``schema`` under ``options``, in file order.

    >>> from adaref.data.config import preset_options
    >>> len(plan_fields(SCHEMAS["criteo"], preset_options("upstream", "criteo").transform))
    38
    >>> len(plan_fields(SCHEMAS["avazu"], TransformOptions()))
    21
    """
    names = {c.name for c in schema.features()}
    for name in options.drop_fields:
        if name not in names and name not in ("hour_of_day",):
            raise OptionsError(f"TransformOptions: drop_fields names {name!r}, which is not a field of "
                               f"{schema.name} (fields: {', '.join(c.name for c in schema.features())})")
    plans = []
    for c in schema.features():
        if c.role == "hour":
            if options.avazu_hour == "drop":
                continue
            plan = FieldPlan("hour_of_day" if options.avazu_hour == "hour_of_day" else c.name, c.name,
                             "hour_of_day" if options.avazu_hour == "hour_of_day" else "hour_raw", c.form)
        else:
            plan = FieldPlan(c.name, c.name, c.role, c.form)
        if plan.name in options.drop_fields or plan.column in options.drop_fields:
            continue
        plans.append(plan)
    if not plans:
        raise OptionsError(f"no fields left for {schema.name} after drop_fields={options.drop_fields}")
    return plans


def field_keys(plan: FieldPlan, decoded, options: TransformOptions) -> tuple[np.ndarray, np.ndarray]:
    """Vocabulary keys ``(B,)`` int64 and missing mask ``(B,)`` of one field of a chunk."""
    values, missing = decoded.values, decoded.missing
    if plan.kind == "numeric":
        if options.numeric_missing == "as_zero":
            values = np.where(missing, 0, values)
            missing = np.zeros_like(missing)
        if options.numeric_transform == "winners_log":
            values = winners_log(values)
        elif options.numeric_transform == "authors_log":
            values = authors_log(values)
        elif options.numeric_transform not in ("quantile", "categorical"):
            raise OptionsError(f"unknown numeric_transform {options.numeric_transform!r}")
        return values, missing
    if plan.kind == "hour_of_day":
        return values % 100, missing
    return values, missing


def _build_vocab(plan: FieldPlan, keys, counts, options: TransformOptions) -> FieldVocab:
    if plan.kind == "numeric" and options.numeric_transform == "quantile":
        return FieldVocab.quantile(plan.name, quantile_edges(keys, counts, options.n_bins))
    own = plan.kind == "numeric" and options.numeric_missing == "own_id"
    min_count = 1 if plan.kind == "numeric" and not options.rare_numeric else options.min_count()
    return FieldVocab.categorical(plan.name, keys, counts, min_count, missing_own_id=own)


def _shower(plan: FieldPlan, token_tables: dict, options: TransformOptions):
    if plan.kind == "numeric" and options.numeric_transform in ("winners_log", "authors_log"):
        return lambda keys: [f"level {int(k)}" for k in keys]
    if plan.form == "hex8":
        return lambda keys: [f"{int(k):08x}" for k in keys]
    if plan.form in ("token", "tagset"):
        tokens = token_tables[plan.column].tokens
        return lambda keys: [tokens[int(k)] for k in keys]
    return lambda keys: [str(int(k)) for k in keys]


def _rate(pos: float, n: int) -> float | None:
    return None if n == 0 else round(pos / n, 6)


def _fingerprint_sources(paths: list[str], schema: Schema, progress: bool, stream) -> list[dict]:
    """Pass 0: size, sha256 and data-line count of every input file."""
    for p in paths:
        if os.path.isdir(p):
            raise DataFormatError(f"{p}: is a directory; give the data file itself")
        problem = not_a_regular_file(p)
        if problem:
            raise DataFormatError(f"{p}: {problem}")
    prog = Progress("pass 0 sha256", sum(os.path.getsize(p) for p in paths), stream=stream, enabled=progress,
                    unit="bytes")
    sources, base = [], 0
    for p in paths:
        fp = fingerprint(p, has_header=schema.header is not None,
                         on_progress=lambda done, b=base: prog.update(0, b + done))
        if fp["size"] == 0:
            raise DataFormatError(f"{p}: empty file")
        sources.append(fp)
        base += fp["size"]
    prog.close()
    return sources


def _identity(path: str) -> tuple[int, int, int, int, int]:
    """What changes when a file is rewritten, appended to or renamed over: device,
    inode, size, modification and status-change times (ns)."""
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _check_unchanged(paths: list[str], before: list[tuple], when: str) -> None:
    """Refuse, naming the file, an input that changed since ``before`` was taken: the
    checksum recorded in the manifest would not describe the rows encoded."""
    for p, old in zip(paths, before):
        try:
            now = _identity(p)
        except OSError as e:
            raise DataFormatError(f"{p}: the input disappeared while it was being prepared ({when}): "
                                  f"{e.strerror or e}; nothing was written") from None
        if now != old:
            what = ("replaced by another file (renamed over)" if now[:2] != old[:2] else
                    f"its size changed from {old[2]:,} to {now[2]:,} bytes" if now[2] != old[2] else
                    "it was rewritten (its modification time changed)")
            raise DataFormatError(f"{p}: the input changed while it was being prepared ({when}): {what}; "
                                  f"nothing was written; prepare again once the file is complete")


def _count_pass(dataset, paths, schema, options: DataOptions, plans, lines_per_file, progress, stream):
    """Pass 1: parse everything, count each field's keys on the training split only.

    Returns ``(vocabs, token_tables, n_rows, bad_lines)``."""
    topts = options.transform
    n_lines = sum(lines_per_file)
    assigner = SplitAssigner(options.split, lines_per_file)
    counters = [KeyCounter() for _ in plans]
    token_tables: dict = {}
    reader = RawReader(paths, schema, options.read, token_tables)
    prog = Progress("pass 1/2 count", n_lines, stream=stream, enabled=progress)
    n_rows = 0
    for rec in reader:
        train = assigner.codes_for(rec.data_index) == 0
        for plan, counter in zip(plans, counters):
            keys, missing = field_keys(plan, rec.columns[plan.column], topts)
            counter.add(keys[train & ~missing])
        n_rows += len(rec.labels)
        prog.update(n_rows, int(rec.data_index[-1]) + 1)
    prog.close()
    if reader.lines_per_file != lines_per_file:
        raise DataFormatError(f"{paths[0]}: the input changed while it was read (line counts differ)")
    if n_rows == 0:
        raise DataFormatError(f"{paths[0]}: no valid data line ({reader.bad.total} bad lines); "
                              f"is it really a {dataset} file?")
    vocabs = [_build_vocab(plan, *counter.result(), topts) for plan, counter in zip(plans, counters)]
    for t in token_tables.values():
        t.frozen = True  # pass 2 maps values unseen in pass 1 to OOV instead of growing the tables
    return vocabs, token_tables, n_rows, reader.bad


def _encode_pass(directory, paths, schema, options: DataOptions, plans, vocabs, token_tables, n_rows,
                 lines_per_file, progress, stream) -> tuple[np.ndarray, np.ndarray]:
    """Pass 2: parse again and append ids, labels and split codes to ``directory``.

    Returns per-split row counts and positives, ``(3,)`` each."""
    ids = NpyWriter(os.path.join(directory, "ids.npy"), np.int32, (n_rows, len(plans)))
    labels = NpyWriter(os.path.join(directory, "labels.npy"), np.float32, (n_rows,))
    split = NpyWriter(os.path.join(directory, "split.npy"), np.int8, (n_rows,))
    assigner = SplitAssigner(options.split, lines_per_file)
    prog = Progress("pass 2/2 encode", sum(lines_per_file), stream=stream, enabled=progress)
    row = 0
    positives = np.zeros(3)
    counts = np.zeros(3, dtype=np.int64)
    for rec in RawReader(paths, schema, options.read, token_tables):
        b = len(rec.labels)
        if row + b > n_rows:
            raise DataFormatError(f"{paths[0]}: the input changed while it was read (more rows than counted)")
        codes = assigner.codes_for(rec.data_index)
        block = np.empty((b, len(plans)), dtype=np.int32)                   # (B, F)
        for j, (plan, vocab) in enumerate(zip(plans, vocabs)):
            keys, missing = field_keys(plan, rec.columns[plan.column], options.transform)
            block[:, j] = vocab.encode(keys, missing)
        ids.write(block)
        labels.write(rec.labels)
        split.write(codes)
        counts += np.bincount(codes, minlength=3)
        positives += np.bincount(codes, weights=rec.labels, minlength=3)
        row += b
        prog.update(row, int(rec.data_index[-1]) + 1)
    prog.close()
    if row != n_rows:
        raise DataFormatError(f"{paths[0]}: the input changed while it was read ({row} rows, {n_rows} counted)")
    ids.close(), labels.close(), split.close()
    return counts, positives


def prepare(dataset: str, paths, options: DataOptions, out: str, preset: str | None = None,
            progress: bool = False, rebuild: bool = False, stream=None) -> dict:
    """Encode ``paths`` (one data stream, in order) into directory ``out``; return the manifest.

    Reuses ``out`` when its manifest has the same cache key (``manifest["reused"]`` is
    then ``True``) unless ``rebuild``. Raises :class:`DataFormatError` on bad input in
    strict mode, with nothing written under ``out``; never replaces an ``out`` that is
    not an encoded data set.
    """
    if dataset not in SCHEMAS:
        raise OptionsError(f"unknown dataset {dataset!r}; choose one of {', '.join(SCHEMAS)}")
    schema = SCHEMAS[dataset]
    paths = [os.fspath(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if not paths:
        raise OptionsError("prepare: no input file given")
    topts = options.transform
    plans = plan_fields(schema, topts)
    check_replaceable(out)
    t_start = time.perf_counter()

    for p in paths:                          # what it is, before its identity is taken
        problem = None if os.path.isdir(p) else not_a_regular_file(p)
        if problem:
            raise DataFormatError(f"{p}: {problem}")
    identity = [_identity(p) if os.path.isfile(p) else None for p in paths]
    sources = _fingerprint_sources(paths, schema, progress, stream)
    _check_unchanged(paths, identity, "during its checksum")
    key = cache_key(dataset, [s["sha256"] for s in sources], options.to_dict())
    old = read_manifest(out)
    if not rebuild and old is not None and old.get("cache_key") == key and is_complete(out):
        old["reused"] = True
        return old
    lines_per_file = [s["data_lines"] for s in sources]
    n_lines = sum(lines_per_file)
    if n_lines == 0:
        raise DataFormatError(f"{paths[0]}: no data lines (empty apart from a header)")

    vocabs, token_tables, n_rows, bad = _count_pass(dataset, paths, schema, options, plans, lines_per_file,
                                                    progress, stream)
    _check_unchanged(paths, identity, "during pass 1")
    with BuildDir(out) as build:
        counts, positives = _encode_pass(build.path, paths, schema, options, plans, vocabs, token_tables,
                                         n_rows, lines_per_file, progress, stream)
        _check_unchanged(paths, identity, "during pass 2")
        write_json(os.path.join(build.path, "vocab.json"), {"dataset": dataset, "fields": [
            v.to_json(_shower(p, token_tables, topts)) for p, v in zip(plans, vocabs)]})
        manifest = {
            "format_version": FORMAT_VERSION,
            "cache_key": key,
            "dataset": dataset,
            "preset": preset,
            "sources": sources,
            "options": options.to_dict(),
            "field_names": [p.name for p in plans],
            "field_kinds": [p.kind for p in plans],
            "vocab_sizes": [v.size for v in vocabs],
            "oov_embedding": topts.oov_embedding,
            "id_layout": ("per-field local ids in [0, vocab_size); id 0 = OOV row (rare, unseen, missing "
                          "categorical); id 1 = missing numeric when numeric_missing='own_id' or a "
                          "quantile field"),
            "rows": {"data_lines": n_lines, "encoded": n_rows, "skipped": bad.to_dict()},
            "splits": {name: {"rows": int(counts[k]), "positives": int(positives[k]),
                              "positive_rate": _rate(positives[k], int(counts[k]))}
                       for k, name in enumerate(SPLIT_NAMES)},
            "positive_rate": _rate(positives.sum(), n_rows),
            "arrays": {"ids": "ids.npy", "labels": "labels.npy", "split": "split.npy", "vocab": "vocab.json"},
            "split_codes": {"0": "train", "1": "val", "2": "test"},
            "build_seconds": round(time.perf_counter() - t_start, 3),
        }
        write_json(os.path.join(build.path, "manifest.json"), manifest)
        build.commit()
    manifest["reused"] = False
    return manifest
