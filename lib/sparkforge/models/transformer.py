"""A small Transformer encoder text classifier trained from scratch.

The blocks are MiniLM's (``models/minilm.py``): learned position embeddings,
post-LayerNorm BERT layers with plain matmul + softmax attention and an additive
mask, then masked mean pooling and a linear head. Reusing them keeps the ONNX graph
to ordinary MatMul/Softmax nodes that the int8 quantizer understands, and padded
positions get exactly zero attention weight, so results do not depend on how far a
batch was padded.
"""

from __future__ import annotations

import torch
from torch import nn

from sparkforge.models.minilm import BertConfig, BertEmbeddings, BertEncoder, mean_pool


class TransformerClassifier(nn.Module):
    """``(input_ids: int64[B,T], attention_mask: int64[B,T]) -> logits[B, num_outputs]``."""

    def __init__(self, vocab_size: int, num_outputs: int, hidden_dim: int = 128,
                 num_layers: int = 2, num_heads: int = 4, ffn_dim: int = 512,
                 max_length: int = 512, dropout: float = 0.1) -> None:
        super().__init__()
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim={hidden_dim} is not divisible by num_heads={num_heads}")
        self.config = BertConfig(
            vocab_size=vocab_size, hidden_size=hidden_dim, num_hidden_layers=num_layers,
            num_attention_heads=num_heads, intermediate_size=ffn_dim,
            max_position_embeddings=max_length, type_vocab_size=1, layer_norm_eps=1e-5,
            hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
        self.embeddings = BertEmbeddings(self.config)
        self.encoder = BertEncoder(self.config)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_dim, num_outputs)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # BERT's initialisation: N(0, 0.02) weights, zero biases, the padding row zero.
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.embeddings(input_ids)
        keep = attention_mask.to(hidden.dtype)[:, None, None, :]
        additive = (1.0 - keep) * torch.finfo(hidden.dtype).min
        states = self.encoder(hidden, additive)
        return self.head(self.dropout(mean_pool(states, attention_mask)))
