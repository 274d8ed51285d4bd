"""An independent PyTorch (float64) implementation of AdaEnsemble, written from the paper
(§3, eqs. 1-17, Algorithm 1) and ``paper-decisions.md`` (rows 4-19), for cross-checking
adaref. It is deliberately *not* a translation of adaref's code:

* weights are kept in PyTorch's own layouts -- ``Linear`` weights (out, in), used with
  ``F.linear``; Conv1D kernels (out_channels, in_channels, width), used with
  ``F.conv1d`` -- so that adaref's documented layouts ((in, out); (K, C, O)) are checked
  by the conversion in :func:`to_torch` / :func:`grads_to_adaref`;
* the sparse dispatcher (eq. 12) is computed **densely**: every expert runs on every
  example and the combine weights (zero off the top-k set) select; the hard exit of
  Algorithm 1 is computed as the full-depth network read at each example's exit layer
  (the identity paper-decisions row 19 requires), not as a recursion;
* attention uses ``F.scaled_dot_product_attention``, the instance norm
  ``F.instance_norm``, the layer norm ``F.layer_norm``, pooling ``F.max_pool1d``;
* L2 normalisation is TensorFlow's ``l2_normalize``: x * rsqrt(max(sum x^2, 1e-12)).

Parameters are a dict ``name -> torch tensor`` with adaref's dotted names (so the two
can be matched one to one), in the torch layouts above.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

DT = torch.float64


# ---------------------------------------------------------------------------------
# Parameter conversion adaref <-> torch layouts
# ---------------------------------------------------------------------------------
def _is_lookup_table(name: str) -> bool:
    """2-D parameters that are row tables (not (in, out) matrices)."""
    return name.endswith("embedding.weight") or name.endswith("embeddings")


def _layout(name: str, ndim: int) -> str:
    if ndim == 2 and not _is_lookup_table(name):
        return "matrix"           # adaref (in, out)  -> torch (out, in)
    if ndim == 3:
        return "conv"             # adaref (K, C, O)  -> torch (O, C, K)
    return "same"


def to_torch(named: dict, requires_grad: bool = True) -> dict:
    """adaref arrays by name -> float64 torch leaves in torch layouts."""
    out = {}
    for name, a in named.items():
        a = np.asarray(a, dtype=np.float64)
        kind = _layout(name, a.ndim)
        if kind == "matrix":
            a = a.T
        elif kind == "conv":
            a = np.transpose(a, (2, 1, 0))
        out[name] = torch.tensor(np.ascontiguousarray(a), dtype=DT, requires_grad=requires_grad)
    return out


def grads_to_adaref(params: dict) -> dict:
    """The .grad of each torch leaf, converted back to adaref's layout (zeros if None)."""
    out = {}
    for name, t in params.items():
        g = np.zeros(tuple(t.shape)) if t.grad is None else t.grad.detach().numpy()
        kind = _layout(name, g.ndim)
        if kind == "matrix":
            g = g.T
        elif kind == "conv":
            g = np.transpose(g, (2, 1, 0))
        out[name] = g
    return out


