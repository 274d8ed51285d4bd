"""Synthetic Criteo-shaped data with planted feature interactions and a known truth.

Each row has ``F`` categorical fields with Zipf-like level frequencies
(P(level k) ∝ (k + 1)^-a). Its click probability is ``sigmoid(z)``, where the logit
``z`` mixes interactions of the kinds the experts of §3.2 model:

* ``linear`` -- first order: ``Σ_f w_f[x_f]`` (what LR sees);
* ``fm`` -- pairwise dot products ``<u_i[x_i], u_j[x_j]>`` for planted field pairs
  (what FM sees, vector-wise);
* ``cross`` -- bit-wise cross ``u_i[x_i]^T M_ij u_j[x_j]`` with a dense random
  ``M_ij`` (bits of one field times *other* bits of another: DCN/PIN, eq. 5-6; FM is
  the special case ``M = I``);
* ``hadamard`` -- third-order polynomial ``Σ_k u_a[x_a]_k u_b[x_b]_k u_c[x_c]_k`` for
  planted field triples (xDeepInt/PIN's Hadamard products);
* ``attention`` -- field-to-field weighting: a query field's level decides, through
  ``softmax_j <A^T u_q[x_q], u_j[x_j]>`` (= ``u_q^T A u_j``), how much each key field's value ``s_j[x_j]``
  counts (what MHSA, eq. 4, captures and a fixed-weight model cannot). The number of
  key fields (``attention_keys``) and the scale of A (``attention_scale``: larger is
  closer to picking one key's value) set how far it is from a low-degree polynomial of
  the embeddings, which is what PIN and cross layers build (before their layer norms).

Each term is standardised on a fixed calibration sample, weighted by ``coef_*``, and
the bias set so the mean probability is ``positive_rate``: the planted function
depends only on the options' seed, not on ``rows``. Labels are ``Bernoulli(p)`` draws,
and ``p`` of every row is saved, so the Bayes-optimal AUC and log-loss of any split
are exact (:func:`bayes_optimal`): no model can beat them in expectation.

Encoded output uses the pipeline's layout: level k of a field is id ``k + 1`` and id 0
is the (never used) OOV row, so ``vocab_sizes[f] = V_f + 1``.

>>> opts = SynthOptions(rows=2000, n_fields=6, max_vocab=50, seed=3)
>>> g = PlantedModel(opts)
>>> ids, p, terms = g.sample(np.random.Generator(np.random.PCG64(0)), 1000)
>>> ids.shape, p.shape, terms.shape, bool(ids.min() >= 1)
((1000, 6), (1000,), (1000, 5), True)
>>> 0.15 < float(p.mean()) < 0.35
True
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

import numpy as np

from ..metrics import auc, log_loss
from .cache import BuildDir, write_json
from .config import OptionsError, SplitOptions, _Options
from .progress import Progress
from .splits import SPLIT_NAMES, SplitAssigner

__all__ = ["SynthOptions", "PlantedModel", "TERMS", "synthesize", "bayes_optimal", "write_criteo_text"]

TERMS = ("linear", "fm", "cross", "hadamard", "attention")
_CALIBRATION_ROWS = 20_000
_CHUNK = 100_000


@dataclass(frozen=True)
class SynthOptions(_Options):
    """Options of the planted generator (every field documented).

    >>> SynthOptions(rows=10).vocab(0)
    2
    """

    #: Number of rows to generate.
    rows: int = 100_000
    #: Number of fields F (39 is Criteo-shaped).
    n_fields: int = 39
    #: Vocabulary sizes V_f; empty = log-spaced from 2 to ``max_vocab`` over the fields.
    vocab_sizes: tuple[int, ...] = ()
    #: Largest vocabulary when ``vocab_sizes`` is empty.
    max_vocab: int = 10_000
    #: Zipf exponent a of the level frequencies (P(k) ∝ (k + 1)^-a).
    zipf_exponent: float = 1.1
    #: Dimension of the planted latent vectors u_f.
    latent_dim: int = 4
    #: Mean click probability (the bias is calibrated to it).
    positive_rate: float = 0.25
    #: Weights of the standardised terms, in the order of ``TERMS``.
    coef_linear: float = 0.6
    coef_fm: float = 0.8
    coef_cross: float = 0.8
    coef_hadamard: float = 0.8
    coef_attention: float = 0.8
    #: Number K of key fields of the attention term; 0 = max(2, F // 6).
    attention_keys: int = 0
    #: Scale of the attention's query map A (entries N(0, 1) times this): larger makes
    #: the softmax sharper, closer to picking one key field's value.
    attention_scale: float = 1.5
    #: Seed of the planted function (parameters, field pairs) and of the rows.
    seed: int = 0
    #: Seed of the random 70/10/20 split.
    split_seed: int = 0

    def __post_init__(self):
        if self.rows < 1 or self.n_fields < 4:
            raise OptionsError("SynthOptions: need rows >= 1 and n_fields >= 4")
        if self.vocab_sizes and len(self.vocab_sizes) != self.n_fields:
            raise OptionsError(f"SynthOptions: vocab_sizes has {len(self.vocab_sizes)} entries, n_fields is {self.n_fields}")
        if any(v < 2 for v in self.vocab_sizes) or self.max_vocab < 2:
            raise OptionsError("SynthOptions: every vocabulary needs at least 2 levels")
        if not 0.0 < self.positive_rate < 1.0:
            raise OptionsError("SynthOptions: positive_rate must be in (0, 1)")
        if self.attention_keys != 0 and not 2 <= self.attention_keys <= self.n_fields - 1:
            raise OptionsError(f"SynthOptions: attention_keys must be 0 (= max(2, F // 6)) or in "
                               f"[2, n_fields - 1 = {self.n_fields - 1}] (one key would make the "
                               f"softmax weight 1, no interaction), got {self.attention_keys}")
        if not (math.isfinite(self.attention_scale) and self.attention_scale > 0):
            raise OptionsError(f"SynthOptions: attention_scale must be positive and finite, "
                               f"got {self.attention_scale}")

    def manifest_options(self) -> dict:
        """The options as a manifest stores them (JSON values: lists, not tuples).

        >>> SynthOptions(rows=10, vocab_sizes=(2,) * 39).manifest_options()["vocab_sizes"][:2]
        [2, 2]
        """
        return dataclasses.asdict(self) | {"vocab_sizes": list(self.vocab_sizes)}

    def vocab(self, f: int) -> int:
        """V_f, the number of levels of field ``f``."""
        if self.vocab_sizes:
            return int(self.vocab_sizes[f])
        return int(round(np.exp(np.linspace(np.log(2), np.log(self.max_vocab), self.n_fields))[f]))


class PlantedModel:
    """The planted click function of ``SynthOptions`` (see the module docstring)."""

    def __init__(self, options: SynthOptions):
        self.options = o = options
        rng = np.random.Generator(np.random.PCG64([o.seed, 1]))
        F, d = o.n_fields, o.latent_dim
        self.V = [o.vocab(f) for f in range(F)]
        self.probs = []
        for v in self.V:
            w = (np.arange(v) + 1.0) ** -o.zipf_exponent
            self.probs.append(np.cumsum(w / w.sum()))
        self.w = [rng.normal(size=v) for v in self.V]
        self.u = [rng.normal(size=(v, d)) for v in self.V]
        self.s = [rng.normal(size=v) for v in self.V]
        fields = rng.permutation(F)
        n = max(1, F // 8)
        self.fm_pairs = [tuple(p) for p in fields[: 2 * n].reshape(n, 2)]
        self.cross_pairs = [tuple(p) for p in fields[2 * n: 4 * n].reshape(n, 2)]
        self.triples = [tuple(t) for t in rng.permutation(F)[: 3 * max(1, F // 12)].reshape(-1, 3)]
        self.M = [rng.normal(size=(d, d)) for _ in self.cross_pairs]
        self.query = int(rng.integers(F))
        n_keys = o.attention_keys or max(2, F // 6)
        self.keys = [int(k) for k in rng.permutation([f for f in range(F) if f != self.query])[:n_keys]]
        self.A = rng.normal(size=(d, d)) * o.attention_scale
        self.coef = np.array([o.coef_linear, o.coef_fm, o.coef_cross, o.coef_hadamard, o.coef_attention])
        # standardise the terms and calibrate the bias on a fixed sample
        cal = self._levels(np.random.Generator(np.random.PCG64([o.seed, 2])), _CALIBRATION_ROWS)
        raw = self._raw_terms(cal)
        self.mean, self.std = raw.mean(axis=0), raw.std(axis=0) + 1e-12
        z = ((raw - self.mean) / self.std) @ self.coef
        lo, hi = -20.0, 20.0
        for _ in range(60):  # bisection: mean sigmoid(z + b) = positive_rate
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if np.mean(1 / (1 + np.exp(-(z + mid)))) < o.positive_rate else (lo, mid)
        self.bias = (lo + hi) / 2

    def _levels(self, rng, b: int) -> np.ndarray:
        """Zipf-like levels ``(b, F)`` in ``[0, V_f)``."""
        out = np.empty((b, len(self.V)), dtype=np.int64)
        for f, cdf in enumerate(self.probs):
            out[:, f] = np.minimum(np.searchsorted(cdf, rng.random(b), side="right"), len(cdf) - 1)
        return out

    def _raw_terms(self, x: np.ndarray) -> np.ndarray:
        """Unstandardised terms ``(b, 5)`` of levels ``x`` ``(b, F)``."""
        b = len(x)
        lin = sum(self.w[f][x[:, f]] for f in range(len(self.V)))
        fm = sum(np.einsum("bd,bd->b", self.u[i][x[:, i]], self.u[j][x[:, j]]) for i, j in self.fm_pairs)
        cross = sum(np.einsum("bd,de,be->b", self.u[i][x[:, i]], M, self.u[j][x[:, j]])
                    for (i, j), M in zip(self.cross_pairs, self.M))
        had = sum(np.prod([self.u[f][x[:, f]] for f in t], axis=0).sum(axis=1) for t in self.triples)
        q = self.u[self.query][x[:, self.query]] @ self.A                       # (b, d)
        scores = np.stack([np.einsum("bd,bd->b", q, self.u[k][x[:, k]]) for k in self.keys], axis=1)
        a = np.exp(scores - scores.max(axis=1, keepdims=True))
        a /= a.sum(axis=1, keepdims=True)                                       # (b, K)
        vals = np.stack([self.s[k][x[:, k]] for k in self.keys], axis=1)
        att = (a * vals).sum(axis=1)
        return np.stack([np.broadcast_to(t, (b,)) for t in (lin, fm, cross, had, att)], axis=1).astype(np.float64)

    def probability(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """True ``p`` ``(b,)`` and weighted standardised terms ``(b, 5)`` of levels ``x``."""
        terms = (self._raw_terms(x) - self.mean) / self.std * self.coef
        z = terms.sum(axis=1) + self.bias
        return 1.0 / (1.0 + np.exp(-z)), terms

    def sample(self, rng, b: int):
        """``(ids (b, F) int32 = level + 1, p (b,), terms (b, 5))``."""
        x = self._levels(rng, b)
        p, terms = self.probability(x)
        return (x + 1).astype(np.int32), p, terms

    def describe(self) -> dict:
        """The planted structure, for the manifest."""
        return {"terms": list(TERMS), "coefficients": self.coef.tolist(), "bias": self.bias,
                "fm_pairs": [list(map(int, p)) for p in self.fm_pairs],
                "cross_pairs": [list(map(int, p)) for p in self.cross_pairs],
                "hadamard_triples": [list(map(int, t)) for t in self.triples],
                "attention_query_field": self.query, "attention_key_fields": self.keys}


def bayes_optimal(labels: np.ndarray, probs: np.ndarray) -> dict:
    """AUC and log-loss of the true probabilities: the best any model can expect.

    >>> bayes_optimal(np.array([0, 1, 0, 1]), np.array([0.2, 0.7, 0.4, 0.6]))["auc"]
    1.0
    """
    labels = np.asarray(labels)
    out = {"log_loss": log_loss(labels, probs)}
    out["auc"] = auc(labels, probs) if 0 < labels.sum() < len(labels) else None
    return out


def synthesize(options: SynthOptions, out: str, progress: bool = False, stream=None) -> dict:
    """Write an encoded planted data set to directory ``out``; return its manifest.

    Files as :mod:`adaref.data.cache` describes, plus ``probs.npy`` ``(B,)`` float64
    (true probabilities) and ``terms.npy`` ``(B, 5)`` float32 (each term's share of the
    logit). The manifest carries the Bayes-optimal metrics of every split.
    """
    model = PlantedModel(options)
    n, F = options.rows, options.n_fields
    rng = np.random.Generator(np.random.PCG64([options.seed, 3]))
    assigner = SplitAssigner(SplitOptions(seed=options.split_seed), [n])
    with BuildDir(out) as build:
        def mm(name, dtype, shape):
            return np.lib.format.open_memmap(os.path.join(build.path, name), mode="w+", dtype=dtype, shape=shape)
        ids, labels, probs = mm("ids.npy", np.int32, (n, F)), mm("labels.npy", np.float32, (n,)), mm("probs.npy", np.float64, (n,))
        split, terms = mm("split.npy", np.int8, (n,)), mm("terms.npy", np.float32, (n, len(TERMS)))
        prog = Progress("synth", n, stream=stream, enabled=progress)
        for start in range(0, n, _CHUNK):
            b = min(_CHUNK, n - start)
            x, p, t = model.sample(rng, b)
            ids[start:start + b], probs[start:start + b], terms[start:start + b] = x, p, t
            labels[start:start + b] = (rng.random(b) < p).astype(np.float32)
            split[start:start + b] = assigner.codes_for(np.arange(start, start + b))
            prog.update(start + b, start + b)
        prog.close()
        codes = np.asarray(split)
        bayes = {}
        for k, name in enumerate(SPLIT_NAMES):
            sel = codes == k
            bayes[name] = bayes_optimal(labels[sel], probs[sel]) if sel.any() else None
        vocab_sizes = [v + 1 for v in model.V]
        write_json(os.path.join(build.path, "vocab.json"), {"dataset": "synthetic", "fields": [
            {"name": f"f{f}", "kind": "synthetic", "size": vocab_sizes[f], "special_ids": {"0": "oov"},
             "first_id": 1, "values": "level k has id k + 1"} for f in range(F)]})
        manifest = {
            "format_version": 1, "dataset": "synthetic", "preset": None,
            "options": options.manifest_options(),
            "field_names": [f"f{f}" for f in range(F)], "vocab_sizes": vocab_sizes,
            "oov_embedding": "learned", "rows": {"data_lines": n, "encoded": n},
            "splits": {name: {"rows": int((codes == k).sum()), "positives": int(labels[codes == k].sum())}
                       for k, name in enumerate(SPLIT_NAMES)},
            "positive_rate": float(np.mean(labels)), "mean_probability": float(np.mean(probs)),
            "bayes_optimal": bayes, "planted": model.describe(),
            "arrays": {"ids": "ids.npy", "labels": "labels.npy", "split": "split.npy", "vocab": "vocab.json",
                       "probs": "probs.npy", "terms": "terms.npy"},
        }
        del ids, labels, probs, split, terms
        write_json(os.path.join(build.path, "manifest.json"), manifest)
        build.commit()
    return manifest


def _hex_table(f: int, v: int) -> np.ndarray:
    """Distinct 8-hex-digit strings for the v levels of field f (a bijection mod 2^32)."""
    k = np.arange(v, dtype=np.uint64)
    h = (k * np.uint64(0x9E3779B1) + np.uint64((f * 0x85EBCA77) & 0xFFFFFFFF)) & np.uint64(0xFFFFFFFF)
    return np.array([f"{int(x):08x}" for x in h], dtype=object)


def write_criteo_text(options: SynthOptions, path: str, progress: bool = False, stream=None) -> dict:
    """Write a Criteo ``train.txt``-format file (label, I1..I13, C1..C26) of planted rows.

    Needs ``n_fields == 39``. Level k of a numeric field is written as the integer
    ``k - 1`` and level 0 as empty (missing); categorical levels become distinct
    8-hex-digit values. Returns ``{"rows", "bytes", "positive_rate"}``.
    """
    if options.n_fields != 39:
        raise OptionsError("write_criteo_text: Criteo text needs n_fields = 39 (13 numeric + 26 categorical)")
    model = PlantedModel(options)
    rng = np.random.Generator(np.random.PCG64([options.seed, 3]))
    tables = []
    for f, v in enumerate(model.V):
        if f < 13:
            tables.append(np.array([""] + [str(k) for k in range(v - 1)], dtype=object))
        else:
            tables.append(_hex_table(f, v))
    label_txt = np.array(["0", "1"], dtype=object)
    positives = 0
    prog = Progress("write criteo text", options.rows, stream=stream, enabled=progress)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="ascii", newline="\n") as fh:
        for start in range(0, options.rows, _CHUNK):
            b = min(_CHUNK, options.rows - start)
            x, p, _ = model.sample(rng, b)
            y = (rng.random(b) < p).astype(np.int64)
            positives += int(y.sum())
            cols = [label_txt[y]] + [tables[f][x[:, f] - 1] for f in range(39)]
            fh.write("\n".join(map("\t".join, zip(*cols))))
            fh.write("\n")
            prog.update(start + b, start + b)
    prog.close()
    os.replace(tmp, path)
    return {"rows": options.rows, "bytes": os.path.getsize(path), "positive_rate": positives / options.rows}
