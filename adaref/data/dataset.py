"""The encoded data set the model trains on, and :func:`load`, the one call to get it.

:class:`EncodedDataset` holds (memory-mapped, read-only):

* ``ids`` ``(B, F)`` int32 -- per-field local ids in ``[0, vocab_sizes[f])``; id 0 of
  every field is the OOV row (``manifest["oov_embedding"]`` says ``"learned"`` or
  ``"zero"``);
* ``labels`` ``(B,)`` float32 0/1;
* ``splits`` -- ``{"train", "val", "test"}`` -> ascending row-index arrays (int64);
* ``field_names``, ``vocab_sizes``, ``manifest``; ``probs`` ``(B,)`` float64 -- the
  true click probability, only for synthetic data (else ``None``).

>>> import shutil, tempfile
>>> tmp = tempfile.mkdtemp()
>>> ds = load("criteo", sample=True, out=os.path.join(tmp, "c"))
>>> ds.ids.shape, ds.ids.dtype, len(ds.field_names), ds.oov_embedding
((10181, 39), dtype('int32'), 39, 'learned')
>>> {k: len(v) for k, v in ds.splits.items()}
{'train': 7126, 'val': 1018, 'test': 2037}
>>> bool((ds.ids < np.array(ds.vocab_sizes)).all())
True
>>> del ds; shutil.rmtree(tmp)
"""
from __future__ import annotations

import json
import mmap
import os
from dataclasses import dataclass, field

import numpy as np

from .cache import read_manifest
from .readers import DataFormatError
from .config import SAMPLE_RARE_THRESHOLD, DataOptions, OptionsError, preset_options
from .pipeline import prepare
from .samples import sample_paths
from .splits import SPLIT_NAMES

__all__ = ["EncodedDataset", "open_encoded", "load", "default_out", "resolve_options"]


