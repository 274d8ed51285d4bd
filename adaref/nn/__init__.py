"""Layers: ``Module``/``Parameter`` and the building blocks the model is made of."""
from adaref.nn.activations import ACTIVATIONS, Activation, activation
from adaref.nn.embedding import Embedding
from adaref.nn.layernorm import LayerNorm
from adaref.nn.linear import Linear
from adaref.nn.module import Module, ModuleDict, ModuleList, Parameter, StateDictError

__all__ = ["ACTIVATIONS", "Activation", "activation", "Embedding", "LayerNorm", "Linear",
           "Module", "ModuleDict", "ModuleList", "Parameter", "StateDictError"]
