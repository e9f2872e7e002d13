"""Static int8 (QDQ, calibrated) and fp16 variants of exported ONNX models."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from _batches import text_batch

from sparkforge.compress import export_onnx
from sparkforge.compress.quantize import (
    SampleReader,
    convert_fp16,
    quantize_int8_dynamic,
    quantize_int8_static,
)
from sparkforge.models import build_model


def _predict(path: Path, batch: dict[str, np.ndarray],
             level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
             ) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(["logits"], batch)[0]


def _ops(path: Path) -> Counter[str]:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


@pytest.fixture(scope="module")
def mlp_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    torch.manual_seed(0)
    spec = {"name": "mlp", "num_outputs": 3, "input_dim": 64, "hidden_dim": 256}
    model = build_model(spec).eval()
    x = np.random.default_rng(0).normal(size=(300, 64)).astype(np.float32)
    path = tmp_path_factory.mktemp("mlp") / "fp32.onnx"
    export_onnx(model, spec, path, {"features": x[:4]})
    return path, x


@pytest.mark.parametrize("level", [ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                   ort.GraphOptimizationLevel.ORT_ENABLE_ALL])
def test_int8_dynamic_scores_each_row_on_its_own(mlp_onnx: tuple[Path, np.ndarray],
                                                 tmp_path: Path,
                                                 level: ort.GraphOptimizationLevel) -> None:
    # ORT's DynamicQuantizeLinear took one range per batch: one outlier row changed every
    # other row's logits (by 1.7 of 8 on a trained MLP), and the same rows in other
    # batches scored differently. Each row now has its own activation range.
    fp32, x = mlp_onnx
    int8 = quantize_int8_dynamic(fp32, tmp_path / "dyn.onnx")
    rows = x[:64]
    batch = _predict(int8, {"features": rows}, level)
    alone = np.concatenate([_predict(int8, {"features": rows[i:i + 1]}, level)
                            for i in range(len(rows))])
    np.testing.assert_array_equal(batch, alone)
    outlier = rows.copy()
    outlier[0] *= 1000.0
    np.testing.assert_array_equal(_predict(int8, {"features": outlier}, level)[1:], batch[1:])
    # Per-row ranges are never coarser than the batch's: still close to fp32 (the
    # per-batch graph's error on these rows: 0.06).
    ref = _predict(fp32, {"features": rows}, level)
    assert np.abs(batch - ref).max() < 0.05
    assert (batch.argmax(1) == ref.argmax(1)).mean() >= 0.95
    ops = _ops(int8)
    assert ops["DynamicQuantizeLinear"] == 0
    assert ops["MatMulIntegerToFloat"] == 3


def test_sample_reader_gives_equal_shapes() -> None:
    rng = np.random.default_rng(0)
    batch = text_batch(rng, 70, 20, 50, min_len=2, full_first=False)
    batch["attention_mask"][:, 15:] = 0  # no row is longer than 15 tokens
    reader = SampleReader(batch, batch_size=32)
    shapes = []
    while (b := reader.get_next()) is not None:
        shapes.append(b["input_ids"].shape)
    # 70 rows -> two full batches (6 rows left out), cut to the longest row.
    assert shapes == [(32, 15), (32, 15)]
    reader.rewind()
    assert len(list(reader)) == 2
    assert SampleReader({"features": np.ones((5, 3), np.float32)}).batch_size == 5
    with pytest.raises(ValueError, match="at least one calibration row"):
        SampleReader({"features": np.ones((0, 3), np.float32)})


@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_int8_static_mlp(mlp_onnx: tuple[Path, np.ndarray], tmp_path: Path, method: str) -> None:
    fp32, x = mlp_onnx
    int8 = quantize_int8_static(fp32, tmp_path / "static.onnx", {"features": x[:128]},
                                method=method)
    ops = _ops(int8)
    assert ops["QuantizeLinear"] > 0
    assert ops["DequantizeLinear"] > 0
    # int8 weights (4x smaller) + scales: well under half of the fp32 file.
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size
    test = {"features": x[128:]}
    ref, got = _predict(fp32, test), _predict(int8, test)
    assert (ref.argmax(1) == got.argmax(1)).mean() >= 0.9
    assert np.abs(ref - got).max() < 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["static.onnx"]  # no temp files left


def test_int8_static_text_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    spec = {"name": "embedding_bag", "num_outputs": 2, "vocab_size": 2000, "embed_dim": 32,
            "hidden_dim": 16}
    model = build_model(spec).eval()
    rng = np.random.default_rng(1)
    export_onnx(model, spec, tmp_path / "fp32.onnx",
                text_batch(rng, 4, 8, 2000, min_len=2, full_first=False))
    int8 = quantize_int8_static(tmp_path / "fp32.onnx", tmp_path / "static.onnx",
                                text_batch(rng, 64, 12, 2000, min_len=2, full_first=False))
    assert int8.stat().st_size < 0.5 * (tmp_path / "fp32.onnx").stat().st_size
    batch = text_batch(rng, 32, 9, 2000, min_len=2, full_first=False)
    diff = np.abs(_predict(int8, batch) - _predict(tmp_path / "fp32.onnx", batch))
    # Activations are int8 too: short rows' pooled vectors are quantized coarsely.
    assert diff.mean() < 0.1
    assert diff.max() < 0.5


def test_unknown_calibration_method(mlp_onnx: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    fp32, x = mlp_onnx
    with pytest.raises(ValueError, match="calibration method 'median'"):
        quantize_int8_static(fp32, tmp_path / "s.onnx", {"features": x}, method="median")


def test_fp16_keeps_float32_io(mlp_onnx: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    fp32, x = mlp_onnx
    half = convert_fp16(fp32, tmp_path / "fp16.onnx")
    graph = onnx.load(str(half)).graph
    assert [i.type.tensor_type.elem_type for i in graph.input] == [onnx.TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in graph.output] == [onnx.TensorProto.FLOAT]
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer)
    assert half.stat().st_size < 0.6 * fp32.stat().st_size
    got = _predict(half, {"features": x})
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, _predict(fp32, {"features": x}), atol=2e-2)


@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_int8_weights_fit_the_kernels_without_saturation(mlp_onnx: tuple[Path, np.ndarray],
                                                         tmp_path: Path, kind: str) -> None:
    """Weights are 7-bit (|w| <= 64): u8 activations x s8 weights summed in pairs fit in 16
    bits, so x86 CPUs without VNNI (which saturate there) give the same integers as those
    with it. On an AVX2-only AMD EPYC, 8-bit weights broke the two tests above."""
    from onnx import numpy_helper

    fp32, x = mlp_onnx
    path = (quantize_int8_dynamic(fp32, tmp_path / "q.onnx") if kind == "dynamic" else
            quantize_int8_static(fp32, tmp_path / "q.onnx", {"features": x[:128]}))
    weights = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer
               if t.data_type == onnx.TensorProto.INT8 and t.dims and len(t.dims) == 2]
    assert len(weights) == 3  # the MLP's three weight matrices
    largest = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
    assert 2 * 255 * largest <= 32767  # a pair of products fits in int16 (7 bits: 64)
