"""Structured pruning: fewer parameters, smaller ONNX files, and the right units removed.

Each test zeroes the outgoing weights of the units it expects pruning to remove: those
units then contribute nothing, so the pruned model must compute exactly what the
original did, with fewer parameters.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from _batches import text_batch

from sparkforge.compress import check_parity, export_onnx, quantize_int8_dynamic
from sparkforge.compress.prune import count_parameters, prune_model, prune_vocabulary
from sparkforge.models import build_model
from sparkforge.models.minilm import BertConfig, MiniLMClassifier

TINY_BERT = BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, max_position_embeddings=32)
BERT_SPEC = {"name": "minilm", "num_outputs": 3, "pretrained": False}


def _run(model: torch.nn.Module, batch: dict[str, np.ndarray]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(*(torch.from_numpy(v) for v in batch.values()))


def _tiny_bert(seed: int = 0) -> MiniLMClassifier:
    torch.manual_seed(seed)
    return MiniLMClassifier(num_outputs=3, pretrained=False, config=TINY_BERT).eval()


def test_mlp_pruning_removes_the_smallest_neurons(tmp_path: Path) -> None:
    torch.manual_seed(0)
    spec = {"name": "mlp", "num_outputs": 3, "input_dim": 10, "hidden_dim": 64}
    model = build_model(spec).eval()
    dead1, dead2 = list(range(1, 64, 2)), [*range(0, 20), *range(40, 52)]
    with torch.no_grad():
        model.net[3].weight[:, dead1] = 0  # layer 1 neurons nobody reads
        model.net[6].weight[:, dead2] = 0  # layer 2 neurons nobody reads
    x = {"features": np.random.default_rng(0).normal(size=(20, 10)).astype(np.float32)}
    before = _run(model, x)
    export_onnx(model, spec, tmp_path / "fp32.onnx", x)
    n_before = count_parameters(model)

    info = prune_model(model, spec, 0.5)

    assert info["hidden_dims"] == [32, 32]
    assert info["parameters_before"] == n_before
    assert info["parameters_after"] == count_parameters(model) < 0.5 * n_before
    torch.testing.assert_close(_run(model, x), before, rtol=0, atol=1e-6)
    export_onnx(model, spec, tmp_path / "pruned.onnx", x)
    assert (tmp_path / "pruned.onnx").stat().st_size < 0.6 * (tmp_path / "fp32.onnx").stat().st_size
    assert check_parity(model, tmp_path / "pruned.onnx", x)["max_abs_prob_diff"] < 1e-5


def test_embedding_bag_pruning_shrinks_the_head() -> None:
    torch.manual_seed(0)
    spec = {"name": "embedding_bag", "num_outputs": 2, "vocab_size": 50, "embed_dim": 8,
            "hidden_dim": 12}
    model = build_model(spec).eval()
    info = prune_model(model, spec, 0.25)
    assert info["hidden_dims"] == [9]
    assert model.head[1].out_features == 9
    assert model.head[4].in_features == 9


def test_bert_heads_and_ffn_units_are_pruned_by_taylor_importance(tmp_path: Path) -> None:
    model = _tiny_bert()
    hd = TINY_BERT.hidden_size // TINY_BERT.num_attention_heads
    dead_heads, dead_units = [[0, 3], [1, 2]], [list(range(0, 64, 2)), list(range(32, 64))]
    with torch.no_grad():
        for layer, heads, units in zip(model.bert.encoder.layer, dead_heads, dead_units,
                                       strict=True):
            for h in heads:
                layer.attention.output.dense.weight[:, h * hd:(h + 1) * hd] = 0
            layer.output.dense.weight[:, units] = 0
    rng = np.random.default_rng(1)
    batch = text_batch(rng, 12, 9, TINY_BERT.vocab_size, min_len=2)
    before = _run(model, batch)
    export_onnx(model, BERT_SPEC, tmp_path / "fp32.onnx", batch)
    sample = {**text_batch(rng, 40, 9, TINY_BERT.vocab_size, min_len=2),
              "label_index": rng.integers(0, 3, size=40)}

    info = prune_model(model, BERT_SPEC, 0.5, sample=sample)

    assert "Taylor" in info["method"]
    assert info["layer_heads"] == [2, 2]
    assert info["intermediate_sizes"] == [32, 32]
    assert info["parameters_after"] < info["parameters_before"]
    layer0 = model.bert.encoder.layer[0]
    assert layer0.attention.self.query.out_features == 2 * hd
    assert layer0.attention.output.dense.in_features == 2 * hd
    assert layer0.intermediate.dense.out_features == 32
    torch.testing.assert_close(_run(model, batch), before, rtol=0, atol=1e-5)
    # The rebuilt layers export, run in ONNX Runtime and quantize like the original.
    export_onnx(model, BERT_SPEC, tmp_path / "pruned.onnx", batch)
    assert (tmp_path / "pruned.onnx").stat().st_size < (tmp_path / "fp32.onnx").stat().st_size
    other = text_batch(rng, 5, 13, TINY_BERT.vocab_size, min_len=2)  # new batch and sequence sizes
    assert check_parity(model, tmp_path / "pruned.onnx", other)["max_abs_prob_diff"] < 1e-5
    int8 = quantize_int8_dynamic(tmp_path / "pruned.onnx", tmp_path / "pruned_int8.onnx")
    assert int8.stat().st_size < (tmp_path / "pruned.onnx").stat().st_size


def test_bert_pruning_without_a_sample_uses_weight_norms() -> None:
    model = _tiny_bert()
    info = prune_model(model, BERT_SPEC, 0.75)
    assert info["method"] == "heads and FFN units by weight norm"
    assert info["layer_heads"] == [1, 1]  # at least one head is always kept
    assert info["intermediate_sizes"] == [16, 16]
    batch = text_batch(np.random.default_rng(0), 3, 5, TINY_BERT.vocab_size, min_len=2)
    assert _run(model, batch).shape == (3, 3)


def test_vocabulary_pruning_maps_unseen_tokens_to_unk(tmp_path: Path) -> None:
    config = dataclasses.replace(TINY_BERT, vocab_size=3000)
    torch.manual_seed(0)
    model = MiniLMClassifier(num_outputs=3, pretrained=False, config=config).eval()
    original = copy.deepcopy(model)
    kept = list(range(1, 120))
    info = prune_model(model, BERT_SPEC, 0.01, kept_token_ids=kept, unk_id=100)
    # 119 kept tokens + padding row 0; [UNK] (100) is among them.
    assert info["vocab_rows"] == [3000, 120]
    rng = np.random.default_rng(2)
    seen = text_batch(rng, 6, 7, 120, min_len=2)
    unseen = {**seen, "input_ids": np.where(seen["input_ids"] > 60, seen["input_ids"] + 150,
                                            seen["input_ids"])}
    as_unk = {**seen, "input_ids": np.where(seen["input_ids"] > 60, 100, seen["input_ids"])}
    # A fraction of 0.01 removes no head or unit of these small layers: only rows go.
    assert info["layer_heads"] == [4, 4]
    assert info["intermediate_sizes"] == [64, 64]
    torch.testing.assert_close(_run(model, seen), _run(original, seen), rtol=0, atol=1e-5)
    torch.testing.assert_close(_run(model, unseen), _run(original, as_unk), rtol=0, atol=1e-5)
    export_onnx(model, BERT_SPEC, tmp_path / "v.onnx", seen)
    export_onnx(original, BERT_SPEC, tmp_path / "o.onnx", seen)
    assert (tmp_path / "v.onnx").stat().st_size < 0.6 * (tmp_path / "o.onnx").stat().st_size
    assert check_parity(model, tmp_path / "v.onnx", unseen)["max_abs_prob_diff"] < 1e-5


def test_prune_vocabulary_keeps_padding_row() -> None:
    emb = torch.nn.Embedding(10, 4, padding_idx=0)
    new = prune_vocabulary(emb, [3, 7], unk_id=1)
    assert new.table.num_embeddings == 4  # pad, unk, 3, 7
    assert new.table.padding_idx == 0
    ids = torch.tensor([[0, 1, 3, 7, 5]])
    torch.testing.assert_close(new(ids), emb(torch.tensor([[0, 1, 3, 7, 1]])))


def test_embedding_bag_vocabulary_pruning_keeps_bigrams() -> None:
    torch.manual_seed(0)
    spec = {"name": "embedding_bag", "num_outputs": 2, "vocab_size": 60, "embed_dim": 8,
            "hidden_dim": 8, "bigram_buckets": 32}
    model = build_model(spec).eval()
    reference = build_model(spec).eval()
    reference.load_state_dict(model.state_dict())
    info = prune_model(model, spec, 0.01, kept_token_ids=range(1, 30), unk_id=1)
    assert info["vocab_rows"] == [60, 30]
    batch = text_batch(np.random.default_rng(3), 4, 6, 30, min_len=2)
    # Hidden units pruned by 1% of 8 = 0: the same network, seen tokens only.
    torch.testing.assert_close(_run(model, batch), _run(reference, batch), rtol=0, atol=1e-6)


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_prune_fraction_bounds_are_enforced_by_config(fraction: float) -> None:
    from sparkforge.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"compress\.prune_fraction"):
        load_config(None, ["data.input=x.csv", "task=tabular_classification",
                           f"compress.prune_fraction={fraction}"])
