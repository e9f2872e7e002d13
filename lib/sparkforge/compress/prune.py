"""Structured pruning: whole neurons, attention heads, FFN units and vocabulary rows go.

Nothing is masked: every pruned layer is rebuilt as a smaller ``nn.Linear`` (or
``nn.Embedding``) holding the kept rows/columns of the trained weights, so the pruned
model has fewer parameters, exports to a smaller ONNX graph with the same inputs and
output, and runs fewer FLOPs.

- Feed-forward stacks (the ``mlp`` model, ``embedding_bag``'s head): the hidden
  neurons with the smallest weight norm, ``||[W_in[j], b_in[j]]|| * ||W_out[:, j]||``,
  are removed from each hidden layer.
- BERT layers (``minilm``, and any model built from ``models/minilm.py`` blocks):
  attention heads and FFN units are ranked by a first-order Taylor estimate of the
  loss change when removed, ``sum_rows |sum_(tokens, dims) activation * gradient|``,
  on a sample of training rows (weight norms when no sample is given). Each layer
  keeps the same number of heads and units.
- Vocabulary (text models with ``prune_vocab``): embedding rows of tokens that never
  occur in the train split are dropped; an int64 lookup table inside the graph maps
  the original token ids to the kept rows (unseen tokens to ``[UNK]``).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from sparkforge.models.minilm import BertLayer, BertPooler

log = logging.getLogger(__name__)

# Modules that act element-wise, so the neurons on either side of them correspond.
_ELEMENTWISE = (nn.ReLU, nn.GELU, nn.Dropout, nn.Identity, nn.Tanh, nn.SiLU)


def count_parameters(model: nn.Module) -> int:
    """Parameters the forward pass uses (MiniLM's unused pooler left out)."""
    skip = {id(p) for m in model.modules() if isinstance(m, BertPooler) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def _n_keep(n: int, fraction: float) -> int:
    """Units kept of ``n`` when ``fraction`` is pruned: at least one."""
    return max(1, n - math.floor(n * fraction))


def _top(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the ``keep`` highest scores, in their original order."""
    return torch.sort(torch.topk(scores, keep).indices).values


def _linear_rows(layer: nn.Linear, idx: torch.Tensor) -> nn.Linear:
    """A new Linear keeping only the output units ``idx``."""
    new = nn.Linear(layer.in_features, len(idx), bias=layer.bias is not None)
    with torch.no_grad():
        new.weight.copy_(layer.weight[idx])
        if layer.bias is not None:
            new.bias.copy_(layer.bias[idx])
    return new


def _linear_cols(layer: nn.Linear, idx: torch.Tensor) -> nn.Linear:
    """A new Linear keeping only the input features ``idx``."""
    new = nn.Linear(len(idx), layer.out_features, bias=layer.bias is not None)
    with torch.no_grad():
        new.weight.copy_(layer.weight[:, idx])
        if layer.bias is not None:
            new.bias.copy_(layer.bias)
    return new


def _neuron_norms(inp: nn.Linear, out: nn.Linear) -> torch.Tensor:
    w_in = inp.weight.detach()
    if inp.bias is not None:
        w_in = torch.cat([w_in, inp.bias.detach()[:, None]], dim=1)
    return w_in.norm(dim=1) * out.weight.detach().norm(dim=0)


def prune_sequential(seq: nn.Sequential, fraction: float) -> list[int]:
    """Remove ``fraction`` of every hidden layer's neurons in ``seq``; return the new widths.

    A hidden layer is a Linear whose outputs reach the next Linear only through
    element-wise modules (activations, dropout). Layers are pruned front to back, so
    each ranking sees the already-pruned inputs.
    """
    linear_at = [i for i, m in enumerate(seq) if isinstance(m, nn.Linear)]
    widths = []
    for a, b in itertools.pairwise(linear_at):
        between = [seq[i] for i in range(a + 1, b)]
        if not all(isinstance(m, _ELEMENTWISE) for m in between):
            raise ValueError(f"cannot prune across {[type(m).__name__ for m in between]}")
        inp, out = seq[a], seq[b]
        assert isinstance(inp, nn.Linear)
        assert isinstance(out, nn.Linear)
        idx = _top(_neuron_norms(inp, out), _n_keep(inp.out_features, fraction))
        seq[a], seq[b] = _linear_rows(inp, idx), _linear_cols(out, idx)
        widths.append(len(idx))
    return widths


# --- BERT layers ------------------------------------------------------------------------


def _bert_layers(model: nn.Module) -> list[BertLayer]:
    return [m for m in model.modules() if isinstance(m, BertLayer)]


def _taylor_scores(model: nn.Module, layers: list[BertLayer],
                   sample: Mapping[str, np.ndarray], inputs: list[str], target: str,
                   batch_size: int = 32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(head scores, FFN unit scores) per layer from activation x gradient on ``sample``."""
    from sparkforge.train.loader import trim_padding

    heads = [torch.zeros(layer.attention.self.num_heads) for layer in layers]
    units = [torch.zeros(layer.intermediate.dense.out_features) for layer in layers]
    hooks = []

    def watch(i: int, module: nn.Module, kind: str) -> None:
        def pre(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0]

            def grad(g: torch.Tensor, x: torch.Tensor = x) -> None:
                contrib = (x.detach() * g).sum(dim=1)  # [B, features]: summed over tokens
                if kind == "heads":
                    n = heads[i].numel()
                    contrib = contrib.view(len(contrib), n, -1).sum(dim=-1)
                    heads[i].add_(contrib.abs().sum(dim=0))
                else:
                    units[i].add_(contrib.abs().sum(dim=0))
            if x.requires_grad:
                x.register_hook(grad)
        hooks.append(module.register_forward_pre_hook(pre))

    for i, layer in enumerate(layers):
        watch(i, layer.attention.output.dense, "heads")
        watch(i, layer.output.dense, "units")
    was_training = model.training
    model.eval()  # no dropout; gradients still flow
    n = len(sample[target])
    try:
        for s in range(0, n, batch_size):
            batch = trim_padding({k: v[s:s + batch_size] for k, v in sample.items()})
            xs = [torch.from_numpy(np.ascontiguousarray(batch[k])) for k in inputs]
            y = torch.from_numpy(batch[target]).long()
            loss = nn.functional.cross_entropy(model(*xs), y, reduction="sum")
            model.zero_grad(set_to_none=True)
            loss.backward()
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return list(zip(heads, units, strict=True))


def _norm_scores(layer: BertLayer) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight-norm fallback: a head's output projection columns, a unit's in x out norms."""
    attn = layer.attention
    w = attn.output.dense.weight.detach()  # [hidden, heads * head_dim]
    heads = w.view(w.shape[0], attn.self.num_heads, -1).norm(dim=(0, 2))
    units = _neuron_norms(layer.intermediate.dense, layer.output.dense)
    return heads, units


def prune_bert_layer(layer: BertLayer, head_scores: torch.Tensor, unit_scores: torch.Tensor,
                     fraction: float) -> tuple[int, int]:
    """Keep the best-scored heads and FFN units of ``layer`` (rebuilt in place)."""
    att = layer.attention.self
    hd = att.head_dim
    keep_heads = _top(head_scores, _n_keep(att.num_heads, fraction))
    cols = torch.cat([torch.arange(h * hd, (h + 1) * hd) for h in keep_heads.tolist()])
    att.query, att.key, att.value = (_linear_rows(m, cols)
                                     for m in (att.query, att.key, att.value))
    att.num_heads = len(keep_heads)
    layer.attention.output.dense = _linear_cols(layer.attention.output.dense, cols)
    keep_units = _top(unit_scores, _n_keep(len(unit_scores), fraction))
    layer.intermediate.dense = _linear_rows(layer.intermediate.dense, keep_units)
    layer.output.dense = _linear_cols(layer.output.dense, keep_units)
    return len(keep_heads), len(keep_units)


class RemappedEmbedding(nn.Module):
    """An embedding table holding only kept tokens, indexed by the original token ids.

    ``token_map[original_id]`` is the row of ``table``; tokens that were dropped map to
    the ``[UNK]`` row. Exports as two Gathers, so the model's inputs do not change.
    """

    token_map: torch.Tensor

    def __init__(self, table: nn.Embedding, token_map: torch.Tensor) -> None:
        super().__init__()
        self.table = table
        self.register_buffer("token_map", token_map.to(torch.int64))

    @property
    def weight(self) -> torch.Tensor:
        return self.table.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.table(self.token_map[input_ids])


def prune_vocabulary(embedding: nn.Embedding, kept_ids: Iterable[int], unk_id: int
                     ) -> RemappedEmbedding:
    """Keep the rows of ``kept_ids`` (plus padding and ``unk_id``) of ``embedding``."""
    vocab = embedding.num_embeddings
    keep = {int(i) for i in kept_ids if 0 <= int(i) < vocab} | {unk_id}
    pad = embedding.padding_idx
    if pad is not None:
        keep.add(pad)
    rows = torch.tensor(sorted(keep), dtype=torch.int64)
    token_map = torch.full((vocab,), -1, dtype=torch.int64)
    token_map[rows] = torch.arange(len(rows))
    token_map[token_map < 0] = int(token_map[unk_id])
    new_pad = int(token_map[pad]) if pad is not None else None
    table = nn.Embedding(len(rows), embedding.embedding_dim, padding_idx=new_pad)
    with torch.no_grad():
        table.weight.copy_(embedding.weight[rows])
    return RemappedEmbedding(table, token_map)


# --- whole models ---------------------------------------------------------------------


def _token_embedding(model: nn.Module) -> tuple[nn.Module, str] | None:
    """(module, attribute) of the token embedding table: BERT's ``word_embeddings`` or
    ``embedding_bag``'s ``embed``; None when there is none (or it was pruned already)."""
    for m in model.modules():
        if isinstance(getattr(m, "word_embeddings", None), nn.Embedding):
            return m, "word_embeddings"
    if isinstance(getattr(model, "embed", None), nn.Embedding):
        return model, "embed"
    return None


def prune_model(model: nn.Module, spec: Mapping[str, Any], fraction: float, *,
                sample: Mapping[str, np.ndarray] | None = None,
                kept_token_ids: Iterable[int] | None = None, unk_id: int = 100
                ) -> dict[str, Any]:
    """Prune ``model`` (built from ``spec``) in place; return what was kept.

    ``sample`` (model inputs + ``label_index``) ranks BERT heads and FFN units by their
    Taylor importance; ``kept_token_ids`` (text models) prunes the vocabulary to those
    tokens. The returned dict records the architecture and parameter counts.
    """
    from sparkforge.models import input_names

    name = spec["name"]
    before = count_parameters(model)
    info: dict[str, Any] = {"method": "", "fraction": fraction}
    if name == "mlp":
        info["hidden_dims"] = prune_sequential(model.net, fraction)  # type: ignore[arg-type]
        info["method"] = "hidden neurons by weight norm"
    elif name == "embedding_bag":
        info["hidden_dims"] = prune_sequential(model.head, fraction)  # type: ignore[arg-type]
        info["method"] = "hidden neurons by weight norm"
    else:
        layers = _bert_layers(model)
        if not layers:
            raise ValueError(f"model {name!r}: nothing to prune (no BERT layers found)")
        regression = int(spec.get("num_outputs", 2)) == 1
        if sample is not None and "label_index" in sample and not regression:
            scores = _taylor_scores(model, layers, sample, input_names(spec), "label_index")
            info["method"] = (f"heads and FFN units by Taylor importance on "
                              f"{len(sample['label_index'])} train rows")
        else:
            scores = [_norm_scores(layer) for layer in layers]
            info["method"] = "heads and FFN units by weight norm"
        kept = [prune_bert_layer(layer, h, u, fraction)
                for layer, (h, u) in zip(layers, scores, strict=True)]
        info["layer_heads"] = [h for h, _ in kept]
        info["intermediate_sizes"] = [u for _, u in kept]
    if kept_token_ids is not None:
        found = _token_embedding(model)
        if found is not None:
            owner, attr = found
            old: nn.Embedding = getattr(owner, attr)
            new = prune_vocabulary(old, kept_token_ids, unk_id)
            setattr(owner, attr, new)
            info["vocab_rows"] = [old.num_embeddings, new.table.num_embeddings]
    after = count_parameters(model)
    info.update(parameters_before=before, parameters_after=after)
    log.info("Pruned %s: %s -> %s parameters (%s)", name, before, after, info)
    return info
