"""ONNX export with dynamic axes, torch/ONNX Runtime parity and int8 quantization."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from _batches import text_batch

from sparkforge.compress import check_parity, export_onnx, quantize_int8_dynamic
from sparkforge.models import build_model, pretrained_model_dir

MINILM_SPEC = {"name": "minilm", "num_outputs": 4}
# Head of the MiniLM test model: logits are similarities to one anchor per class, so
# predictions are meaningful and int8 agreement is not decided by noise.
ANCHORS = ["This movie was wonderful and I loved it.",
           "The food was awful and the service was slow.",
           "Stocks and bonds fell as interest rates rose.",
           "The team won the championship game last night."]
TEXTS = ["I really enjoyed this film.", "Terrible meal, cold and bland.",
         "The market dropped two percent.", "They scored in the final minute to win.",
         "Best show I've seen all year.", "Waiter ignored us for an hour.",
         "Bond yields climbed again.", "The striker was injured in the match.",
         "A touching, beautifully acted story.", "The soup was too salty.",
         "Investors sold tech shares.", "Fans celebrated the victory downtown."]


def _tokenize(texts: list[str], extra_padding: int = 0) -> dict[str, np.ndarray]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(pretrained_model_dir() / "tokenizer.json"))
    tok.no_padding()
    tok.enable_padding()
    enc = tok.encode_batch(texts)
    pad = ((0, 0), (0, extra_padding))
    return {"input_ids": np.pad(np.array([e.ids for e in enc], dtype=np.int64), pad),
            "attention_mask": np.pad(np.array([e.attention_mask for e in enc], dtype=np.int64),
                                     pad)}


def _dims(path: Path) -> dict[str, list[str | int]]:
    graph = onnx.load(str(path)).graph
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*graph.input, *graph.output]}


def _predict(path: Path, batch: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], batch)[0]


@pytest.fixture(scope="module")
def minilm_export(tmp_path_factory: pytest.TempPathFactory
                  ) -> tuple[torch.nn.Module, Path, Path, dict]:
    """The slow part, done once: export MiniLM, then quantize it."""
    model = build_model(MINILM_SPEC).eval()
    anchors = _tokenize(ANCHORS)
    with torch.no_grad():
        emb = model.encode(torch.from_numpy(anchors["input_ids"]),
                           torch.from_numpy(anchors["attention_mask"]))
        model.head.weight.copy_(5.0 * emb)
        model.head.bias.zero_()
    out = tmp_path_factory.mktemp("minilm")
    meta = export_onnx(model, MINILM_SPEC, out / "model.onnx", _tokenize(["hello world", "hi"]))
    int8 = quantize_int8_dynamic(out / "model.onnx", out / "model.int8.onnx")
    return model, out / "model.onnx", int8, meta


def test_mlp_export_parity(tmp_path: Path) -> None:
    torch.manual_seed(0)
    spec = {"name": "mlp", "num_outputs": 3, "input_dim": 12}
    model = build_model(spec)
    rng = np.random.default_rng(0)
    # A one-row example must not freeze the batch axis at 1.
    meta = export_onnx(model, spec, tmp_path / "mlp.onnx",
                       {"features": rng.normal(size=(1, 12)).astype(np.float32)})
    assert meta == {"opset": 18, "inputs": ["features"], "output": "logits",
                    "file_bytes": (tmp_path / "mlp.onnx").stat().st_size}
    assert _dims(tmp_path / "mlp.onnx") == {"features": ["batch", 12], "logits": ["batch", 3]}
    for rows in (1, 33):
        parity = check_parity(model, tmp_path / "mlp.onnx",
                              {"features": rng.normal(size=(rows, 12)).astype(np.float32)})
        assert parity["max_abs_prob_diff"] < 1e-4
        assert parity["agreement"] == 1.0


def test_embedding_bag_export_parity_and_int8(tmp_path: Path) -> None:
    torch.manual_seed(0)
    spec = {"name": "embedding_bag", "num_outputs": 3, "vocab_size": 4000, "embed_dim": 64,
            "bigram_buckets": 1024}
    model = build_model(spec)
    rng = np.random.default_rng(1)
    export_onnx(model, spec, tmp_path / "eb.onnx", text_batch(rng, 4, 10, 4000))
    assert _dims(tmp_path / "eb.onnx")["input_ids"] == ["batch", "seq"]
    for batch, seq in ((1, 3), (9, 41)):
        parity = check_parity(model, tmp_path / "eb.onnx", text_batch(rng, batch, seq, 4000))
        assert parity["max_abs_prob_diff"] < 1e-4, (batch, seq, parity)
        assert parity["agreement"] == 1.0

    int8 = quantize_int8_dynamic(tmp_path / "eb.onnx", tmp_path / "eb.int8.onnx")
    # The embedding tables (Gather) are nearly all of this model's bytes.
    assert int8.stat().st_size < 0.4 * (tmp_path / "eb.onnx").stat().st_size
    batch = text_batch(rng, 16, 20, 4000)
    np.testing.assert_allclose(_predict(int8, batch), _predict(tmp_path / "eb.onnx", batch),
                               atol=0.05)


class _SlicedPositions(torch.nn.Module):
    """Slices a position buffer by sequence length: ORT's exact symbolic shape inference
    can only call the result Min(16, seq), which fails quantization pre-processing."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(50, 8)
        self.pos = torch.nn.Embedding(16, 8)
        self.register_buffer("position_ids", torch.arange(16).unsqueeze(0))
        self.head = torch.nn.Linear(8, 2)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids) + self.pos(self.position_ids[:, : input_ids.shape[1]])
        return self.head(x.mean(dim=1))


