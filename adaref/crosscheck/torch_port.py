"""An independent PyTorch implementation of AdaEnsemble: the example adapter of the
cross-check toolkit (``python -m adaref.crosscheck test adaref.crosscheck.torch_port:build``).

It is written from the paper (§3, eqs. 1-18, Algorithm 1) and the decisions adaref
documents next to each equation (the ``paper`` and ``upstream`` presets), with
``torch.nn.functional``; it is deliberately *not* a translation of
adaref's NumPy code:

* weights are kept in PyTorch's own layouts -- ``nn.Linear``-style weights (out, in),
  used with ``F.linear``; Conv1D kernels (O, C, K), used with ``F.conv1d``; the conv
  expert flattens its pooled map (B, O, T_p) channel-major, torch's natural
  ``h.reshape(B, -1)`` (input axis o*T_p + t of the output Dense, where adaref and
  Keras flatten time-major, t*O + o). adaref's layouts are converted by
  :func:`layout_mapping` (:func:`adaref.crosscheck.mapping.torch_mapping`), in and back
  out for the gradients, so the documented layouts are checked too;
* the sparse dispatcher of eq. 12 is computed **densely**: every expert runs on every
  example and the combine weights (zero off the top-k set) select; the hard exit of
  Algorithm 1 is the full-depth network read at each example's exit layer (the identity
  that Algorithm 1 rests on), not a recursion; the regularisers of the hard form are
  taken over the examples that reach each layer;
* attention is ``F.scaled_dot_product_attention``, the instance norm
  ``F.instance_norm``, the layer norm ``F.layer_norm``, pooling ``F.max_pool1d``, the
  log-loss ``F.binary_cross_entropy_with_logits`` / ``F.binary_cross_entropy``;
* L2 normalisation is TensorFlow's ``l2_normalize``: x * rsqrt(max(sum x^2, 1e-12)).

The per-row names of :data:`adaref.model.trace.NAMES` (the rows reaching a layer, the
rows of each expert, the examples exiting at a layer) are read off the dense
computation by indexing.

:func:`build` is the factory of the adapter protocol (:mod:`adaref.crosscheck.adapter`);
:class:`TorchPort` answers ``forward`` and ``gradients``. The functional pieces
(:func:`gate`, the experts in :data:`EXPERTS`, :func:`model_forward`, ...) take a dict
``name -> torch tensor`` in the torch layouts above.

``import adaref`` never imports this module (it needs PyTorch).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

try:
    import torch
    import torch.nn.functional as F
except ImportError:         # the module still imports (doctest collection); build() says why
    torch = F = None

NEEDS_TORCH = ("adaref.crosscheck.torch_port needs PyTorch: pip install 'adaref[torch]' (or the CPU "
               "wheel alone: pip install torch --index-url https://download.pytorch.org/whl/cpu)")

__all__ = ["build", "TorchPort", "layout_mapping", "torch_params", "adaref_grads",
           "expert_configs_of", "model_forward", "objective", "layer_forward", "embed",
           "gate", "gate_logits", "topk_mask", "l2_normalize", "moe_combine",
           "load_fractions", "distribution_loss", "balance_loss", "z_loss", "act",
           "dense_expert", "conv_expert", "mhsa_expert", "pin_expert", "cross_expert",
           "check_form", "sub", "EXPERTS", "TORCH_DTYPES"]

TORCH_DTYPES = ({np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32}
                if torch is not None else {})
FORMS_WITH_CONTROLLER = ("soft", "expected", "straight_through", "hard")
PROB_CLIP = 1e-7                     # eq. 18 from a probability: clipped to [1e-7, 1 - 1e-7]


# ---------------------------------------------------------------------------------
# Layouts: adaref <-> torch
# ---------------------------------------------------------------------------------
def layout_mapping(config, vocab_sizes: Sequence[int]):
    """The conversion between adaref's parameter layouts and this port's, an object with
    ``from_adaref(arrays) -> arrays`` (adaref -> torch) and ``to_adaref(arrays)`` (its
    inverse), both keyed by adaref's dotted parameter names and covering every parameter.
    """
    from adaref.crosscheck.mapping import torch_mapping
    return torch_mapping(config, vocab_sizes)


def torch_params(config, vocab_sizes: Sequence[int], weights: dict, dtype=np.float64, *,
                 requires_grad: bool = False, mapping=None) -> dict:
    """adaref-layout arrays by name -> torch tensors in torch layouts (of ``dtype``)."""
    dtype = np.dtype(dtype)
    mapping = layout_mapping(config, vocab_sizes) if mapping is None else mapping
    theirs = mapping.from_adaref({n: np.asarray(w, dtype=dtype) for n, w in weights.items()})
    return {n: torch.tensor(np.ascontiguousarray(a, dtype=dtype), dtype=TORCH_DTYPES[dtype],
                            requires_grad=requires_grad) for n, a in theirs.items()}


def adaref_grads(config, vocab_sizes: Sequence[int], params: dict, *, mapping=None) -> dict:
    """The ``.grad`` of each torch leaf (zeros where None), back in adaref's layout."""
    mapping = layout_mapping(config, vocab_sizes) if mapping is None else mapping
    grads = {n: (np.zeros(tuple(t.shape), dtype=_np_dtype(t)) if t.grad is None
                 else t.grad.detach().numpy().copy()) for n, t in params.items()}
    return mapping.to_adaref(grads)


