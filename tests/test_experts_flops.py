"""``flops()`` of every expert against an independent count.

Each expert is re-implemented here as plain scalar loops over Python floats that
count every operation as it is performed (a :class:`Counter`), following the
convention of :mod:`adaref.experts.base`: a multiply-add counts 2, any other
arithmetic op, comparison, exp/sqrt or activation evaluation counts 1 (``linear``
counts 0). The loops also compute the expert's output, which must equal the expert's
own forward pass: the count is of the computation actually described.
"""
import math

import numpy as np
import pytest
from scipy.special import erf

from adaref import Tensor
from adaref.experts import build_expert, expert_configs


class Counter:
    def __init__(self):
        self.n = 0

    def madd(self, acc, a, b):            # acc + a * b
        self.n += 2
        return acc + a * b

    def add(self, a, b):
        self.n += 1
        return a + b

    def sub(self, a, b):
        self.n += 1
        return a - b

    def mul(self, a, b):
        self.n += 1
        return a * b

    def div(self, a, b):
        self.n += 1
        return a / b

    def exp(self, a):
        self.n += 1
        return math.exp(a)

    def sqrt(self, a):
        self.n += 1
        return math.sqrt(a)

    def greater(self, a, b):
        self.n += 1
        return a > b

    def act(self, name, v):
        if name == "linear":
            return v
        self.n += 1
        return {"relu": lambda t: t if t > 0 else 0.0,
                "gelu": lambda t: t * 0.5 * (1 + erf(t / math.sqrt(2))),
                "sigmoid": lambda t: 1 / (1 + math.exp(-t)),
                "tanh": math.tanh}[name](v)

    def dense(self, vec, W, b, act):      # act(vec W + b), W (n_in, n_out)
        out = []
        for o in range(W.shape[1]):
            acc = 0.0
            for i in range(W.shape[0]):
                acc = self.madd(acc, vec[i], W[i, o])
            out.append(self.act(act, self.add(acc, b[o])))
        return out


def loop_dense(e, x, x0, c):
    cfg = e.config
    y = c.dense(x.ravel(), e.W.data, e.b.data, cfg.activation)
    if cfg.form == "gated":
        h = c.dense(x0.ravel(), e.W1.data, e.b1.data, "relu")
        z = c.dense(h, e.W2.data, e.b2.data, "linear")
        y = [c.mul(y[i], c.mul(c.act("sigmoid", z[i]), 2.0)) for i in range(len(y))]
    return np.array(y).reshape(x.shape)


def loop_pin(e, x, x0, c):
    h, s = e.subspaces, e.piece
    n = e.num_fields * h
    xp, x0p = x.reshape(n, s), x0.reshape(n, s)
    y = np.zeros((n, s))
    for i in range(n):
        for t in range(s):
            acc = 0.0
            for j in range(n):
                acc = c.madd(acc, x0p[j, t], e.W.data[j, i])
            y[i, t] = c.mul(xp[i, t], acc)
    return y.reshape(x.shape)


def loop_cross(e, x, x0, c):
    xf, x0f = x.ravel(), x0.ravel()
    y = []
    for o in range(len(xf)):
        acc = 0.0
        for i in range(len(xf)):
            acc = c.madd(acc, xf[i], e.W.data[i, o])
        if e.config.bias == "outside":
            y.append(c.add(c.mul(x0f[o], acc), e.b.data[o]))
        else:
            y.append(c.mul(x0f[o], c.add(acc, e.b.data[o])))
    return np.array(y).reshape(x.shape)


