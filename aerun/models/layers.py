"""Building blocks the families share: activations by name and MLP stacks."""

from __future__ import annotations

from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


def activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def mlp(sizes: list[int], act: str, last_act: str | None) -> nn.Sequential:
    """Linear layers through `sizes`, `act` between them and `last_act` (or nothing) after the last."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        is_last = i == len(sizes) - 2
        if not is_last:
            layers.append(activation(act))
        elif last_act is not None and last_act != "identity":
            layers.append(activation(last_act))
    return nn.Sequential(*layers)