def _np_dtype(t) -> np.dtype:
    return np.dtype(np.float32) if t.dtype == torch.float32 else np.dtype(np.float64)


def sub(params: dict, prefix: str) -> dict:
    """The parameters under ``prefix.`` with the prefix removed."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in params.items() if k.startswith(prefix + ".")}


def expert_configs_of(config) -> dict:
    """name -> the expert configuration of each of ``config.moe.experts`` (the preset's
    base with ``config.expert_options`` applied)."""
    from adaref.experts import expert_configs
    base = expert_configs(config.expert_preset)
    return {n: base[n].replace(**config.expert_options.get(n, {})) for n in config.moe.experts}


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
    raise ValueError(f"torch_port: unknown activation {name!r}")


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
    """Eq. 3 (row 5): Dense(Pool(Conv1D(Reshape(X)))); the pooled map (B, O, T_p) is
    flattened channel-major (torch's reshape), which ``Wo`` (FD, O*T_p) expects."""
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
    flat = h.reshape(b_, -1)                                     # channel-major: o*T_p + t
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
    # eq. 8 as a product and a sum over d, not a matmul: a (one-row) matmul may round two
    # equal embedding columns differently, and then the tie rule (lowest index) is not what
    # decides between equal scores
    s = (l2_normalize(h)[:, None, :] * l2_normalize(p["embeddings"])[None, :, :]).sum(-1)   # (B, N)
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
    else:                                                               # unweighted: constant
        w = mask.to(g.dtype)
    return g, probs, mask, gates, w


def moe_combine(x, x0, weights, expert_fns, outputs=None):
    """Eq. 12, densely: y = sum_j w_j E_j(x), w_j = 0 off the selected set. ``outputs``
    (a list) receives each E_j(x) on every row."""
    y = torch.zeros_like(x)
    for j, fn in enumerate(expert_fns):
        e = fn(x, x0)
        if outputs is not None:
            outputs.append(e)
        y = y + weights[:, j, None, None] * e
    return y


def _all_rows(n):
    return torch.ones(n, dtype=torch.bool)


def load_fractions(probs, mask, mode, reached=None):
    """f_j (eq. 14 argmax, or the top-k membership fraction) over the reached examples."""
    n = probs.shape[1]
    reached = _all_rows(probs.shape[0]) if reached is None else reached
    if mode == "argmax":
        sel = F.one_hot(torch.argmax(probs, -1), n).to(probs.dtype)   # first maximal index
    else:
        sel = mask.to(probs.dtype)
    return sel[reached].mean(0)


def distribution_loss(probs, f, prior=None, reached=None):
    """Eq. 16 without lambda: sum_j f_j P_j / w_j; P_j eq. 15 (gradient through P only)."""
    n = probs.shape[1]
    w = (torch.full((n,), 1.0 / n, dtype=probs.dtype) if not prior
         else torch.tensor(prior, dtype=probs.dtype))
    reached = _all_rows(probs.shape[0]) if reached is None else reached
    P = probs[reached].mean(0)
    return (f.detach() * P / w).sum()


def balance_loss(probs, f):
    """Eq. 13 without lambda: N sum_j f_j P_j."""
    return probs.shape[1] * (f.detach() * probs.mean(0)).sum()


def z_loss(g, reached=None):
    """Router z-loss: mean over (the reached) examples of logsumexp(g)^2."""
    lse = torch.logsumexp(g, -1)
    if reached is not None:
        lse = lse[reached]
    return (lse * lse).mean()


# ---------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------
def embed(p, vocab_sizes, ids, oov):
    """Eq. 1: one table per field (stored stacked, field f at rows offsets[f]:...)."""
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(vocab_sizes)[:-1]]).astype(np.int64))
    idt = torch.as_tensor(np.asarray(ids), dtype=torch.int64)
    table = p["embedding.weight"]
    x0 = F.embedding(idt + offsets, table)                             # (B, F, D)
    if oov == "zero":                                                  # row 3 upstream
        x0 = x0 * (idt != 0).unsqueeze(-1).to(table.dtype)
    return x0


