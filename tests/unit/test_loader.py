"""The arrow loader: exactly-once per epoch (bar the documented pad) and equal steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sparkforge.train.loader import ShardedLoader, read_split, trim_padding


@pytest.mark.parametrize(("n", "world", "batch"), [(103, 2, 8), (10, 3, 4), (7, 4, 64), (1, 2, 1)])
def test_every_row_once_per_epoch_and_equal_steps(n: int, world: int, batch: int) -> None:
    data = {"id": np.arange(n), "x": np.arange(n) * 10}
    loaders = [ShardedLoader(data, r, world, batch, seed=5) for r in range(world)]
    for epoch in range(3):
        seen: list[int] = []
        steps = []
        for ld in loaders:
            batches = list(ld.epoch(epoch))
            steps.append(len(batches))
            for b in batches:
                assert (b["x"] == b["id"] * 10).all()  # columns stay aligned
                seen.extend(b["id"].tolist())
        assert len(set(steps)) == 1, f"ranks ran different step counts {steps}"
        counts = np.bincount(seen, minlength=n)
        pad = -(-n // world) * world - n
        assert (counts >= 1).all()                    # nobody is dropped
        assert counts.sum() == n + pad                # only the documented pad repeats
        assert (counts > 1).sum() <= pad


def test_shuffle_is_seeded_and_changes_per_epoch() -> None:
    data = {"id": np.arange(50)}
    a = ShardedLoader(data, 0, 2, 5, seed=1)
    b = ShardedLoader(data, 0, 2, 5, seed=1)
    assert (a.indices(0) == b.indices(0)).all()
    assert not (a.indices(0) == a.indices(1)).all()


def test_read_split_handles_uneven_files_and_an_empty_file(tmp_path: Path) -> None:
    split = tmp_path / "split=train"
    split.mkdir()
    rng = np.random.default_rng(0)
    total = 0
    for i, n in enumerate([0, 5, 17]):
        ids = [[int(v) for v in rng.integers(1, 99, size=6)] for _ in range(n)]
        masks = [[1, 1, 1, 0, 0, 0] for _ in range(n)]
        t = pa.table({"input_ids": pa.array(ids, pa.list_(pa.int32())),
                      "attention_mask": pa.array(masks, pa.list_(pa.int32())),
                      "label_index": pa.array(range(total, total + n), pa.int32())})
        pq.write_table(t, split / f"part-{i}.parquet")
        total += n
    data = read_split(split, ["input_ids", "attention_mask", "label_index"])
    assert data["input_ids"].shape == (22, 6)
    assert sorted(data["label_index"].tolist()) == list(range(22))
    loader = ShardedLoader(data, 1, 2, 4, seed=0)
    b = trim_padding(next(iter(loader.epoch(0))))
    assert b["input_ids"].shape[1] == 3  # padded per batch to the longest row, not 6
