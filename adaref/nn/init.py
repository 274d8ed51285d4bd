"""Deterministic initialisers. Every one takes a ``numpy.random.Generator``: adaref
never touches NumPy's global random state.

The defaults follow the authors' setup (docs/decisions.md, "Other facts"): Glorot-uniform
kernels, zero biases, embeddings from a normal with sigma = 1/sqrt(D) truncated at 2
sigma (TensorFlow's ``truncated_normal``).
"""
from __future__ import annotations

import numpy as np


def check_rng(rng, owner: str) -> None:
    """Refuse anything but a ``numpy.random.Generator`` as ``rng`` (None, a seed, the
    legacy ``RandomState``), naming ``owner``: adaref draws from the caller's generator only.

    >>> check_rng(None, "Linear")
    Traceback (most recent call last):
    ...
    TypeError: Linear: rng must be a numpy.random.Generator (pass rng=numpy.random.default_rng(seed)), got None
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{owner}: rng must be a numpy.random.Generator "
                        f"(pass rng=numpy.random.default_rng(seed)), got {rng!r}")


def glorot_uniform(rng: np.random.Generator, fan_in: int, fan_out: int, shape: tuple[int, ...],
                   dtype=np.float64) -> np.ndarray:
    """U(-a, a) with a = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010)."""
    check_rng(rng, "glorot_uniform")
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


def truncated_normal(rng: np.random.Generator, shape: tuple[int, ...], std: float,
                     dtype=np.float64) -> np.ndarray:
    """N(0, std^2) with draws beyond 2 std redrawn (as TensorFlow's truncated normal).

    >>> x = truncated_normal(np.random.default_rng(0), (1000,), std=0.25)
    >>> bool(np.abs(x).max() <= 0.5)
    True
    """
    check_rng(rng, "truncated_normal")
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2
    return (out * std).astype(dtype)