def layer_forward(p, mcfg, expert_cfgs, x, x0, k):
    """One SparseMoE layer: gate (on X_0 or X_{l-1}, row 9), eq. 12 (dense), residual,
    LayerNorm (row 15). Returns (X_l, dict(logits, probs, mask, gates, weights,
    outputs = [E_j on every row], combined))."""
    names = mcfg.moe.experts
    g, probs, mask, gates, w = gate(sub(p, "gate"), mcfg.gate,
                                    x0 if mcfg.gate.input == "x0" else x, k)
    fns = [(lambda n: (lambda a, a0: EXPERTS[n](sub(p, f"experts.{n}"), expert_cfgs[n], a, a0)))(n)
           for n in names]
    outputs: list = []
    combined = moe_combine(x, x0, w, fns, outputs)
    out = x + combined
    if mcfg.moe.norm == "layernorm":
        out = F.layer_norm(out, (out.shape[-1],), p["norm.gain"], p["norm.bias"], eps=1e-5)
    return out, dict(logits=g, probs=probs, mask=mask, gates=gates, weights=w,
                     outputs=outputs, combined=combined)


def _estimator(p, x):
    return F.linear(x.reshape(x.shape[0], -1), p["linear.weight"], p["linear.bias"]).reshape(x.shape[0])


def _record_layer(rec, l, names, rows, x_out, r):
    """The names of layer l, restricted to the examples ``rows`` (bool (B,)) reaching it."""
    pre = f"layers.{l}."
    idx = torch.nonzero(rows).reshape(-1)
    mask = r["mask"][idx]                                              # (n_l, N)
    rec[pre + "rows"] = idx
    rec[pre + "gate.logits"] = r["logits"][idx]
    rec[pre + "gate.probs"] = r["probs"][idx]
    rec[pre + "gate.topk"] = torch.nonzero(mask)[:, 1].reshape(len(idx), -1)   # ascending
    rec[pre + "gate.values"] = r["gates"][idx]
    rec[pre + "gate.weights"] = r["weights"][idx]
    for j, name in enumerate(names):
        pos = torch.nonzero(mask[:, j]).reshape(-1)                    # positions within rows
        rec[pre + f"experts.{name}.rows"] = pos
        rec[pre + f"experts.{name}.output"] = r["outputs"][j][idx][pos]
    rec[pre + "combined"] = r["combined"][idx]
    rec[pre + "output"] = x_out[idx]


def check_form(mcfg, form) -> str:
    if not mcfg.controller.enabled:
        if form not in (None, "full"):
            raise ValueError(f"torch_port: form {form!r} needs the controller (controller.enabled)")
        return "full"
    if form not in FORMS_WITH_CONTROLLER:
        raise ValueError(f"torch_port: form must be one of {FORMS_WITH_CONTROLLER}, got {form!r}")
    return form


