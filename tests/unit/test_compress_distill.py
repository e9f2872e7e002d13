"""Distillation pieces without Spark: the student's spec, the loss, one rank's training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from sparkforge.compress.distill import (
    STUDENT_WEIGHTS,
    TEACHER_COLUMN,
    _kd_loss,
    distill_spec,
    student_spec,
)
from sparkforge.compress.prune import count_parameters
from sparkforge.models import build_model, load_weights
from sparkforge.train.loop import train_rank
from sparkforge.train.spec import TrainSpec


def _spec(tmp_path: Path, student: dict, *, epochs: int, val_fold: int | None) -> TrainSpec:
    """Distillation as the compress stage specifies it, from a training spec."""
    base = TrainSpec(model={}, inputs=("features",), target="label_index", batch_size=32,
                     patience=3, seed=0, threads=1, val_fold=val_fold, out_dir=str(tmp_path))
    return distill_spec(base, soft_labels=tmp_path / "soft", val_dir=tmp_path / "val",
                        out_dir=tmp_path, student=student, epochs=epochs, lr=1e-2,
                        alpha=0.9, temperature=2.0)


def test_student_specs_are_smaller_models_of_the_same_interface() -> None:
    mlp = {"name": "mlp", "num_outputs": 2, "input_dim": 30, "hidden_dim": 128, "dropout": 0.2}
    assert student_spec(mlp, 32) == {"name": "mlp", "num_outputs": 2, "dropout": 0.2,
                                     "input_dim": 30, "hidden_dim": 32}
    eb = {"name": "embedding_bag", "num_outputs": 3, "vocab_size": 500, "bigram_buckets": 64}
    assert student_spec(eb, 16)["bigram_buckets"] == 0
    minilm = {"name": "minilm", "num_outputs": 2, "pretrained": False}
    spec = student_spec(minilm, 64, vocab_size=30522)
    assert spec["name"] == "embedding_bag"
    assert spec["vocab_size"] == 30522
    with pytest.raises(ValueError, match="vocabulary size"):
        student_spec(minilm, 64)
    teacher = build_model({"name": "minilm", "num_outputs": 2, "pretrained": False})
    student = build_model(spec)
    assert count_parameters(student) < 0.15 * count_parameters(teacher)


def test_kd_loss() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(8, 3), torch.randn(8, 3)
    y = torch.randint(0, 3, (8,))
    ce = torch.nn.functional.cross_entropy(s, y)
    torch.testing.assert_close(_kd_loss(s, t, y, regression=False, alpha=0.0, temperature=2.0),
                               ce)
    # A student equal to its teacher has no soft-label loss left.
    assert float(_kd_loss(t, t, y, regression=False, alpha=1.0, temperature=2.0)) < 1e-6
    assert float(_kd_loss(s, t, y, regression=False, alpha=1.0, temperature=2.0)) > 0
    reg = _kd_loss(s[:, :1], t[:, :1], t[:, 0], regression=True, alpha=0.5, temperature=1.0)
    torch.testing.assert_close(reg, torch.nn.functional.mse_loss(s[:, 0], t[:, 0]))


def _write(path: Path, x: np.ndarray, y: np.ndarray, logits: np.ndarray | None) -> None:
    path.mkdir(parents=True)
    cols = {"features": pa.array(list(x), pa.list_(pa.float32())),
            "label_index": pa.array(y, pa.int32())}
    if logits is not None:
        cols[TEACHER_COLUMN] = pa.array(list(logits), pa.list_(pa.float32()))
    pq.write_table(pa.table(cols), path / "part-0.parquet")


def test_distillation_trains_a_student_in_one_process(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 8)).astype(np.float32)
    score = x[:, 0] - x[:, 1]
    # The teacher's logits carry the signal; labels are 20% noisy.
    logits = np.stack([-score, score], axis=1).astype(np.float32) * 3
    y = (score > 0).astype(np.int32)
    noisy = np.where(rng.random(600) < 0.2, 1 - y, y)
    _write(tmp_path / "soft", x[:500], noisy[:500], logits[:500])
    _write(tmp_path / "val", x[500:], y[500:], None)
    spec = {"name": "mlp", "num_outputs": 2, "input_dim": 8, "hidden_dim": 8}
    result = train_rank(_spec(tmp_path, spec, epochs=6, val_fold=None))
    assert 1 <= len(result["history"]) <= 6
    assert result["best_val_metric"] >= 0.9
    student = load_weights(build_model(spec), tmp_path / STUDENT_WEIGHTS).eval()
    with torch.no_grad():
        pred = student(torch.from_numpy(x[500:])).argmax(-1).numpy()
    assert (pred == y[500:]).mean() == pytest.approx(result["best_val_metric"])


def test_distillation_chooses_its_epoch_on_validation_fold_0_only(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(700, 8)).astype(np.float32)
    score = x[:, 0] - x[:, 1]
    logits = np.stack([-score, score], axis=1).astype(np.float32) * 3
    y = (score > 0).astype(np.int32)
    _write(tmp_path / "soft", x[:500], y[:500], logits[:500])
    # Fold 1 (the gate's rows) has its labels flipped: a student judged on it scores ~0.
    fold = (np.arange(200) % 2).astype(np.int32)
    val_y = np.where(fold == 1, 1 - y[500:], y[500:]).astype(np.int32)
    (tmp_path / "val").mkdir()
    pq.write_table(pa.table({"features": pa.array(list(x[500:]), pa.list_(pa.float32())),
                             "label_index": pa.array(val_y, pa.int32()),
                             "fold": pa.array(fold)}), tmp_path / "val" / "part-0.parquet")
    spec = {"name": "mlp", "num_outputs": 2, "input_dim": 8, "hidden_dim": 8}
    result = train_rank(_spec(tmp_path, spec, epochs=4, val_fold=0))
    assert result["best_val_metric"] >= 0.9  # judged on all rows, ~0.5
    assert result["val_rows"] == 100
    student = load_weights(build_model(spec), tmp_path / STUDENT_WEIGHTS).eval()
    with torch.no_grad():
        pred = student(torch.from_numpy(x[500:][fold == 0])).argmax(-1).numpy()
    assert result["best_val_metric"] == pytest.approx((pred == y[500:][fold == 0]).mean())
