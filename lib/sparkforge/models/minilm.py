"""A pure-torch BERT encoder matching the all-MiniLM-L6-v2 checkpoint, plus a classifier.

Parameter names follow the Hugging Face ``BertModel`` layout
(``embeddings.word_embeddings.weight``, ``encoder.layer.0.attention.self.query.weight``,
``pooler.dense.weight``...) so the checkpoint loads with ``strict=True`` without the
transformers package. Attention is plain matmul + softmax with an additive mask:
it exports to ONNX as ordinary MatMul/Softmax nodes that ONNX Runtime's dynamic
quantizer understands, and padded positions get exactly zero weight.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from sparkforge.models._pretrained import pretrained_model_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BertConfig:
    """Architecture settings; defaults are all-MiniLM-L6-v2's ``config.json``."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1

    @classmethod
    def from_json(cls, path: Path) -> BertConfig:
        raw = json.loads(Path(path).read_text())
        if raw.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"{path}: hidden_act={raw['hidden_act']!r}; only exact 'gelu' "
                             "is implemented")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
        # Stored by the checkpoint, so kept for strict loading; forward does not read it
        # (see below).
        self.register_buffer(
            "position_ids", torch.arange(cfg.max_position_embeddings).unsqueeze(0),
            persistent=True,
        )

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # arange(T) rather than position_ids[:, :T]: the slice exports as a Slice whose
        # length ONNX Runtime's symbolic shape inference can only express as
        # Min(512, seq), which fails the quantizer's pre-processing.
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        pos = self.position_embeddings(positions)
        # Single-segment inputs only: every token has token_type 0, so add row 0 directly
        # instead of building a zeros tensor per batch.
        tok_type = self.token_type_embeddings.weight[0]
        x = self.word_embeddings(input_ids) + pos + tok_type
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ValueError(f"hidden_size={cfg.hidden_size} is not divisible by "
                             f"num_attention_heads={cfg.num_attention_heads}")
        self.num_heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.attention_probs_dropout_prob)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, hidden: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.query(hidden)), self._split(self.key(hidden)), \
            self._split(self.value(hidden))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        probs = self.dropout(torch.softmax(scores + additive_mask, dim=-1))
        ctx = torch.matmul(probs, v).transpose(1, 2)
        # num_heads * head_dim, not hidden.shape: structured pruning (compress/prune.py)
        # may leave a layer with fewer heads than hidden_size / head_dim.
        b, t, _ = hidden.shape
        return ctx.reshape(b, t, self.num_heads * self.head_dim)


class BertSelfOutput(nn.Module):
    def __init__(self, cfg: BertConfig, in_dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(in_dim, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        # Post-LayerNorm, as in the original BERT.
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertAttention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(cfg)
        self.output = BertSelfOutput(cfg, cfg.hidden_size)

    def forward(self, hidden: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(hidden, additive_mask), hidden)


class BertIntermediate(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # exact (erf) GELU, as the checkpoint was trained


class BertLayer(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(cfg)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertSelfOutput(cfg, cfg.intermediate_size)

    def forward(self, hidden: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        attn = self.attention(hidden, additive_mask)
        return self.output(self.intermediate(attn), attn)


class BertEncoder(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, hidden: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            hidden = layer(hidden, additive_mask)
        return hidden


class BertPooler(nn.Module):
    """Present only so checkpoint keys match; mean pooling does not use it."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)


class BertModel(nn.Module):
    """Token states ``float32[B, T, hidden]`` from ``input_ids``/``attention_mask``."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoder(cfg)
        self.pooler = BertPooler(cfg)
        # The pooler never takes part in forward; trainable-but-unused parameters make
        # DistributedDataParallel fail waiting for their gradients.
        self.pooler.requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.embeddings(input_ids)
        # [B, 1, 1, T]: dtype min (not -inf) where mask == 0, so padded keys get zero
        # weight yet an all-padding row stays finite.
        keep = attention_mask.to(hidden.dtype)[:, None, None, :]
        additive = (1.0 - keep) * torch.finfo(hidden.dtype).min
        return self.encoder(hidden, additive)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' mean pooling: average of unmasked token states."""
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class MiniLMClassifier(nn.Module):
    """MiniLM encoder -> masked mean pooling -> dropout -> linear head.

    ``self.bert`` holds the encoder under the checkpoint's own key names, so
    ``model.bert.load_state_dict(checkpoint, strict=True)`` works.
    """

    def __init__(self, num_outputs: int, dropout: float = 0.1, freeze_encoder: bool = False,
                 pretrained: bool = True, config: BertConfig | None = None) -> None:
        super().__init__()
        weights_dir = pretrained_model_dir() if pretrained else None
        if config is None:
            config = BertConfig.from_json(weights_dir / "config.json") if weights_dir \
                else BertConfig()
        self.bert = BertModel(config)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(config.hidden_size, num_outputs)
        self.freeze_encoder = freeze_encoder
        if weights_dir is not None:
            state = load_file(weights_dir / "model.safetensors")
            self.bert.load_state_dict(state, strict=True)
            log.info("Loaded pretrained MiniLM encoder from %s", weights_dir)
        if freeze_encoder:
            self.bert.requires_grad_(False)

    def train(self, mode: bool = True) -> MiniLMClassifier:
        super().train(mode)
        # A frozen encoder is a fixed feature extractor: its dropout would only add noise
        # to the head's inputs, so it stays in eval mode.
        if self.freeze_encoder:
            self.bert.eval()
        return self

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               normalize: bool = True) -> torch.Tensor:
        """Sentence embeddings ``float32[B, hidden]``; L2-normalised as all-MiniLM-L6-v2's."""
        pooled = mean_pool(self.bert(input_ids, attention_mask), attention_mask)
        return F.normalize(pooled, p=2.0, dim=-1) if normalize else pooled

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = self.encode(input_ids, attention_mask, normalize=False)
        return self.head(self.dropout(pooled))
