"""The loaders: exactly-once per epoch (bar the documented pad) and equal steps per rank.

Counted by id over every rank, with uneven files, several row groups per file and empty
files; the arrow loader must also read only its own share.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sparkforge.train.loader import (
    PAD_KEY,
    ArrowLoader,
    RowGroup,
    ShardedLoader,
    plan_epoch,
    read_head,
    read_split,
    trim_padding,
)


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


@pytest.mark.parametrize("rows", [1, 7, 30, 81, 500])
def test_read_head_is_the_first_rows_of_read_split(tmp_path: Path, rows: int) -> None:
    """compress's parity sample: the same rows read_split puts first, across uneven and
    empty files and row groups, without reading the rest."""
    split = tmp_path / "split=val"
    _write_split(split, [0, 23, 40, 1, 0, 17])
    cols = ["x", "features"]
    whole, head = read_split(split, cols), read_head(split, cols, rows)
    for c in cols:
        np.testing.assert_array_equal(head[c], whole[c][:rows])
    assert read_head(tmp_path / "nothing", cols, 5)["x"].shape == (0,)


# ---------------------------------------------------------------------------
# ArrowLoader: each rank reads only its share of the Parquet files


def _write_split(split: Path, sizes: list[int], row_group_size: int = 7) -> int:
    """Files of ``sizes`` rows (0: an empty file), ids 0..N-1, several row groups each."""
    split.mkdir(parents=True)
    start = 0
    for i, n in enumerate(sizes):
        ids = np.arange(start, start + n)
        t = pa.table({"id": pa.array([f"r{v}" for v in ids], pa.string()),
                      "x": pa.array(ids * 10, pa.int64()),
                      "features": pa.array([[float(v), 1.0] for v in ids],
                                           pa.list_(pa.float32()))})
        pq.write_table(t, split / f"part-{i:03d}.parquet", row_group_size=row_group_size)
        start += n
    return start


@pytest.mark.parametrize(("sizes", "world", "batch"), [
    ([0, 23, 40, 1, 0, 17], 2, 8),   # uneven files, two empty ones, N = 81 (odd)
    ([0, 23, 40, 1, 0, 17], 3, 5),
    ([3, 0, 2], 4, 2),               # N = 5 on 4 ranks: three ranks repeat a row
    ([2], 3, 4),                     # N < world: a rank has no rows of its own
    ([200], 2, 16),                  # one file, many row groups
])
def test_arrow_loader_every_id_once_per_epoch_and_equal_steps(
        tmp_path: Path, sizes: list[int], world: int, batch: int) -> None:
    n = _write_split(tmp_path / "split=train", sizes)
    loaders = [ArrowLoader(tmp_path / "split=train", ["id", "x", "features"], r, world, batch,
                           seed=3, window_rows=16) for r in range(world)]
    pad = -(-n // world) * world - n
    orders = []
    for epoch in range(3):
        counts: Counter[str] = Counter()
        steps = []
        for ld in loaders:
            batches = list(ld.epoch(epoch))
            steps.append(len(batches))
            assert len(batches) == len(ld)
            for b in batches:
                ids = np.array([int(s[1:]) for s in b["id"]])
                assert (b["x"] == ids * 10).all()            # columns stay aligned
                assert (b["features"][:, 0] == ids).all()
                assert b["features"].dtype == np.float32
                counts.update(b["id"].tolist())
                # Only the documented pad rows are flagged, and the flag matches repeats.
                assert b[PAD_KEY].sum() <= 1
        assert len(set(steps)) == 1, f"ranks ran different step counts {steps}"
        assert set(counts) == {f"r{i}" for i in range(n)}     # nobody is dropped
        assert sum(counts.values()) == n + pad                 # only the pad repeats
        assert sum(c - 1 for c in counts.values()) == pad
        orders.append([b["id"].tolist() for ld in loaders for b in ld.epoch(epoch)])
    if n > 2 * world:
        assert len({str(o) for o in orders}) > 1  # reshuffled per epoch


def test_arrow_loader_ranks_read_only_their_share(tmp_path: Path) -> None:
    n = _write_split(tmp_path / "split=train", [0, 50, 31, 64, 0, 29, 45], row_group_size=10)
    world = 2
    loaders = [ArrowLoader(tmp_path / "split=train", ["id"], r, world, 16, seed=0)
               for r in range(world)]
    for epoch in range(2):
        plans = [ld.plan(epoch) for ld in loaders]
        rows = [[(s.group.path, s.group.index, i) for s in p.slices
                 for i in range(s.start, s.stop)] for p in plans]
        assert not set(rows[0]) & set(rows[1])                 # disjoint ranges
        assert sum(len(r) for r in rows) == n
        assert abs(len(rows[0]) - len(rows[1])) <= 1
        for ld, p in zip(loaders, plans, strict=True):
            list(ld.epoch(epoch))
            # Whole row groups are decoded, so a rank reads its share plus at most the
            # boundary row groups (two, or four when its range wraps around) - never the
            # whole split.
            assert ld.rows_read <= p.num_rows + 4 * 10
            assert ld.rows_read < n


def test_arrow_loader_deterministic_and_empty_split(tmp_path: Path) -> None:
    _write_split(tmp_path / "split=train", [0, 9, 14])
    a = ArrowLoader(tmp_path / "split=train", ["id"], 1, 2, 4, seed=9)
    b = ArrowLoader(tmp_path / "split=train", ["id"], 1, 2, 4, seed=9)
    assert [x["id"].tolist() for x in a.epoch(2)] == [x["id"].tolist() for x in b.epoch(2)]
    _write_split(tmp_path / "split=val", [0])
    empty = ArrowLoader(tmp_path / "split=val", ["id"], 0, 2, 4, seed=9)
    assert len(empty) == 0
    assert list(empty.epoch(0)) == []


def test_plan_matches_in_memory_policy_counts() -> None:
    groups = [RowGroup("f", i, n) for i, n in enumerate([5, 0, 3, 9])]
    groups = [g for g in groups if g.num_rows]
    plans = plan_epoch(groups, 4, seed=1, epoch=0)
    assert [p.num_rows for p in plans] == [5, 5, 5, 5]       # ceil(17 / 4) each
    assert [p.pad is not None for p in plans] == [False, True, True, True]