def loop_conv(e, x, x0, c):
    cfg = e.config
    if cfg.reshape == "fields":
        seq = x.copy()                                          # (L, C)
    else:
        seq = np.array(c.dense(x.ravel(), e.Wr.data, e.br.data, "linear")).reshape(-1, 1)
    length, channels = seq.shape
    Wc, pad = e.Wc.data, e.pad[0]
    steps = length + sum(e.pad) - cfg.width + 1
    h = np.zeros((steps, cfg.filters))
    for t in range(steps):
        for o in range(cfg.filters):
            acc = 0.0
            for j in range(cfg.width):
                for ch in range(channels):
                    s = t + j - pad
                    value = seq[s, ch] if 0 <= s < length else 0.0
                    acc = c.madd(acc, value, Wc[j, ch, o])   # padding zeros counted
            h[t, o] = c.act(cfg.activation, c.add(acc, e.bc.data[o]))
    pooled = np.zeros((steps // cfg.pool, cfg.filters))
    for t in range(pooled.shape[0]):
        for o in range(cfg.filters):
            best = h[t * cfg.pool, o]
            for r in range(1, cfg.pool):
                v = h[t * cfg.pool + r, o]
                if c.greater(v, best):
                    best = v
            pooled[t, o] = best
    return np.array(c.dense(pooled.ravel(), e.Wo.data, e.bo.data, cfg.out_activation)
                    ).reshape(x.shape)


def loop_mhsa(e, x, x0, c):
    cfg = e.config
    f, dh = e.num_fields, e.head_size
    proj = lambda W, b: np.array([c.dense(x[i], W.data, b.data, cfg.qkv_activation)  # noqa: E731
                                  for i in range(f)])
    q, k, v = proj(e.Wq, e.bq), proj(e.Wk, e.bk), proj(e.Wv, e.bv)         # (F, A)
    o = np.zeros_like(q)
    scale = 1 / math.sqrt(dh)
    for hh in range(cfg.heads):
        cols = range(hh * dh, (hh + 1) * dh)
        for i in range(f):
            s = []
            for j in range(f):
                acc = 0.0
                for t in cols:
                    acc = c.madd(acc, q[i, t], k[j, t])
                s.append(c.mul(acc, scale))
            m = s[0]
            for j in range(1, f):
                if c.greater(s[j], m):
                    m = s[j]
            ex = [c.exp(c.sub(sj, m)) for sj in s]
            total = 0.0
            for ej in ex:
                total = c.add(total, ej)
            a = [c.div(ej, total) for ej in ex]
            for t in cols:
                acc = 0.0
                for j in range(f):
                    acc = c.madd(acc, a[j], v[j, t])
                o[i, t] = acc
    z = np.array([c.dense(o[i], e.Wo.data, e.bo.data, cfg.out_activation) for i in range(f)])
    if cfg.norm == "instance":
        for p in range(z.shape[1]):
            total = 0.0
            for i in range(f):
                total = c.add(total, z[i, p])
            mean = c.div(total, f)
            centred = [c.sub(z[i, p], mean) for i in range(f)]
            sq = 0.0
            for d in centred:
                sq = c.add(sq, c.mul(d, d))
            root = c.sqrt(c.add(c.div(sq, f), cfg.norm_eps))
            for i in range(f):
                z[i, p] = c.add(c.mul(c.div(centred[i], root), e.gamma.data[p]), e.beta.data[p])
    if cfg.readout == "token":
        return z
    return np.array(c.dense(z.ravel(), e.Wf.data, e.bf.data, "linear")).reshape(x.shape)


LOOPS = {"dense": loop_dense, "pin": loop_pin, "cross": loop_cross, "conv": loop_conv,
         "mhsa": loop_mhsa}

VARIANTS = [(name, preset, None) for preset in ("paper", "upstream") for name in LOOPS] + [
    ("dense", "paper", {"activation": "gelu", "form": "gated", "gate_reduction": 3}),
    ("pin", "paper", {"subspaces": 1}),
    ("pin", "paper", {"subspaces": 2}),
    ("conv", "paper", {"width": 4, "padding": "same", "pool": 3, "activation": "tanh",
                       "out_activation": "relu", "filters": 2}),
    ("conv", "paper", {"reshape": "dense", "length": 5, "width": 2, "padding": "same"}),
    ("mhsa", "paper", {"heads": 3, "head_size": 1, "out_size": 2, "norm": "instance",
                       "readout": "flatten", "qkv_activation": "gelu"}),
]


@pytest.mark.parametrize("name,preset,override", VARIANTS,
                         ids=[f"{n}-{p}-{i}" for i, (n, p, _) in enumerate(VARIANTS)])
def test_flops_equal_an_operation_count_of_scalar_loops(name, preset, override):
    config = expert_configs(preset)[name]
    if override:
        config = config.replace(**override)
    nf, dim = (7, 4) if name == "conv" and config.reshape == "dense" else (5, 4)
    expert = build_expert(name, config, nf, dim, rng=np.random.default_rng(3))
    rng = np.random.default_rng(4)
    for p in expert.parameters():                       # nonzero biases, gains
        p.data[...] = p.data + 0.1 * rng.standard_normal(p.shape)
    x, x0 = rng.standard_normal((1, nf, dim)), rng.standard_normal((1, nf, dim))
    counter = Counter()
    reference = LOOPS[name](expert, x[0], x0[0], counter)
    out = expert(Tensor(x), Tensor(x0)).data[0]
    np.testing.assert_allclose(out, reference, rtol=1e-9, atol=1e-12)
    assert expert.flops() == counter.n


def test_flops_at_the_benchmark_shape():
    """The formulas written out for F = 39, D = 16 (paper preset)."""
    f, d = 39, 16
    n = f * d
    flops = {name: build_expert(name, cfg, f, d, rng=np.random.default_rng(0)).flops()
             for name, cfg in expert_configs("paper").items()}
    assert flops["dense"] == 2 * n * n + 2 * n
    assert flops["cross"] == 2 * n * n + 2 * n
    assert flops["pin"] == 2 * n * n + n
    assert flops["conv"] == 39 * 16 * (2 * 3 * 16 + 1 + 1) + 19 * 16 + 2 * 304 * n + n
    heads, dh = 2, 8
    assert flops["mhsa"] == (3 * f * (2 * d * d + d) + heads * (4 * f * f * dh + f * f
                             + f * (5 * f - 1)) + f * (2 * d * d + d))
