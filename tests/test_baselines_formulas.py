"""The interaction formulas of the baselines against direct loop-form computations on tiny
inputs: FM's pairwise term (and the whole FM), the CIN of xDeepFM, PNN's inner and outer
products, the cross layers of DCN and DCN-V2, and also FiBiNET's SENET and bilinear
layers, AutoInt's interacting layer and xDeepInt's PIN layers. Each loop follows the
paper's equation index by index, in plain Python floats, from the module's own
parameters (stored (in, out) as documented)."""
import math

import numpy as np
import pytest

from adaref import Tensor
from adaref.baselines import (DCN, DCNV2, FM, AutoInt, AutoIntConfig, DCNConfig, DCNV2Config,
                              FiBiNET, FiBiNETConfig, FMConfig, XDeepInt, XDeepIntConfig)
from adaref.baselines.pnn import ProductLayer
from adaref.baselines.xdeepfm import CIN

VOCAB = [3, 4, 2, 5]
F = len(VOCAB)


def ids_batch(rng, nb=3):
    return np.stack([rng.integers(0, v, size=nb) for v in VOCAB], axis=1)


def x0_batch(seed, nb=3, f=F, d=3):
    return np.random.default_rng(seed).standard_normal((nb, f, d))


def close(a, b):
    np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float),
                               rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- FM
@pytest.mark.parametrize("oov", ["learned", "zero"])
def test_fm_whole_model_equals_rendle_eq1_loop(oov):
    rng = np.random.default_rng(3)
    model = FM(FMConfig(dim=3, embedding_oov=oov), VOCAB, rng=np.random.default_rng(0))
    model.linear.weight.data[...] = rng.standard_normal(model.linear.weight.shape)
    model.linear.bias.data[...] = 0.3
    if oov == "zero":                                   # the OOV rows stay zero, as the layer keeps them
        model.linear.weight.data[model.linear.offsets[:-1]] = 0.0
    ids = ids_batch(rng, 5)
    table, w = model.embedding.weight.data, model.linear.weight.data[:, 0]
    offsets = model.embedding.offsets
    expected = []
    for row in ids:
        v = [table[offsets[f] + row[f]] * (0.0 if oov == "zero" and row[f] == 0 else 1.0)
             for f in range(F)]
        y = 0.3 + sum(w[offsets[f] + row[f]] for f in range(F))
        for i in range(F):
            for j in range(i + 1, F):
                y += sum(v[i][d] * v[j][d] for d in range(3))
        expected.append(y)
    close(model(ids).data, expected)


# --------------------------------------------------------------------------- CIN
@pytest.mark.parametrize("layers,split,act", [((2,), False, "linear"), ((4, 3), False, "linear"),
                                              ((4, 2, 3), True, "linear"), ((2, 2), False, "relu")])
