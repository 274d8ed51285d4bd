"""xDeepFM and its Compressed Interaction Network (CIN) (§4.1.3, ref. [16])."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from adaref import ops
from adaref.baselines.base import Baseline, BaselineConfig, check_units
from adaref.baselines.linear import FirstOrder
from adaref.baselines.mlp import MLP
from adaref.config import ConfigError
from adaref.experts.base import act_flops, check_activation
from adaref.nn import Linear, Module, Parameter
from adaref.nn.activations import activation as activation_fn
from adaref.nn.init import glorot_uniform
from adaref.tensor import Tensor


@dataclass(frozen=True)
class XDeepFMConfig(BaselineConfig):
    """xDeepFM: the CIN's feature maps per layer, and the DNN's widths."""

    cin_layers: tuple[int, ...] = (128, 128)  # H_1, ..., H_T, feature maps per CIN layer (DeepCTR's default)
    cin_activation: str = "linear"            # on every feature map; the paper's CIN equation has none
    split_half: bool = False
    # ^ False: every map of every layer feeds the next layer and the output (the paper);
    #   True: half of each hidden layer's maps go to the output, the other half on (the
    #   authors' code and DeepCTR); then every H_k but the last must be even
    hidden: tuple[int, ...] = (256, 256)      # the plain DNN (DeepCTR's default); () leaves it out
    activation: str = "relu"                  # activation of the DNN

    def __post_init__(self):
        super().__post_init__()
        check_units("XDeepFMConfig", "cin_layers", self.cin_layers, allow_empty=False)
        check_units("XDeepFMConfig", "hidden", self.hidden)
        check_activation("XDeepFMConfig", "cin_activation", self.cin_activation)
        check_activation("XDeepFMConfig", "activation", self.activation)
        if not isinstance(self.split_half, bool):
            raise ConfigError(f"XDeepFMConfig: split_half must be true or false, got {self.split_half!r}")
        if self.split_half and any(h % 2 for h in self.cin_layers[:-1]):
            raise ConfigError(f"XDeepFMConfig: split_half needs an even number of maps in every CIN "
                              f"layer but the last, got {self.cin_layers}")


class CIN(Module):
    r"""Compressed Interaction Network: X^0 = X_0 (F, D) and, for k = 1..T,

    .. math::

        X^k_{h,*} = \sum_{i=1}^{H_{k-1}} \sum_{j=1}^{F} W^{k,h}_{ij}\,
                    (X^{k-1}_{i,*} \circ X^0_{j,*}),\qquad 1 \le h \le H_k

        p^k_h = \sum_{d=1}^{D} X^k_{h,d},\qquad p^+ = [p^1, \ldots, p^T]

    with H_0 = F and an optional activation on X^k. With ``split_half`` the first
    H_k/2 maps of a hidden layer go on to layer k+1 and the other H_k/2 are pooled
    into p^+ (all H_T of the last layer are pooled).

    Parameters: ``W0``, ``W1``, ... (H_{k-1} F, H_k) stored (in, out), Glorot uniform:
    W_k[i F + j, h] = W^{k,h}_{ij}. No bias (the paper's equation has none).
    Shapes: X_0 (B, F, D) -> p^+ (B, sum_k o_k), o_k the maps pooled from layer k.

    FLOPs per example: sum_k [H_{k-1} F D (Hadamard products) + 2 H_{k-1} F H_k D
    (the weighted sums) + a(H_k D) + o_k D (sum pooling)].

    The weighted sum is one 2-D matmul (B D, H_{k-1} F) @ (H_{k-1} F, H_k), so the
    weight's gradient is never formed per example.
    """

    def __init__(self, num_fields: int, dim: int, layers: tuple[int, ...], activation: str,
                 split_half: bool, *, rng: np.random.Generator, dtype=np.float64):
        super().__init__()
        self.num_fields, self.dim, self.sizes = num_fields, dim, tuple(layers)
        self.activation, self.split_half = activation, split_half
        self.inputs, self.pooled = [], []                 # H_{k-1} and o_k per layer
        prev = num_fields
        for k, h in enumerate(self.sizes):
            last = k == len(self.sizes) - 1
            n_in = prev * num_fields
            setattr(self, f"W{k}", Parameter(glorot_uniform(rng, n_in, h, (n_in, h), dtype)))  # (H F, H_k)
            self.inputs.append(prev)
            self.pooled.append(h if last or not split_half else h // 2)
            prev = h if last or not split_half else h // 2
        self.PARAM_LAYOUTS = {f"W{k}": "(in H_{k-1} F, out H_k): row i F + j is the pair "
                                       "(map i of X^{k-1}, field j of X^0)" for k in range(len(self.sizes))}

    @property
    def out_features(self) -> int:
        return sum(self.pooled)

    def forward(self, x0: Tensor) -> Tensor:
        nb, f, d = x0.shape
        act = activation_fn(self.activation)
        x, pooled = x0, []
        for k, h in enumerate(self.sizes):
            hp = self.inputs[k]
            z = ops.reshape(x, (nb, hp, 1, d)) * ops.reshape(x0, (nb, 1, f, d))       # (B, H_{k-1}, F, D)
            z = ops.transpose(ops.reshape(z, (nb, hp * f, d)), (0, 2, 1))             # (B, D, H_{k-1} F)
            y = ops.matmul(ops.reshape(z, (nb * d, hp * f)), getattr(self, f"W{k}"))  # (B D, H_k)
            y = act(ops.transpose(ops.reshape(y, (nb, d, h)), (0, 2, 1)))             # (B, H_k, D)
            o = self.pooled[k]
            pooled.append(ops.sum(y[:, h - o:, :], axis=2))                           # (B, o_k)
            x = y[:, :h - o, :] if o < h else y                                       # (B, H_k/2 or H_k, D)
        return ops.concatenate(pooled, axis=1)                                        # (B, sum o_k)

    def flops(self) -> int:
        f, d = self.num_fields, self.dim
        return sum(hp * f * d + 2 * hp * f * h * d + act_flops(self.activation, h * d) + o * d
                   for hp, h, o in zip(self.inputs, self.sizes, self.pooled))


class XDeepFM(Baseline):
    r"""xDeepFM (Lian et al., "xDeepFM: Combining Explicit and Implicit Feature
    Interactions for Recommender Systems", KDD 2018, arXiv:1803.05170).

    .. math::

        \hat y = \sigma\big(w_{linear}^T a + w_{dnn}^T x^{k}_{dnn} + w_{cin}^T p^+ + b\big)

    a: the raw one-hot fields (:class:`~adaref.baselines.linear.FirstOrder`, which holds
    b); x_dnn: the last layer of a ReLU MLP on vec(X_0); p^+: the :class:`CIN` output.
    The three parts share the embedding table.

    Decisions: the CIN has no activation and every map feeds both the next layer and
    the output, as the paper's equations (the authors' code and DeepCTR split each
    hidden layer in half and DeepCTR adds ReLU: ``split_half``, ``cin_activation``);
    sizes are DeepCTR's defaults, CIN (128, 128) and DNN (256, 256).

    Shapes: ids (B, F) -> logit (B,). Parameters: ``embedding.weight``,
    ``linear.*``, ``cin.W{k}``, ``cin_out.weight`` (sum o_k, 1), ``mlp.layers.k.*``,
    ``out.weight`` (u_K, 1).

    FLOPs per example: (F + 1) + CIN + 2 sum o_k + [MLP(FD; u) + 2 u_K + 1 (add)]
    + 1 (add) + 1 (sigmoid).

    >>> cfg = XDeepFMConfig(dim=2, cin_layers=(2,), hidden=(4,))
    >>> model = XDeepFM(cfg, [3, 5, 2], rng=np.random.default_rng(0))
    >>> model(np.array([[1, 4, 0], [2, 0, 1]])).shape, model.flops_per_example()
    ((2,), 169)
    """

    name = "xdeepfm"

    def __init__(self, config: XDeepFMConfig, vocab_sizes: Sequence[int], *,
                 rng: np.random.Generator, dtype=np.float64):
        super().__init__(config, vocab_sizes, rng=rng, dtype=dtype)
        f, d = self.num_fields, self.dim
        self.embedding = self.make_embedding(rng)
        self.linear = FirstOrder(self.vocab_sizes, rng=rng, oov=config.embedding_oov, dtype=dtype)
        self.cin = CIN(f, d, config.cin_layers, config.cin_activation, config.split_half,
                       rng=rng, dtype=dtype)
        self.cin_out = Linear(self.cin.out_features, 1, rng=rng, bias=False, dtype=dtype)
        if config.hidden:
            self.mlp = MLP(f * d, config.hidden, config.activation, rng=rng, dtype=dtype)
            self.out = Linear(self.mlp.out_features, 1, rng=rng, bias=False, dtype=dtype)

    def logit(self, ids: np.ndarray) -> Tensor:
        nb = len(ids)
        x0 = self.embed(ids)                                                  # (B, F, D)
        z = self.linear(ids) + ops.reshape(self.cin_out(self.cin(x0)), (nb,))  # (B,)
        if self.config.hidden:
            z = z + ops.reshape(self.out(self.mlp(ops.reshape(x0, (nb, -1)))), (nb,))
        return z                                                              # (B,)

    def flops_per_example(self) -> int:
        total = self.linear.flops() + self.cin.flops() + 2 * self.cin.out_features + 1 + 1
        if self.config.hidden:
            total += self.mlp.flops() + 2 * self.mlp.out_features + 1
        return total