def sub(params: dict, prefix: str) -> dict:
    """The parameters under ``prefix.`` with the prefix removed."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in params.items() if k.startswith(prefix + ".")}


# ---------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------
def act(name: str, x):
    if name == "linear":
        return x
    if name == "relu":
        return torch.relu(x)
    if name == "gelu":                     # Keras 'gelu' / torch default: exact erf form
        return F.gelu(x)
    if name == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "tanh":
        return torch.tanh(x)
    raise ValueError(name)


# ---------------------------------------------------------------------------------
# Experts (§3.2), x = X_{l-1}, x0 = X_0, both (B, F, D)
# ---------------------------------------------------------------------------------
def dense_expert(p, cfg, x, x0):
    """Eq. 2 on the flattened map (row 4): sigma(W vec(X) + b); 'gated' multiplies by
    2 sigmoid(W2 relu(W1 vec(X0) + b1) + b2) (authors' GatedDense)."""
    b_, f, d = x.shape
    y = act(cfg.activation, F.linear(x.reshape(b_, f * d), p["W"], p["b"]))
    if cfg.form == "gated":
        h = torch.relu(F.linear(x0.reshape(b_, f * d), p["W1"], p["b1"]))
        y = y * (2.0 * torch.sigmoid(F.linear(h, p["W2"], p["b2"])))
    return y.reshape(b_, f, d)


def conv_expert(p, cfg, x, x0):
    """Eq. 3 (row 5): Dense(Pool(Conv1D(Reshape(X)))), channels-last flatten as Keras."""
    b_, f, d = x.shape
    if cfg.reshape == "fields":
        seq = x.transpose(1, 2)                                  # (B, C=D, L=F)
    else:
        r = F.linear(x.reshape(b_, f * d), p["Wr"], p["br"])    # (B, L), linear
        seq = r.unsqueeze(1)                                     # (B, C=1, L)
    k = p["Wc"].shape[-1]
    if cfg.padding == "same":                                    # TF: extra zero on the right
        left = (k - 1) // 2
        seq = F.pad(seq, (left, k - 1 - left))
    h = act(cfg.activation, F.conv1d(seq, p["Wc"], p["bc"]))     # (B, O, T)
    h = F.max_pool1d(h, cfg.pool, cfg.pool)                      # (B, O, T // pool)
    flat = h.transpose(1, 2).reshape(b_, -1)                     # Keras Flatten of (T_p, O)
    y = act(cfg.out_activation, F.linear(flat, p["Wo"], p["bo"]))
    return y.reshape(b_, f, d)


def mhsa_expert(p, cfg, x, x0):
    """Eq. 4 (row 6): fields are tokens; h heads of size dh; per-token output Dense;
    optional instance norm over the fields; 'token' or 'flatten' readout."""
    b_, f, d = x.shape
    heads = cfg.heads
    a = p["Wq"].shape[0]
    dh = a // heads

    def proj(w, bias):
        y = act(cfg.qkv_activation, F.linear(x, w, bias))        # (B, F, A)
        return y.reshape(b_, f, heads, dh).transpose(1, 2)       # (B, h, F, dh)

    q, k, v = proj(p["Wq"], p["bq"]), proj(p["Wk"], p["bk"]), proj(p["Wv"], p["bv"])
    o = F.scaled_dot_product_attention(q, k, v)                  # softmax(q k^T / sqrt(dh)) v
    o = o.transpose(1, 2).reshape(b_, f, a)                      # concat heads
    z = act(cfg.out_activation, F.linear(o, p["Wo"], p["bo"]))   # (B, F, P)
    if cfg.norm == "instance":                                   # per channel, over fields
        z = F.instance_norm(z.transpose(1, 2), weight=p["gamma"], bias=p["beta"],
                            eps=cfg.norm_eps).transpose(1, 2)
    if cfg.readout == "token":
        return z
    return F.linear(z.reshape(b_, -1), p["Wf"], p["bf"]).reshape(b_, f, d)


def pin_expert(p, cfg, x, x0):
    """Eq. 5 (row 7): X_l = X_{l-1} o (W X_0), with xDeepInt's H subspaces per field."""
    b_, f, d = x.shape
    h = d if cfg.subspaces is None else cfg.subspaces
    s = d // h
    x0p = x0.reshape(b_, f * h, s)                               # pieces of size s
    xp = x.reshape(b_, f * h, s)
    z = torch.einsum("ij,bjs->bis", p["W"], x0p)                 # torch layout: W[out, in]
    return (xp * z).reshape(b_, f, d)


def cross_expert(p, cfg, x, x0):
    """Eq. 6 (row 8): X_0 o (W X_{l-1}) + b, or the DCN-V2 form X_0 o (W X_{l-1} + b)."""
    b_, f, d = x.shape
    xf, x0f = x.reshape(b_, f * d), x0.reshape(b_, f * d)
    if cfg.bias == "outside":
        y = x0f * F.linear(xf, p["W"]) + p["b"]
    else:
        y = x0f * F.linear(xf, p["W"], p["b"])
    return y.reshape(b_, f, d)


EXPERTS = {"dense": dense_expert, "conv": conv_expert, "mhsa": mhsa_expert,
           "pin": pin_expert, "cross": cross_expert}


# ---------------------------------------------------------------------------------
# Gate (eqs. 7-11), dispatcher (eq. 12), regularisers (eqs. 13-16, z-loss)
# ---------------------------------------------------------------------------------
def l2_normalize(v):
    """TensorFlow's tf.math.l2_normalize: v * rsqrt(max(sum v^2, 1e-12))."""
    return v * torch.rsqrt(torch.clamp((v * v).sum(-1, keepdim=True), min=1e-12))


def topk_mask(g, k):
    """Eq. 11's top-k set; equal scores: the lowest index wins (row 12)."""
    order = torch.sort(g, dim=-1, descending=True, stable=True).indices[..., :k]
    return torch.zeros_like(g, dtype=torch.bool).scatter(-1, order, True)


def gate_logits(p, cfg, x0):
    """Eqs. 7-9 without jitter: g = cos(FFN(vec X0), e_j) / tau."""
    if cfg.stop_gradient:
        x0 = x0.detach()
    flat = x0.reshape(x0.shape[0], -1)
    h = F.linear(act(cfg.activation, F.linear(flat, p["reduce.weight"], p["reduce.bias"])),
                 p["project.weight"], p["project.bias"])                # (B, d)
    s = l2_normalize(h) @ l2_normalize(p["embeddings"]).T               # (B, N), eq. 8
    tau = torch.exp(p["log_tau"]) if cfg.temperature == "log" else p["tau"]
    return s / tau                                                      # eq. 9


def gate(p, cfg, x0, k):
    """Returns (logits, probs, mask, gates, weights), as eq. 10 and row 13."""
    g = gate_logits(p, cfg, x0)
    mask = topk_mask(g, k)
    probs = torch.softmax(g, -1)
    gates = torch.softmax(g.masked_fill(~mask, float("-inf")), -1)     # eq. 10
    if cfg.combine == "gates":
        w = gates
    elif cfg.combine == "switch":
        w = probs * mask
    else:                                                               # unweighted
        w = mask.to(DT)
    return g, probs, mask, gates, w


def moe_combine(x, x0, weights, expert_fns):
    """Eq. 12, densely: y = sum_j w_j E_j(x), w_j = 0 off the selected set."""
    y = torch.zeros_like(x)
    for j, fn in enumerate(expert_fns):
        y = y + weights[:, j, None, None] * fn(x, x0)
    return y


def load_fractions(probs, mask, mode, reached=None):
    """f_j (eq. 14 argmax, or the top-k membership fraction) over the reached examples."""
    n = probs.shape[1]
    if reached is None:
        reached = torch.ones(probs.shape[0], dtype=torch.bool)
    if mode == "argmax":
        sel = F.one_hot(torch.argmax(probs, -1), n).to(DT)   # torch.argmax: first maximal index
    else:
        sel = mask.to(DT)
    return (sel[reached]).mean(0)


def distribution_loss(probs, f, prior=None, reached=None):
    """Eq. 16 without lambda: sum_j f_j P_j / w_j; P_j eq. 15 (gradient through P only)."""
    n = probs.shape[1]
    w = torch.full((n,), 1.0 / n, dtype=DT) if not prior else torch.tensor(prior, dtype=DT)
    if reached is None:
        reached = torch.ones(probs.shape[0], dtype=torch.bool)
    P = probs[reached].mean(0)
    return (f.detach() * P / w).sum()


def balance_loss(probs, f):
    """Eq. 13 without lambda: N sum_j f_j P_j."""
    return probs.shape[1] * (f.detach() * probs.mean(0)).sum()


def z_loss(g, reached=None):
    """Router z-loss: mean over examples of logsumexp(g)^2."""
    lse = torch.logsumexp(g, -1)
    if reached is not None:
        lse = lse[reached]
    return (lse * lse).mean()


# ---------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------
def embed(p, vocab_sizes, ids, oov):
    """Eq. 1: one table per field (stored stacked, field f at rows offsets[f]:...)."""
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(vocab_sizes)[:-1]]))
    idt = torch.as_tensor(ids, dtype=torch.int64)
    x0 = F.embedding(idt + offsets, p["embedding.weight"])            # (B, F, D)
    if oov == "zero":                                                  # row 3 upstream
        x0 = x0 * (idt != 0).unsqueeze(-1).to(DT)
    return x0


