"""fastText-style text classifier trained from scratch.

Token (and optionally hashed-bigram) embeddings are averaged over the attention
mask and fed to a small MLP. The pooling is written as ``nn.Embedding`` plus mask
arithmetic rather than ``nn.EmbeddingBag`` with offsets: it gives the same result
on padded ``[B, T]`` batches and exports to ONNX as plain Gather/Mul/ReduceSum,
with dynamic batch and sequence axes.
"""

from __future__ import annotations

import torch
from torch import nn

# Multiplier for hashing (previous, current) token pairs into buckets. A prime well
# above any vocabulary size keeps pairs (a, b) and (b, a) apart; products stay far
# below the int64 range for vocabularies up to ~10^12.
_BIGRAM_PRIME = 1_000_003


class EmbeddingBagClassifier(nn.Module):
    """``(input_ids: int64[B,T], attention_mask: int64[B,T]) -> logits[B, num_outputs]``."""

    def __init__(self, vocab_size: int, num_outputs: int, embed_dim: int = 128,
                 hidden_dim: int = 128, dropout: float = 0.1, pad_id: int = 0,
                 bigram_buckets: int = 0) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.bigram_buckets = bigram_buckets
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        # Hashed bigrams add word-order information (fastText's accuracy trick) at the
        # cost of one more table; 0 turns them off.
        self.bigram_embed = nn.Embedding(bigram_buckets, embed_dim) if bigram_buckets > 0 else None
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden_dim > 0:
            layers += [nn.Linear(embed_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout),
                       nn.Linear(hidden_dim, num_outputs)]
        else:
            layers.append(nn.Linear(embed_dim, num_outputs))
        self.head = nn.Sequential(*layers)

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Masked mean of token (and bigram) embeddings: ``float32[B, embed_dim]``."""
        mask = attention_mask.to(self.embed.weight.dtype).unsqueeze(-1)
        total = (self.embed(input_ids) * mask).sum(dim=1)
        count = mask.sum(dim=1)
        if self.bigram_embed is not None:
            ids = input_ids[:, :-1] * _BIGRAM_PRIME + input_ids[:, 1:]
            pair_mask = mask[:, :-1] * mask[:, 1:]
            buckets = torch.remainder(ids, self.bigram_buckets)
            total = total + (self.bigram_embed(buckets) * pair_mask).sum(dim=1)
            count = count + pair_mask.sum(dim=1)
        # clamp: an all-padding row gives a zero vector instead of NaN.
        return total / count.clamp(min=1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(input_ids, attention_mask))
