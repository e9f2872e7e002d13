"""Model construction, the MiniLM encoder against the pretrained checkpoint, weight files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from _batches import text_batch
from safetensors.torch import load_file

from sparkforge.models import (
    build_model,
    input_names,
    load_weights,
    model_vocab_path,
    pretrained_model_dir,
    save_weights,
)

# First 8 dims of the normalised all-MiniLM-L6-v2 embedding of "A man is playing a
# guitar.", computed once with transformers' BertModel + mean pooling.
REFERENCE_GUITAR = [0.0216641, -0.0048642, -0.0096491, -0.0634013,
                    -0.1674935, 0.0046764, 0.0805998, -0.0241421]
SENTENCES = ["A man is playing a guitar.", "Someone plays the guitar.",
             "The stock market fell sharply today."]


def _tokenize(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(pretrained_model_dir() / "tokenizer.json"))
    tok.no_padding()
    tok.enable_padding()  # pad to the longest row of this batch
    enc = tok.encode_batch(texts)
    return (torch.tensor([e.ids for e in enc]), torch.tensor([e.attention_mask for e in enc]))


def _pad(ids: torch.Tensor, mask: torch.Tensor, extra: int) -> tuple[torch.Tensor, torch.Tensor]:
    zeros = torch.zeros(ids.shape[0], extra, dtype=ids.dtype)
    return torch.cat([ids, zeros], dim=1), torch.cat([mask, zeros], dim=1)


def _text_batch(rng: np.random.Generator, batch: int, seq: int, vocab: int = 1000
                ) -> tuple[torch.Tensor, torch.Tensor]:
    b = text_batch(rng, batch, seq, vocab, full_first=False)
    return torch.from_numpy(b["input_ids"]), torch.from_numpy(b["attention_mask"])


@pytest.fixture(scope="module")
def minilm() -> torch.nn.Module:
    return build_model({"name": "minilm", "num_outputs": 3}).eval()


def test_mlp_shapes() -> None:
    spec = {"name": "mlp", "num_outputs": 3, "input_dim": 10, "activation": "gelu"}
    model = build_model(spec)
    assert model(torch.randn(5, 10)).shape == (5, 3)
    assert input_names(spec) == ["features"]


@pytest.mark.parametrize("bigram_buckets", [0, 256])
def test_embedding_bag_shapes_and_padding(bigram_buckets: int) -> None:
    spec = {"name": "embedding_bag", "num_outputs": 4, "vocab_size": 1000, "embed_dim": 16,
            "hidden_dim": 8, "bigram_buckets": bigram_buckets}
    model = build_model(spec).eval()
    ids, mask = _text_batch(np.random.default_rng(0), batch=6, seq=9)
    with torch.no_grad():
        out = model(ids, mask)
        padded = model(*_pad(ids, mask, 5))
        empty = model(torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long))
    assert out.shape == (6, 4)
    torch.testing.assert_close(out, padded, rtol=0, atol=1e-6)
    assert torch.isfinite(empty).all()  # all-padding rows do not divide by zero
    assert input_names(spec) == ["input_ids", "attention_mask"]


@pytest.mark.parametrize(("spec", "message"), [
    ({"name": "cnn", "num_outputs": 2}, "use one of"),
    ({"name": "mlp", "num_outputs": 2, "input_dim": 4, "hiden_dim": 8},
     "did you mean 'hidden_dim'"),
    ({"name": "embedding_bag", "num_outputs": 2}, "missing ['vocab_size']"),
    ({"name": "mlp", "num_outputs": 0, "input_dim": 4}, "positive integer"),
])
def test_bad_specs_are_rejected(spec: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        build_model(spec)


def test_pretrained_files_are_found() -> None:
    assert model_vocab_path().is_file()
    assert (pretrained_model_dir() / "tokenizer.json").is_file()


def test_minilm_loads_checkpoint_strictly(minilm: torch.nn.Module) -> None:
    checkpoint = load_file(pretrained_model_dir() / "model.safetensors")
    result = minilm.bert.load_state_dict(checkpoint, strict=True)
    assert not result.missing_keys
    assert not result.unexpected_keys
    assert set(checkpoint) == set(minilm.bert.state_dict())


def test_minilm_sentence_embeddings(minilm: torch.nn.Module) -> None:
    ids, mask = _tokenize(SENTENCES)
    with torch.no_grad():
        emb = minilm.encode(ids, mask)
    assert emb.shape == (3, 384)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    np.testing.assert_allclose(emb[0, :8].numpy(), REFERENCE_GUITAR, atol=1e-5)
    sim = emb @ emb.T
    assert sim[0, 1] > 0.7  # paraphrases
    assert sim[0, 1] - max(sim[0, 2], sim[1, 2]) > 0.5  # ... far closer than unrelated text


def test_minilm_padding_invariance(minilm: torch.nn.Module) -> None:
    ids, mask = _tokenize(SENTENCES)
    padded = _pad(ids, mask, 11)
    with torch.no_grad():
        torch.testing.assert_close(minilm.encode(ids, mask), minilm.encode(*padded),
                                   rtol=0, atol=1e-5)
        logits = minilm(ids, mask)
        torch.testing.assert_close(logits, minilm(*padded), rtol=0, atol=1e-5)
    assert logits.shape == (3, 3)


def test_minilm_freeze_encoder() -> None:
    model = build_model({"name": "minilm", "num_outputs": 2, "freeze_encoder": True,
                         "pretrained": False})
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head.weight", "head.bias"}
    model.train()
    assert model.dropout.training
    assert not model.bert.training


def test_minilm_pooler_is_never_trained() -> None:
    # Unused trainable parameters would stall DistributedDataParallel.
    model = build_model({"name": "minilm", "num_outputs": 2, "pretrained": False})
    assert not any(p.requires_grad for p in model.bert.pooler.parameters())


@pytest.mark.parametrize("spec", [
    {"name": "mlp", "num_outputs": 2, "input_dim": 6},
    {"name": "embedding_bag", "num_outputs": 3, "vocab_size": 500, "bigram_buckets": 64},
    {"name": "minilm", "num_outputs": 2, "pretrained": False},
], ids=lambda s: s["name"])
def test_safetensors_round_trip(spec: dict, tmp_path: Path) -> None:
    torch.manual_seed(0)
    trained = build_model(spec).eval()
    path = save_weights(trained, tmp_path / "weights" / "model.safetensors")
    torch.manual_seed(1)  # a different random init, overwritten by the load
    restored = load_weights(build_model(spec), path).eval()
    if spec["name"] == "mlp":
        inputs: tuple[torch.Tensor, ...] = (torch.randn(4, 6),)
    else:
        inputs = _text_batch(np.random.default_rng(0), batch=4, seq=7, vocab=500)
    with torch.no_grad():
        torch.testing.assert_close(trained(*inputs), restored(*inputs), rtol=0, atol=0)