def layer_forward(p, mcfg, expert_cfgs, x, x0, k):
    """One SparseMoE layer: gate (on X_0, row 9), eq. 12, residual, LayerNorm (row 15)."""
    names = mcfg.moe.experts
    g, probs, mask, gates, w = gate(sub(p, "gate"), mcfg.gate,
                                    x0 if mcfg.gate.input == "x0" else x, k)
    fns = [(lambda n: (lambda a, a0: EXPERTS[n](sub(p, f"experts.{n}"), expert_cfgs[n], a, a0)))(n)
           for n in names]
    out = x + moe_combine(x, x0, w, fns)
    if mcfg.moe.norm == "layernorm":
        out = F.layer_norm(out, (out.shape[-1],), p["norm.gain"], p["norm.bias"], eps=1e-5)
    return out, dict(logits=g, probs=probs, mask=mask, gates=gates, weights=w)


def model_forward(p, mcfg, expert_cfgs, vocab_sizes, ids, k, form):
    """AdaEnsemble forward in 'soft', 'straight_through', 'hard' (Algorithm 1 read off
    the full-depth network at each example's exit layer) or 'full' (no controller).

    Returns dict(prob, logit, expert_loss, depth_loss, z_loss, exit_depth, masks).
    """
    L = mcfg.num_layers
    x0 = embed(p, vocab_sizes, ids, mcfg.embedding_oov)
    b_ = x0.shape[0]
    ctl = mcfg.controller
    zl = []
    depth_g = depth_p = depth_mask = None
    if ctl.enabled:
        depth_g = gate_logits(sub(p, "controller.gate"), ctl.gate, x0)     # (B, L)
        depth_p = torch.softmax(depth_g, -1)
        depth_mask = topk_mask(depth_g, 1)
        exit_depth = torch.argmax(depth_mask.to(torch.int64), -1) + 1      # 1..L
        zl.append(z_loss(depth_g))
    else:
        exit_depth = torch.full((b_,), L)
    x = x0
    layer_logits, expert_loss, masks = [], 0.0, []
    for l in range(L):
        x, r = layer_forward(sub(p, f"layers.{l}"), mcfg, expert_cfgs, x, x0, k)
        reached = exit_depth >= l + 1 if form == "hard" else torch.ones(b_, dtype=torch.bool)
        masks.append(r["mask"])
        if ctl.enabled:
            est = sub(p, f"estimators.{l}")
            layer_logits.append(F.linear(x.reshape(b_, -1), est["linear.weight"],
                                         est["linear.bias"]).reshape(b_))
        if not reached.any():
            continue        # Algorithm 1 never runs a layer no example reaches (row 19 guard)
        f = load_fractions(r["probs"], r["mask"], mcfg.moe.load_fraction, reached)
        expert_loss = expert_loss + distribution_loss(r["probs"], f, mcfg.moe.expert_prior, reached)
        zl.append(z_loss(r["logits"], reached))
    if not ctl.enabled:
        est = sub(p, "estimators.0")
        logit = F.linear(x.reshape(b_, -1), est["linear.weight"], est["linear.bias"]).reshape(b_)
        prob = torch.sigmoid(logit)
    else:
        logits = torch.stack(layer_logits, 1)                               # (B, L)
        if form == "hard":
            logit = logits.gather(1, (exit_depth - 1)[:, None]).reshape(b_)
            prob = torch.sigmoid(logit)
        elif form == "soft":
            logit = None
            prob = (depth_p * torch.sigmoid(logits)).sum(1)
        else:                                                               # straight-through
            logit = None
            wts = depth_mask.to(DT) + depth_p - depth_p.detach()
            prob = (wts * torch.sigmoid(logits)).sum(1)
    depth_loss = None
    if ctl.enabled:
        fd = load_fractions(depth_p, depth_mask, "argmax")
        depth_loss = distribution_loss(depth_p, fd, ctl.depth_prior)
    zsum = sum(zl[1:], zl[0]) if mcfg.moe.z_loss else None
    return dict(prob=prob, logit=logit, expert_loss=expert_loss, depth_loss=depth_loss,
                z_loss=zsum, exit_depth=exit_depth, masks=masks)