def model_forward(p, mcfg, expert_cfgs, vocab_sizes, ids, k, form, trace=None):
    """AdaEnsemble forward in 'soft', 'expected' (the soft mixture's prediction; its loss
    is per depth, see :func:`objective`), 'straight_through', 'hard' (Algorithm 1 read
    off the full-depth network at each example's exit layer) or 'full' (no controller).

    ``expert_cfgs``: name -> expert config (None: :func:`expert_configs_of`). ``trace``:
    an optional dict that receives the named intermediates of
    :data:`adaref.model.trace.NAMES` as torch tensors (all but ``loss.log_loss`` and
    ``loss.total``, see :func:`objective`).

    Returns dict(prob, logit, expert_loss, depth_loss, z_loss, exit_depth, masks, x0,
    layer_logits (B, L) or None, depth_probs (B, L) or None).
    """
    expert_cfgs = expert_configs_of(mcfg) if expert_cfgs is None else expert_cfgs
    form = check_form(mcfg, form)
    rec = {} if trace is None else trace
    L = mcfg.num_layers
    names = mcfg.moe.experts
    x0 = embed(p, vocab_sizes, ids, mcfg.embedding_oov)
    if x0.requires_grad:
        x0.retain_grad()                                               # d/dX_0 for gradients()
    rec["embedding"] = x0
    b_ = x0.shape[0]
    ctl = mcfg.controller
    zl = []
    depth_p = depth_mask = None
    if ctl.enabled:
        depth_g = gate_logits(sub(p, "controller.gate"), ctl.gate, x0)     # (B, L)
        depth_p = torch.softmax(depth_g, -1)
        depth_mask = topk_mask(depth_g, 1)
        exit_depth = torch.argmax(depth_mask.to(torch.int64), -1) + 1      # 1..L
        zl.append(z_loss(depth_g))
        rec["controller.logits"] = depth_g
        rec["controller.probs"] = depth_p
        rec["controller.exit_depth"] = exit_depth
    else:
        exit_depth = torch.full((b_,), L, dtype=torch.int64)
    x = x0
    layer_logits, expert_loss, masks = [], None, []
    for l in range(L):
        x, r = layer_forward(sub(p, f"layers.{l}"), mcfg, expert_cfgs, x, x0, k)
        masks.append(r["mask"])
        reached = exit_depth >= l + 1 if form == "hard" else _all_rows(b_)
        if ctl.enabled:
            layer_logits.append(_estimator(sub(p, f"estimators.{l}"), x))   # (B,)
        if not reached.any():
            continue        # Algorithm 1 runs no layer that no example reaches (row 19)
        _record_layer(rec, l, names, reached, x, r)
        if form == "hard":
            leaving = exit_depth == l + 1              # (possibly none: an empty logit)
            rec[f"estimators.{l}.logit"] = layer_logits[-1][leaving]
        elif form != "full":
            rec[f"estimators.{l}.logit"] = layer_logits[-1]
        f = load_fractions(r["probs"], r["mask"], mcfg.moe.load_fraction, reached)
        term = distribution_loss(r["probs"], f, mcfg.moe.expert_prior, reached)
        expert_loss = term if expert_loss is None else expert_loss + term
        zl.append(z_loss(r["logits"], reached))
    if not ctl.enabled:
        logit = _estimator(sub(p, "estimators.0"), x)
        rec["estimators.0.logit"] = logit
        prob = torch.sigmoid(logit)
    else:
        logits = torch.stack(layer_logits, 1)                               # (B, L)
        if form == "hard":
            logit = logits.gather(1, (exit_depth - 1)[:, None]).reshape(b_)
            prob = torch.sigmoid(logit)
        elif form in ("soft", "expected"):
            logit = None
            prob = (depth_p * torch.sigmoid(logits)).sum(1)
        else:                                            # straight-through: onehot + p - sg(p)
            logit = None
            wts = depth_mask.to(logits.dtype) + (depth_p - depth_p.detach())
            prob = (wts * torch.sigmoid(logits)).sum(1)
    depth_loss = None
    if ctl.enabled:
        fd = load_fractions(depth_p, depth_mask, "argmax")
        depth_loss = distribution_loss(depth_p, fd, ctl.depth_prior)
    zsum = sum(zl[1:], zl[0]) if mcfg.moe.z_loss else None
    if logit is not None:
        rec["logit"] = logit
    rec["prob"] = prob
    rec["loss.expert"] = expert_loss
    if depth_loss is not None:
        rec["loss.depth"] = depth_loss
    if zsum is not None:
        rec["loss.z"] = zsum
    return dict(prob=prob, logit=logit, expert_loss=expert_loss, depth_loss=depth_loss,
                z_loss=zsum, exit_depth=exit_depth, masks=masks, x0=x0, form=form,
                layer_logits=logits if ctl.enabled else None, depth_probs=depth_p)


def objective(out, labels, lambdas, trace=None):
    """Eq. 18: log-loss (from the logit when the prediction is one estimator's; in the
    'expected' form sum_l p_l LogLoss(y, sigmoid(z_l)) from each estimator's logit; else
    from the probability clipped to [1e-7, 1 - 1e-7]) + lambda_1 expert + lambda_2 depth
    (+ z z-loss when z > 0). ``lambdas``: (lambda_1, lambda_2, z), or an object with
    those as attributes ``lambda1``, ``lambda2``, ``z``. Returns (total, log_loss)."""
    if hasattr(lambdas, "lambda1"):
        lambdas = (lambdas.lambda1, lambdas.lambda2, lambdas.z)
    lambda1, lambda2, z = (float(v) for v in lambdas)
    prob = out["prob"]
    y = torch.as_tensor(np.asarray(labels), dtype=prob.dtype)
    if out.get("form") == "expected":
        z_l = out["layer_logits"]                                           # (B, L)
        per_depth = F.binary_cross_entropy_with_logits(z_l, y[:, None].expand_as(z_l), reduction="none")
        task = (out["depth_probs"] * per_depth).sum(1).mean()
    elif out["logit"] is not None:
        task = F.binary_cross_entropy_with_logits(out["logit"], y)
    else:
        task = F.binary_cross_entropy(torch.clamp(prob, PROB_CLIP, 1 - PROB_CLIP), y)
    total = task + lambda1 * out["expert_loss"]
    if out["depth_loss"] is not None:
        total = total + lambda2 * out["depth_loss"]
    if z > 0 and out["z_loss"] is not None:
        total = total + z * out["z_loss"]
    if trace is not None:
        trace["loss.log_loss"] = task
        trace["loss.total"] = total
    return total, task