def test_cin_equals_xdeepfm_loop(layers, split, act):
    d = 3
    cin = CIN(F, d, layers, act, split, rng=np.random.default_rng(1))
    x0 = x0_batch(2, d=d)
    got = cin(Tensor(x0)).data
    for b in range(len(x0)):
        prev, pooled = x0[b].tolist(), []
        for k, h_k in enumerate(layers):
            W = getattr(cin, f"W{k}").data
            hp = len(prev)
            xk = []
            for h in range(h_k):
                row = []
                for dd in range(d):
                    s = sum(W[i * F + j, h] * prev[i][dd] * x0[b, j, dd]
                            for i in range(hp) for j in range(F))
                    row.append(max(s, 0.0) if act == "relu" else s)
                xk.append(row)
            last = k == len(layers) - 1
            keep, out = (xk, xk) if last or not split else (xk[:h_k // 2], xk[h_k // 2:])
            pooled += [sum(m) for m in out]
            prev = keep
        close(got[b], pooled)


# --------------------------------------------------------------------------- PNN
@pytest.mark.parametrize("product,form", [("inner", "kernel"), ("outer", "kernel"), ("outer", "sum"),
                                          ("both", "kernel"), ("both", "sum")])
def test_pnn_products_equal_loops(product, form):
    d = 3
    layer = ProductLayer(F, d, product, form, rng=np.random.default_rng(4))
    x0 = x0_batch(5, d=d)
    got = layer(Tensor(x0)).data
    pairs = [(i, j) for i in range(F) for j in range(i + 1, F)]
    for b in range(len(x0)):
        e = x0[b]
        expected = []
        if product != "outer":
            expected += [sum(e[i, a] * e[j, a] for a in range(d)) for i, j in pairs]
        if product != "inner" and form == "kernel":
            K = layer.K.data
            expected += [sum(e[i, a] * K[p, a, c] * e[j, c] for a in range(d) for c in range(d))
                         for p, (i, j) in enumerate(pairs)]
        if product != "inner" and form == "sum":
            s = [sum(e[f, a] for f in range(F)) for a in range(d)]
            expected += [s[a] * s[c] for a in range(d) for c in range(d)]
        assert got.shape[1] == layer.out_features
        close(got[b], expected)


# --------------------------------------------------------------------------- cross networks
def test_dcn_cross_layers_equal_eq3_loop():
    model = DCN(DCNConfig(dim=2, cross_layers=3, hidden=(3,)), VOCAB, rng=np.random.default_rng(6))
    for layer in model.cross:                                         # nonzero biases
        layer.b.data[...] = np.random.default_rng(7).standard_normal(layer.b.shape)
    x0 = x0_batch(8, d=2).reshape(3, -1)
    x = Tensor(x0)
    for layer in model.cross:
        x = layer(x, Tensor(x0))
    n = x0.shape[1]
    for b in range(len(x0)):
        xl = x0[b].tolist()
        for layer in model.cross:                                     # x0 x_l^T w + b + x_l
            w, bias = layer.w.data, layer.b.data
            s = sum(xl[j] * w[j] for j in range(n))
            xl = [x0[b, i] * s + bias[i] + xl[i] for i in range(n)]
        close(x.data[b], xl)


@pytest.mark.parametrize("structure", ["parallel", "stacked"])
def test_dcn_v2_cross_layers_equal_eq1_loop(structure):
    model = DCNV2(DCNV2Config(dim=2, cross_layers=2, hidden=(3,), structure=structure), VOCAB,
                  rng=np.random.default_rng(9))
    for layer in model.cross:
        layer.b.data[...] = np.random.default_rng(10).standard_normal(layer.b.shape)
    x0 = x0_batch(11, d=2)
    got = model.cross_network(Tensor(x0)).data.reshape(3, -1)
    flat = x0.reshape(3, -1)
    n = flat.shape[1]
    for b in range(len(flat)):
        xl = flat[b].tolist()
        for layer in model.cross:                                     # x0 * (W x_l + b) + x_l
            W, bias = layer.W.data, layer.b.data                      # W stored (in, out)
            xl = [flat[b, i] * (sum(W[j, i] * xl[j] for j in range(n)) + bias[i]) + xl[i]
                  for i in range(n)]
        close(got[b], xl)


# --------------------------------------------------------------------------- FiBiNET
@pytest.mark.parametrize("kind", ["all", "each", "interaction"])
def test_fibinet_senet_and_bilinear_equal_loops(kind):
    d = 3
    model = FiBiNET(FiBiNETConfig(dim=d, bilinear=kind, reduction_ratio=2, hidden=(2,)), VOCAB,
                    rng=np.random.default_rng(12))
    x0 = x0_batch(13, d=d)
    senet = model.senet(Tensor(x0)).data
    bil = model.bilinear(Tensor(x0)).data
    W1, W2, W = model.senet.W1.data, model.senet.W2.data, model.bilinear.W.data
    r = W1.shape[1]
    pairs = [(i, j) for i in range(F) for j in range(i + 1, F)]
    for b in range(len(x0)):
        e = x0[b]
        z = [sum(e[f]) / d for f in range(F)]
        a1 = [max(sum(z[f] * W1[f, k] for f in range(F)), 0.0) for k in range(r)]
        a2 = [max(sum(a1[k] * W2[k, f] for k in range(r)), 0.0) for f in range(F)]
        close(senet[b], [[a2[f] * e[f, c] for c in range(d)] for f in range(F)])
        for p, (i, j) in enumerate(pairs):
            Wp = {"all": W, "each": W[i] if kind == "each" else None,
                  "interaction": W[p] if kind == "interaction" else None}[kind]
            expected = [sum(e[i, a] * Wp[a, c] for a in range(d)) * e[j, c] for c in range(d)]
            close(bil[b, p], expected)


# --------------------------------------------------------------------------- AutoInt
def test_autoint_interacting_layer_equals_loop():
    d, heads, dh = 3, 2, 2
    model = AutoInt(AutoIntConfig(dim=d, layers=1, heads=heads, head_size=dh), VOCAB,
                    rng=np.random.default_rng(14))
    layer = model.layers[0]
    x0 = x0_batch(15, d=d)
    got = layer(Tensor(x0)).data
    Wq, Wk, Wv, Wr = (p.data for p in (layer.Wq, layer.Wk, layer.Wv, layer.Wres))
    proj = lambda W, e, c: sum(e[a] * W[a, c] for a in range(d))     # noqa: E731  (e W)[c]
    for b in range(len(x0)):
        e = x0[b]
        for m in range(F):
            out = []
            for h in range(heads):
                cols = range(h * dh, (h + 1) * dh)
                score = [sum(proj(Wq, e[m], c) * proj(Wk, e[k], c) for c in cols) for k in range(F)]
                top = max(score)
                alpha = [math.exp(s - top) for s in score]
                alpha = [a / sum(alpha) for a in alpha]
                out += [sum(alpha[k] * proj(Wv, e[k], c) for k in range(F)) for c in cols]
            expected = [max(out[c] + proj(Wr, e[m], c), 0.0) for c in range(heads * dh)]
            close(got[b, m], expected)


# --------------------------------------------------------------------------- xDeepInt
@pytest.mark.parametrize("subspaces", [1, None])
def test_xdeepint_logit_equals_pin_loop(subspaces):
    d = 2
    model = XDeepInt(XDeepIntConfig(dim=d, layers=2, subspaces=subspaces), VOCAB,
                     rng=np.random.default_rng(16))
    model.b.data[...] = -0.2
    ids = ids_batch(np.random.default_rng(17), 3)
    x0 = model.embedding(ids).data
    h = d if subspaces is None else subspaces
    s = d // h
    for b, row in enumerate(ids):
        # pieces field-major: piece f*h + t holds x[f, t*s:(t+1)*s]
        piece = lambda x, n: [x[n // h][(n % h) * s + u] for u in range(s)]   # noqa: E731
        x = x0[b].tolist()
        for layer in model.pin:                                       # X_l = X_{l-1} o (W X_0) + X_{l-1}
            W = layer.W.data
            new = [[0.0] * d for _ in range(F)]
            for n in range(F * h):
                z = [sum(W[m, n] * piece(x0[b], m)[u] for m in range(F * h)) for u in range(s)]
                for u in range(s):
                    f, c = n // h, (n % h) * s + u
                    new[f][c] = x[f][c] * z[u] + x[f][c]
            x = new
        expected = sum(model.w.data[f] * sum(x[f]) for f in range(F)) - 0.2
        close(model(ids).data[b], expected)
