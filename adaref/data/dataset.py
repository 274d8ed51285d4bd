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

    probs = arr("probs.npy") if os.path.isfile(os.path.join(path, "probs.npy")) else None
    ds = EncodedDataset(os.path.abspath(path), arr("ids.npy"), arr("labels.npy"), arr("split.npy"), manifest, probs)
    rows = manifest.get("rows", {}).get("encoded", len(ds.ids))
    if (ds.ids.ndim != 2 or ds.ids.shape != (rows, len(ds.vocab_sizes)) or ds.labels.shape != (rows,)
            or ds.split_codes.shape != (rows,)):
        raise DataFormatError(f"{path}: the prepared arrays do not match manifest.json (ids {ds.ids.shape}, "
                              f"labels {ds.labels.shape}, split {ds.split_codes.shape}; the manifest says {rows} "
                              f"rows of {len(ds.vocab_sizes)} fields); {fix}")
    labels = np.asarray(ds.labels)
    if not np.isin(labels, (0, 1)).all():
        first = int(np.flatnonzero(~np.isin(labels, (0, 1)))[0])
        raise DataFormatError(f"{path}/labels.npy: row {first} holds {labels[first]}, not a 0/1 click; {fix}")
    return ds


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