# ---------------------------------------------------------------------------------
# The adapter
# ---------------------------------------------------------------------------------
class TorchPort:
    """AdaEnsemble in PyTorch, in the adapter protocol of :mod:`adaref.crosscheck.adapter`.

    ``params``: name -> torch tensor (adaref's dotted names, torch layouts, ``dtype``).
    """

    def __init__(self, config, vocab_sizes: Sequence[int], weights: dict, dtype=np.float64):
        if torch is None:
            raise ImportError(NEEDS_TORCH)
        self.dtype = np.dtype(dtype)
        if self.dtype not in TORCH_DTYPES:
            raise TypeError(f"torch_port: dtype must be float32 or float64, got {self.dtype}")
        self.config = config
        self.vocab_sizes = [int(v) for v in vocab_sizes]
        self.expert_cfgs = expert_configs_of(config)
        self.mapping = layout_mapping(config, self.vocab_sizes)
        self.params = torch_params(config, self.vocab_sizes, weights, self.dtype, mapping=self.mapping)

    def _ids(self, ids) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.ndim != 2 or ids.shape[1] != len(self.vocab_sizes) or ids.shape[0] == 0:
            raise ValueError(f"torch_port: ids must be (B, {len(self.vocab_sizes)}) with B >= 1, "
                             f"got {ids.shape}")
        if ids.dtype.kind not in "iu":
            raise TypeError(f"torch_port: ids must be integers, got {ids.dtype}")
        if (ids < 0).any() or (ids >= np.asarray(self.vocab_sizes)).any():
            raise IndexError("torch_port: an id is outside its field's vocabulary")
        return ids.astype(np.int64)

    def _k(self, k) -> int:
        n = len(self.config.moe.experts)
        if isinstance(k, bool) or int(k) != k or not 1 <= k <= n:
            raise ValueError(f"torch_port: k must be an integer in [1, {n}], got {k!r}")
        return int(k)

    def _run(self, params, ids, labels, k, form, lambdas, trace):
        out = model_forward(params, self.config, self.expert_cfgs, self.vocab_sizes,
                            self._ids(ids), self._k(k), form, trace)
        total, _ = objective(out, labels, lambdas, trace)
        return out, total

    def forward(self, ids, labels, *, k, form, lambdas=(0.01, 0.01, 0.0)) -> dict[str, np.ndarray]:
        """Every named intermediate of one forward pass (evaluation: no jitter)."""
        trace: dict = {}
        with torch.no_grad():
            self._run(self.params, ids, labels, k, form, lambdas, trace)
        return {n: t.detach().numpy().copy() for n, t in trace.items()}

    def gradients(self, ids, labels, *, k, form, lambdas=(0.01, 0.01, 0.0)) -> dict[str, np.ndarray]:
        """d(eq. 18 total)/d(every parameter) as ``grad.<name>`` in adaref's layout
        (zeros where no gradient), and ``grad.embedding`` = d total / d X_0."""
        params = {n: t.detach().clone().requires_grad_(True) for n, t in self.params.items()}
        out, total = self._run(params, ids, labels, k, form, lambdas, None)
        total.backward()
        grads = adaref_grads(self.config, self.vocab_sizes, params, mapping=self.mapping)
        x0 = out["x0"]
        grads["embedding"] = (np.zeros(tuple(x0.shape), dtype=self.dtype) if x0.grad is None
                              else x0.grad.detach().numpy().copy())
        return {f"grad.{n}": g for n, g in grads.items()}


def build(config, vocab_sizes: Sequence[int], weights: dict, dtype=np.float64) -> TorchPort:
    """Factory for ``python -m adaref.crosscheck test adaref.crosscheck.torch_port:build``."""
    return TorchPort(config, vocab_sizes, weights, dtype)
