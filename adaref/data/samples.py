"""The bundled real samples in the repository's ``data_samples/`` (see its README).

``--sample criteo|avazu|ipinyou`` anywhere in the project resolves through here.
The folder is found next to the package (the repository is installed editable), or
in the directory named by the environment variable ``ADAREF_DATA_SAMPLES``.

iPinYou comes as two files, one day each (train = 2013-10-19, test = 2013-10-20).
:func:`sample_paths` gives both, in that order, and ``--sample ipinyou`` reads them as
one data stream (train rows first) that the preset's split then divides (``paper``:
random 70/10/20; ``upstream``: interleaved, lines 0-800 of every 1,000 train). ``split.kind="by_file"`` instead keeps the
days apart: train file -> train, test file -> test. ``sample_path("ipinyou")`` is the
train file; ``sample_path("ipinyou", "test")`` the test file.

>>> os.path.basename(sample_path("criteo"))
'criteo_sample.txt'
>>> [os.path.basename(p) for p in sample_paths("ipinyou")]
['ipinyou_train.csv', 'ipinyou_test.csv']
"""
from __future__ import annotations

import hashlib
import os

__all__ = ["SAMPLE_FILES", "ENV_VAR", "samples_dir", "sample_path", "sample_paths", "verify_samples"]

ENV_VAR = "ADAREF_DATA_SAMPLES"
SAMPLE_FILES = {
    "criteo": ("criteo_sample.txt",),
    "avazu": ("avazu_sample.csv",),
    "ipinyou": ("ipinyou_train.csv", "ipinyou_test.csv"),
}


class SampleNotFoundError(FileNotFoundError):
    """A bundled sample file is missing."""


def samples_dir() -> str:
    """``$ADAREF_DATA_SAMPLES`` if set, else ``<repository>/data_samples``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return os.path.abspath(env)
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "data_samples")


def sample_paths(name: str) -> list[str]:
    """All files of sample ``name``, in reading order."""
    if name not in SAMPLE_FILES:
        raise ValueError(f"unknown sample {name!r}; choose one of {', '.join(SAMPLE_FILES)}")
    d = samples_dir()
    paths = [os.path.join(d, f) for f in SAMPLE_FILES[name]]
    for p in paths:
        if not os.path.isfile(p):
            raise SampleNotFoundError(
                f"bundled sample file {p} is missing; the samples live in the repository's data_samples/ "
                f"folder (set {ENV_VAR} to a folder holding {', '.join(SAMPLE_FILES[name])} to use another copy)")
    return paths


def sample_path(name: str, part: str = "train") -> str:
    """The sample file of ``name``; for iPinYou ``part`` picks ``"train"`` or ``"test"``."""
    paths = sample_paths(name)
    if part not in ("train", "test"):
        raise ValueError(f"part must be 'train' or 'test', got {part!r}")
    if part == "test":
        if len(paths) < 2:
            raise ValueError(f"sample {name!r} is one file; it has no separate test part")
        return paths[1]
    return paths[0]


def verify_samples() -> dict:
    """Check every file against ``SHA256SUMS``; returns ``{file: True/False}``."""
    d = samples_dir()
    result = {}
    with open(os.path.join(d, "SHA256SUMS"), encoding="ascii") as f:
        for line in f:
            digest, name = line.split()
            with open(os.path.join(d, name), "rb") as g:
                result[name] = hashlib.sha256(g.read()).hexdigest() == digest
    return result
