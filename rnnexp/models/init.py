"""Initializers by name, for a recurrent core (nn.RNN/LSTM/GRU) or a linear layer.

Each one rewrites the module's parameters in place; biases are zero unless the scheme says
otherwise. A forget-gate bias is added afterwards by the classifier, not here.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _fan_in(module: nn.Module, name: str, weight: torch.Tensor) -> int:
    """Inputs feeding one unit. A recurrent layer counts input and hidden state together, as
    TensorFlow's single concatenated kernel [input + hidden, gates * hidden] does."""
    if isinstance(module, nn.RNNBase):
        suffix = name.split("_", 2)[2]  # "l0" or "l0_reverse"
        return getattr(module, f"weight_ih_{suffix}").shape[1] + getattr(module, f"weight_hh_{suffix}").shape[1]
    return weight.shape[1]


def _apply(module: nn.Module, weight_fn, bias_fn=nn.init.zeros_) -> None:
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.startswith("weight"):
                weight_fn(module, name, p)
            elif name.startswith("bias"):
                bias_fn(p)


def normal(module: nn.Module) -> None:
    """N(0, 1) for weights and biases, as `tf.random_normal` in the classic notebooks."""
    _apply(module, lambda m, n, w: nn.init.normal_(w), nn.init.normal_)


def xavier(module: nn.Module) -> None:
    """Glorot uniform weights."""
    _apply(module, lambda m, n, w: nn.init.xavier_uniform_(w))


def orthogonal(module: nn.Module) -> None:
    _apply(module, lambda m, n, w: nn.init.orthogonal_(w))


def he(module: nn.Module) -> None:
    """Kaiming normal (fan_in, ReLU gain)."""
    _apply(module, lambda m, n, w: nn.init.kaiming_normal_(w, nonlinearity="relu"))


def variance_scaling(module: nn.Module) -> None:
    """TensorFlow's `variance_scaling_initializer()` defaults: scale 1.0, fan_in, truncated normal
    (cut at two standard deviations, the scale corrected for the cut as TensorFlow does)."""

    def weight(m, name, w):
        std = math.sqrt(1.0 / _fan_in(m, name, w)) / 0.87962566103423978
        nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std)

    _apply(module, weight)


def keras(module: nn.Module) -> None:
    """Keras's recurrent defaults: Glorot uniform input weights, orthogonal recurrent weights."""
    _apply(module, lambda m, n, w: (nn.init.orthogonal_ if "_hh_" in n else nn.init.xavier_uniform_)(w))


INITIALIZERS = {
    "default": lambda module: None,  # PyTorch's own
    "normal": normal,
    "xavier": xavier,
    "orthogonal": orthogonal,
    "he": he,
    "variance_scaling": variance_scaling,
    "keras": keras,
}


def initialize(module: nn.Module, scheme: str) -> None:
    if scheme not in INITIALIZERS:
        raise ValueError(f"unknown initializer {scheme!r}: choose one of {', '.join(INITIALIZERS)}")
    INITIALIZERS[scheme](module)
