"""Pruning's fine-tune and distillation choose epochs on validation fold 0 only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sparkforge.compress.finetune import fold_rows
from sparkforge.data.prepare import GATE_FOLD, SELECT_FOLD


def _write(path: Path, with_fold: bool) -> np.ndarray:
    rng = np.random.default_rng(4)
    folds = rng.integers(0, 2, size=50)
    cols = {"features": pa.array([[float(i), 1.0] for i in range(50)],
                                 type=pa.list_(pa.float32())),
            "label_index": pa.array(np.arange(50))}
    if with_fold:
        cols["fold"] = pa.array(folds.astype(np.int32))
    path.mkdir(parents=True)
    pq.write_table(pa.table(cols), path / "part-0.parquet")
    return folds


def test_fold_rows_keeps_only_the_asked_fold(tmp_path: Path) -> None:
    folds = _write(tmp_path / "split=val", with_fold=True)
    chosen = fold_rows(tmp_path / "split=val", ["features", "label_index"], SELECT_FOLD)
    assert set(chosen) == {"features", "label_index"}
    assert chosen["label_index"].tolist() == np.flatnonzero(folds == SELECT_FOLD).tolist()
    assert chosen["features"][:, 0].tolist() == np.flatnonzero(folds == SELECT_FOLD).tolist()
    judged = fold_rows(tmp_path / "split=val", ["label_index"], GATE_FOLD)
    assert judged["label_index"].tolist() == np.flatnonzero(folds == GATE_FOLD).tolist()


def test_data_without_folds_gives_every_row(tmp_path: Path) -> None:
    _write(tmp_path / "split=val", with_fold=False)
    rows = fold_rows(tmp_path / "split=val", ["label_index"], SELECT_FOLD)
    assert rows["label_index"].tolist() == list(range(50))
