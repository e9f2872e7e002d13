"""Feed-forward classifier/regressor for tabular features."""

from __future__ import annotations

import torch
from torch import nn

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}


class MLP(nn.Module):
    """``features: float32[B, D] -> float32[B, num_outputs]`` through two hidden layers."""

    def __init__(self, input_dim: int, num_outputs: int, hidden_dim: int = 128,
                 dropout: float = 0.1, activation: str = "relu") -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation={activation!r}: use one of {sorted(_ACTIVATIONS)}")
        act = _ACTIVATIONS[activation]
        self.net = nn.Sequential(
            nn.Linear(input_dim, hidden_dim), act(), nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim), act(), nn.Dropout(dropout),
            nn.Linear(hidden_dim, num_outputs),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)