@dataclass
class EncodedDataset:
    """An encoded data set on disk (see the module docstring)."""

    path: str
    ids: np.ndarray
    labels: np.ndarray
    split_codes: np.ndarray
    manifest: dict
    probs: np.ndarray | None = None
    _splits: dict | None = field(default=None, repr=False)

    @property
    def field_names(self) -> list[str]:
        return list(self.manifest["field_names"])

    @property
    def vocab_sizes(self) -> list[int]:
        return [int(v) for v in self.manifest["vocab_sizes"]]

    @property
    def oov_embedding(self) -> str:
        return self.manifest["oov_embedding"]

    @property
    def splits(self) -> dict[str, np.ndarray]:
        """``{"train", "val", "test"}`` -> ascending row indices into ``ids``/``labels``."""
        if self._splits is None:
            codes = np.asarray(self.split_codes)
            self._splits = {name: np.flatnonzero(codes == k) for k, name in enumerate(SPLIT_NAMES)}
        return self._splits

    def subset(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(ids (b, F), labels (b,))`` of split ``name``, loaded into memory."""
        if name not in SPLIT_NAMES:
            raise ValueError(f"unknown split {name!r}; choose one of {', '.join(SPLIT_NAMES)}")
        idx = self.splits[name]
        return np.asarray(self.ids[idx]), np.asarray(self.labels[idx])

    def release_pages(self) -> None:
        """Unmap the file pages of the memory-mapped arrays that this process has read:
        they stay in the kernel's page cache and the next read maps them again (no disk
        read when they are cached). Called after each read of a batch of rows (training,
        evaluation, the contents check), the data's share of the process's resident
        memory stays that of one read, whatever the number of rows; otherwise every page
        read once stays mapped (156 MB of ids at 1M Criteo rows). Nothing for arrays
        in memory (``open_encoded(..., mmap=False)``)."""
        for a in (self.ids, self.labels, self.split_codes, self.probs):
            m = getattr(a, "_mmap", None)                      # np.memmap's mapping
            if m is not None and hasattr(m, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
                try:
                    m.madvise(mmap.MADV_DONTNEED)              # read-only shared mapping: exact
                except (OSError, ValueError):                  # closed, or refused: keep the pages
                    pass

    def vocab(self) -> dict:
        """The parsed ``vocab.json`` (kept raw values per field, bin edges)."""
        with open(os.path.join(self.path, "vocab.json"), encoding="utf-8") as f:
            return json.load(f)


def open_encoded(path: str, mmap: bool = True) -> EncodedDataset:
    """Open an encoded directory written by ``prepare`` or ``synth``."""
    manifest = read_manifest(path)
    if manifest is None:
        raise FileNotFoundError(f"{path}: no readable manifest.json; not an encoded data set")
    mode = "r" if mmap else None
    fix = f"delete {path} to prepare it again (or rerun python -m adaref.data prepare with --rebuild)"

    def arr(name):
        try:
            return np.load(os.path.join(path, name), mmap_mode=mode, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise DataFormatError(f"{os.path.join(path, name)}: the prepared data is damaged "
                                  f"({type(e).__name__}: {e}); {fix}") from None

    sizes = _check_manifest(path, manifest, fix)
    probs = arr("probs.npy") if os.path.isfile(os.path.join(path, "probs.npy")) else None
    ds = EncodedDataset(os.path.abspath(path), arr("ids.npy"), arr("labels.npy"), arr("split.npy"), manifest, probs)
    rows = manifest.get("rows", {}).get("encoded", len(ds.ids)) if isinstance(manifest.get("rows"), dict) else None
    if (not isinstance(rows, int) or ds.ids.ndim != 2 or ds.ids.shape != (rows, len(sizes))
            or ds.labels.shape != (rows,) or ds.split_codes.shape != (rows,)):
        raise DataFormatError(f"{path}: the prepared arrays do not match manifest.json (ids {ds.ids.shape}, "
                              f"labels {ds.labels.shape}, split {ds.split_codes.shape}; the manifest says {rows} "
                              f"rows of {len(sizes)} fields); {fix}")
    for name, a, kinds in (("ids.npy", ds.ids, "iu"), ("labels.npy", ds.labels, "fiu"),
                           ("split.npy", ds.split_codes, "iu")):
        if a.dtype.kind not in kinds:
            raise DataFormatError(f"{os.path.join(path, name)}: holds {a.dtype} values, not "
                                  f"{'integers' if kinds == 'iu' else 'numbers'}; {fix}")
    check_contents(ds, fix)
    return ds


def _check_manifest(path: str, manifest: dict, fix: str) -> np.ndarray:
    """The vocabulary sizes of ``manifest.json``, checked: one positive integer per field."""
    sizes, names = manifest.get("vocab_sizes"), manifest.get("field_names")
    if (not isinstance(sizes, list) or not sizes or not isinstance(names, list) or len(names) != len(sizes)
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v < 2**31 for v in sizes)):
        raise DataFormatError(f"{os.path.join(path, 'manifest.json')}: vocab_sizes and field_names are not one "
                              f"positive size and one name per field; {fix}")
    return np.asarray(sizes, dtype=np.int64)


#: Rows checked at a time by :func:`check_contents` (a few tens of MB of ids).
CHECK_ROWS = 1 << 18


def check_contents(ds: EncodedDataset, fix: str = "prepare it again") -> None:
    """Check what would make training wrong or crash, chunk by chunk over the memory
    maps (vectorised; about 1 GB/s): every id within its field's vocabulary
    ``[0, vocab_size)``, every split code 0, 1 or 2, every label 0 or 1, and the
    per-split row counts of the manifest. Raises :class:`DataFormatError` naming the
    file, the first bad row and ``fix``."""
    sizes = np.asarray(ds.vocab_sizes, dtype=np.uint32)
    splits = ds.manifest.get("splits") if isinstance(ds.manifest.get("splits"), dict) else {}
    counts = np.zeros(3, dtype=np.int64)
    for start in range(0, len(ds.labels), CHECK_ROWS):
        stop = start + CHECK_ROWS
        ids = np.asarray(ds.ids[start:stop])
        wrong = ids.view(np.uint32) >= sizes if ids.dtype == np.int32 else (ids < 0) | (ids >= sizes)
        if wrong.any():
            r, f = map(int, np.argwhere(wrong)[0])
            raise DataFormatError(f"{os.path.join(ds.path, 'ids.npy')}: row {start + r} holds id {ids[r, f]} for "
                                  f"field {ds.field_names[f]}, outside its vocabulary [0, {sizes[f]}); the "
                                  f"prepared data is damaged; {fix}")
        codes = np.asarray(ds.split_codes[start:stop])
        bad = (codes < 0) | (codes > 2)
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise DataFormatError(f"{os.path.join(ds.path, 'split.npy')}: row {start + r} holds split code "
                                  f"{codes[r]}, not 0 (train), 1 (val) or 2 (test); {fix}")
        counts += np.bincount(codes.astype(np.int64), minlength=3)[:3]
        labels = np.asarray(ds.labels[start:stop])
        ds.release_pages()                       # the chunk is read: unmap its pages
        bad = (labels != 0) & (labels != 1)
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise DataFormatError(f"{os.path.join(ds.path, 'labels.npy')}: row {start + r} holds {labels[r]}, not "
                                  f"a 0/1 click; {fix}")
    for k, name in enumerate(SPLIT_NAMES):
        want = splits.get(name, {}).get("rows") if isinstance(splits.get(name), dict) else None
        if want is not None and want != int(counts[k]):
            raise DataFormatError(f"{os.path.join(ds.path, 'split.npy')}: {int(counts[k])} {name} rows, but "
                                  f"manifest.json says {want}; {fix}")


def default_out(dataset: str, preset: str, sample: bool) -> str:
    """``$ADAREF_CACHE`` (default ``.adaref_cache``) / ``<dataset>-<preset>[-sample]``."""
    root = os.environ.get("ADAREF_CACHE", ".adaref_cache")
    return os.path.join(root, f"{dataset}-{preset}{'-sample' if sample else ''}")


def resolve_options(dataset: str, preset: str, sample: bool, options: DataOptions | None = None,
                    overrides: dict | None = None, seed: int | None = None,
                    on_bad_line: str | None = None) -> DataOptions:
    """The options of one run: the preset's, with the sample threshold, then overrides.

    For the bundled samples the rare threshold becomes ``SAMPLE_RARE_THRESHOLD``
    (keep levels seen at least twice in training) unless set explicitly.

    >>> resolve_options("criteo", "paper", sample=True).transform.min_count()
    2
    >>> resolve_options("criteo", "upstream", sample=True).transform.min_count()
    2
    """
    overrides = dict(overrides or {})
    if options is None:
        options = preset_options(preset, dataset)
        if sample and "transform.rare_threshold" not in overrides:
            gt = options.transform.rare_rule == "keep_gt"
            overrides = {"transform.rare_threshold": SAMPLE_RARE_THRESHOLD - (1 if gt else 0), **overrides}
    if seed is not None:
        overrides["split.seed"] = seed
    if on_bad_line is not None:
        overrides["read.on_bad_line"] = on_bad_line
    return options.with_values(overrides) if overrides else options


def _check_input(input) -> None:
    """Refuse an ``input`` of :func:`load` that is not a path or a non-empty list of paths.

    >>> _check_input(5)
    Traceback (most recent call last):
    ...
    TypeError: load: input must be a path or a list of paths, got 5 (int)
    """
    def is_path(p):
        return isinstance(p, (str, os.PathLike))

    if is_path(input):
        return
    if not isinstance(input, (list, tuple)):
        raise TypeError(f"load: input must be a path or a list of paths, got {input!r} ({type(input).__name__})")
    if not input:
        raise OptionsError("load: input is an empty list; give at least one path")
    bad = [p for p in input if not is_path(p)]
    if bad:
        raise TypeError(f"load: input must be a path or a list of paths, got {bad[0]!r} "
                        f"({type(bad[0]).__name__}) in the list")


def load(dataset: str, *, input=None, sample: bool = False, preset: str = "paper", out: str | None = None,
         seed: int | None = None, options: DataOptions | None = None, overrides: dict | None = None,
         on_bad_line: str | None = None, progress: bool = False, rebuild: bool = False) -> EncodedDataset:
    """Prepare (or reuse) and open an encoded data set.

    Give either ``input`` (a path or a list of paths, read in order) or
    ``sample=True`` (the bundled sample of ``dataset``; its rare-level threshold is
    lowered from the full-data 20 to :data:`adaref.data.config.SAMPLE_RARE_THRESHOLD`,
    since on 7k training rows a threshold of 20 would send most levels to the OOV
    row). ``preset`` picks the options
    (``paper`` or ``upstream``); ``overrides`` replaces single options by dotted name
    (``{"transform.rare_threshold": 5}``); ``seed`` sets ``split.seed``. ``out``
    defaults to :func:`default_out`.
    """
    if (input is None) == (not sample):
        raise OptionsError("load: give exactly one of input=PATH or sample=True")
    if input is not None:
        _check_input(input)
    paths = sample_paths(dataset) if sample else input
    opts = resolve_options(dataset, preset, sample, options, overrides, seed, on_bad_line)
    out = out if out is not None else default_out(dataset, preset, sample)
    prepare(dataset, paths, opts, out, preset=preset, progress=progress, rebuild=rebuild)
    return open_encoded(out)
