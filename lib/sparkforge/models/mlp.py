"""Feed-forward classifier/regressor for tabular features."""

from __future__ import annotations

import torch
from torch import nn

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}


class MLP(nn.Module):
    """``features: float32[B, D] -> float32[B, num_outputs]`` through two hidden layers.

    ``target_mean`` / ``target_std`` (regression): the network learns the standardised
    target and the output is mapped back to the target's units inside the module, so the
    exported ONNX model predicts in those units and scoring needs no extra step."""

    def __init__(self, input_dim: int, num_outputs: int, hidden_dim: int = 128,
                 dropout: float = 0.1, activation: str = "relu", target_mean: float = 0.0,
                 target_std: float = 1.0) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation={activation!r}: use one of {sorted(_ACTIVATIONS)}")
        act = _ACTIVATIONS[activation]
        self.net = nn.Sequential(
            nn.Linear(input_dim, hidden_dim), act(), nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim), act(), nn.Dropout(dropout),
            nn.Linear(hidden_dim, num_outputs),
        )
        self.target_mean, self.target_std = float(target_mean), float(target_std or 1.0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = self.net(features)
        if self.target_mean == 0.0 and self.target_std == 1.0:
            return out  # classification logits: the graph stays as it was
        return out * self.target_std + self.target_mean
