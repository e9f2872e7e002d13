"""The scoring core (``sparkforge.infer.predictor``) outside Spark: Arrow batches to model
inputs, sub-batches trimmed to their own longest row, outputs in row order, the model
loaded once per process and refused when its file changed. A tiny linear ONNX graph
(built with ``onnx.helper``) is the model; numpy computes the reference. A few
seconds (importing onnx and onnxruntime)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from sparkforge.artifacts import sha256_file
from sparkforge.infer import predictor as P


def _linear_onnx(path: Path, w: np.ndarray) -> Path:
    """logits = features @ w (float32), dynamic batch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w"], ["logits"])], "linear",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", w.shape[0]])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", w.shape[1]])],
        [numpy_helper.from_array(w.astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


class _Recorder:
    """A backend that returns each row's token count and records the shapes it saw."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        self.shapes.append(feeds["input_ids"].shape)
        assert feeds["input_ids"].dtype == np.int64
        return feeds["attention_mask"].sum(axis=1, keepdims=True).astype(np.float32)


def test_token_batches_are_cut_to_each_calls_longest_row() -> None:
    rng = np.random.default_rng(42)
    lengths = rng.integers(1, 12, size=23)
    lengths[:5] = 2  # the first call's rows are short: it must not be padded to 11
    width = 16
    ids = [[7] * n + [0] * (width - n) for n in lengths]
    mask = [[1] * n + [0] * (width - n) for n in lengths]
    batch = pa.record_batch({"input_ids": pa.array(ids, pa.list_(pa.int32())),
                             "attention_mask": pa.array(mask, pa.list_(pa.int32()))})
    rec = _Recorder()
    out = P.Predictor(rec, ["input_ids", "attention_mask"], batch_size=5).predict(batch)
    np.testing.assert_array_equal(out[:, 0], lengths)  # row order kept
    assert [s[0] for s in rec.shapes] == [5, 5, 5, 5, 3]
    assert [s[1] for s in rec.shapes] == [max(lengths[i:i + 5]) for i in range(0, 23, 5)]


def test_scores_equal_numpy_and_the_model_loads_once(tmp_path: Path) -> None:
    rng = np.random.default_rng(42)
    w = rng.normal(size=(4, 3))
    path = _linear_onnx(tmp_path / "m.onnx", w)
    x = rng.normal(size=(10, 4)).astype(np.float32)
    batch = pa.record_batch({
        "id": pa.array([str(i) for i in range(10)]), "label": pa.array(["a"] * 10),
        "split": pa.array(["test"] * 10),
        "features": pa.array(x.tolist(), pa.list_(pa.float64()))})
    log = tmp_path / "loads.txt"
    ref = P.ModelRef(str(path), sha256_file(path), load_log=str(log))
    first = P.Predictor.load(ref, ["features"], batch_size=4)
    again = P.Predictor.load(ref, ["features"], batch_size=4)
    assert first.backend is again.backend
    assert len(log.read_text().splitlines()) == 1
    logits = first.predict(batch)
    np.testing.assert_allclose(logits, x @ w.astype(np.float32), rtol=1e-5, atol=1e-5)

    out = P.score_columns(batch, logits, ["a", "b", "c"], "fp32")
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    assert out.column("prediction").to_pylist() == [["a", "b", "c"][i] for i in p.argmax(1)]
    np.testing.assert_allclose(np.array(out.column("probability").to_pylist()), p, atol=1e-6)
    assert out.column("model_variant").to_pylist() == ["fp32"] * 10


def test_a_changed_model_file_is_refused(tmp_path: Path) -> None:
    path = _linear_onnx(tmp_path / "m.onnx", np.eye(2))
    sha = sha256_file(path)
    _linear_onnx(path, 2 * np.eye(2))
    with pytest.raises(RuntimeError, match="changed after it was selected"):
        P.load_backend(P.ModelRef(str(path), sha))


def test_onnx_sessions_do_not_spin_idle_threads(tmp_path: Path) -> None:
    """With more than one intra-op thread, idle threads must sleep (ORT spins by default):
    the executor's other tasks and the JVM need those cores between batches."""
    path = _linear_onnx(tmp_path / "m.onnx", np.eye(3))
    backend = P.load_backend(P.ModelRef(str(path), sha256_file(path), threads=2))
    assert isinstance(backend, P.OnnxBackend)
    opts = backend.session.get_session_options()
    assert opts.intra_op_num_threads == 2
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.get_session_config_entry("session.inter_op.allow_spinning") == "0"