def test_quantize_retries_incomplete_shape_inference(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    spec = {"name": "embedding_bag", "num_outputs": 2, "vocab_size": 50}  # names the inputs
    model = _SlicedPositions()
    rng = np.random.default_rng(2)
    export_onnx(model, spec, tmp_path / "sliced.onnx", text_batch(rng, 3, 5, 50))
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    with caplog.at_level(logging.WARNING, logger="sparkforge.compress.quantize"):
        int8 = quantize_int8_dynamic(tmp_path / "sliced.onnx", "sliced.int8.onnx")
    assert "retrying with auto_merge=True" in caplog.text
    # ORT's debug dump of the failed inference must not be left in the working directory.
    assert sorted(p.name for p in workdir.iterdir()) == ["sliced.int8.onnx"]
    batch = text_batch(rng, 4, 7, 50)
    np.testing.assert_allclose(_predict(int8, batch), _predict(tmp_path / "sliced.onnx", batch),
                               atol=0.05)


def test_minilm_export_is_one_file_with_dynamic_axes(minilm_export: tuple) -> None:
    _, fp32, _, meta = minilm_export
    assert sorted(p.name for p in fp32.parent.iterdir()) == ["model.int8.onnx", "model.onnx"]
    assert meta["inputs"] == ["input_ids", "attention_mask"]
    assert meta["output"] == "logits"
    assert meta["file_bytes"] == fp32.stat().st_size
    assert _dims(fp32) == {"input_ids": ["batch", "seq"], "attention_mask": ["batch", "seq"],
                           "logits": ["batch", 4]}


def test_minilm_onnx_parity(minilm_export: tuple) -> None:
    model, fp32, _, _ = minilm_export
    # Batch size and sequence length differ from the 2 x 4 export example.
    for batch in (_tokenize(TEXTS, extra_padding=7), _tokenize(TEXTS[:1])):
        parity = check_parity(model, fp32, batch)
        assert parity["max_abs_prob_diff"] < 1e-4, parity
        assert parity["agreement"] == 1.0
    assert check_parity(model, fp32, _tokenize(TEXTS))["max_abs_logit_diff"] < 1e-3


def test_minilm_int8_is_small_and_agrees(minilm_export: tuple) -> None:
    _, fp32, int8, _ = minilm_export
    ratio = int8.stat().st_size / fp32.stat().st_size
    assert ratio <= 0.35, ratio
    batch = _tokenize(TEXTS, extra_padding=3)
    reference = _predict(fp32, batch).argmax(axis=1)
    assert list(reference) == [0, 1, 2, 3] * 3  # the anchor head works at all
    scores = _predict(int8, batch)
    assert (scores.argmax(axis=1) == reference).mean() >= 0.9
    # Each token's activations are quantized with their own range: a row's logits are
    # the same alone as beside others (per batch, they moved by up to 0.1).
    alone = np.concatenate([_predict(int8, {k: v[i:i + 1] for k, v in batch.items()})
                            for i in range(len(reference))])
    np.testing.assert_allclose(alone, scores, atol=1e-5)