# ---------------------------------------------------------------------------------
# Optimisers
# ---------------------------------------------------------------------------------
class McMahanFTRL:
    """FTRL-Proximal, McMahan et al. (KDD 2013) Algorithm 1, transcribed per coordinate.

    State z, n; the weight used at a step is computed from (z, n) *before* the update
    ("for i in I(x): w_i = 0 if |z_i| <= l1 else -(z_i - sgn(z_i) l1) / ((beta +
    sqrt(n_i)) / alpha + l2)"), then "sigma_i = (sqrt(n_i + g_i^2) - sqrt(n_i)) / alpha;
    z_i += g_i - sigma_i w_i; n_i += g_i^2".
    """

    def __init__(self, shape, alpha, beta, l1, l2, z0=None):
        self.alpha, self.beta, self.l1, self.l2 = alpha, beta, l1, l2
        self.z = np.zeros(shape) if z0 is None else np.array(z0, dtype=float)
        self.n = np.zeros(shape)

    def weights(self):
        out = np.zeros_like(self.z)
        for i in np.ndindex(self.z.shape):
            z, n = self.z[i], self.n[i]
            if abs(z) > self.l1:
                out[i] = -(z - math.copysign(self.l1, z)) / ((self.beta + math.sqrt(n)) / self.alpha
                                                             + self.l2)
        return out

    def step(self, g):
        w = self.weights()
        for i in np.ndindex(self.z.shape):
            sigma = (math.sqrt(self.n[i] + g[i] ** 2) - math.sqrt(self.n[i])) / self.alpha
            self.z[i] += g[i] - sigma * w[i]
            self.n[i] += g[i] ** 2
        return self.weights()
