"""Data pipeline: raw Criteo / Avazu / iPinYou files -> per-field ids ``(B, F)`` (§3.1, §4.1.1).

One concept per module:

* :mod:`~adaref.data.config` -- options (frozen dataclasses) and the presets ``paper`` / ``upstream``
* :mod:`~adaref.data.schema` -- the raw formats, column by column, and which columns are fields
* :mod:`~adaref.data.fields`, :mod:`~adaref.data.codecs`, :mod:`~adaref.data.readers` -- streaming,
  vectorised parsing with strict / skip bad-line handling
* :mod:`~adaref.data.transforms` -- numeric transforms and equal-frequency bins
* :mod:`~adaref.data.vocab` -- training-split counts, rare threshold, local ids (id 0 = OOV)
* :mod:`~adaref.data.splits` -- random 70/10/20 from a seed, positional 80/20, by file
* :mod:`~adaref.data.cache`, :mod:`~adaref.data.pipeline` -- the two-pass ``prepare`` and the cache
* :mod:`~adaref.data.dataset` -- :class:`EncodedDataset` and :func:`load`
* :mod:`~adaref.data.samples` -- the bundled real samples in ``data_samples/``
* :mod:`~adaref.data.synthetic` -- planted-interaction data with Bayes-optimal metrics

Command line: ``python -m adaref.data prepare|synth --help``.
"""
from .config import (DataOptions, OptionsError, ReadOptions, SplitOptions, TransformOptions,
                     preset_options)
from .dataset import EncodedDataset, load, open_encoded
from .pipeline import prepare
from .readers import DataFormatError
from .samples import sample_path, sample_paths

__all__ = [
    "DataOptions", "ReadOptions", "TransformOptions", "SplitOptions", "OptionsError", "preset_options",
    "EncodedDataset", "load", "open_encoded", "prepare", "DataFormatError", "sample_path", "sample_paths",
]
