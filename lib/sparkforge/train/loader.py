"""Training data into the ranks: preprocessed Parquet -> numpy batches, one rank's share.

Two backends behind one interface (:class:`RankLoader`: ``len(loader)`` is the number of
steps per epoch, the same on every rank, and ``loader.epoch(e)`` yields that many
batches of ``{column: ndarray}``):

``arrow`` (:class:`ArrowLoader`, the default)
    Each rank reads only its share of the split with pyarrow. Per epoch, the Parquet
    row groups (files x row groups, empty ones skipped) are put in a seeded order that
    every rank computes alike; that order, read as one circular sequence of N rows from
    a seeded start, is cut into ``world`` contiguous ranges whose sizes differ by at
    most one row, and rank r reads only the row groups overlapping range r (those at
    its range's ends are shared with a neighbour, and each rank keeps only its rows of
    them). Rows are shuffled inside the rank with a seed of (seed, epoch, rank).

    Pad policy: every rank yields ``ceil(N / world)`` rows, so a rank whose range is one
    row short repeats one row: its own first row, or, when it has no rows at all
    (N < world), row ``r - N mod world`` of the epoch order. Fewer than ``world`` rows are
    therefore seen twice per epoch and every other row exactly once across ranks; the
    repeated rows carry ``PAD_KEY = True`` so validation metrics skip them.

``petastorm`` (:class:`PetastormLoader`)
    ``converter.make_torch_dataloader(cur_shard=rank, shard_count=world)``: petastorm
    deals row groups to shards (row group i to shard i mod world), so shard sizes
    differ by up to a row group. Equal steps: each rank computes every shard's row
    count from the Parquet footers and runs as many steps as the largest shard; a
    shorter shard then repeats its first batches, flagged with ``PAD_KEY``. Each
    epoch's row count is checked against the footers, so an epoch that silently yields
    no rows (seen with petastorm 0.13.x) fails loudly instead of training on nothing.

:class:`ShardedLoader` is the in-memory reference (every rank holds all rows and takes
a strided share): the benchmarks' baseline, and what tests compare against.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sparkforge import features

Batch = dict[str, np.ndarray]

# bool[B] in every batch: True for rows repeated only to give every rank equal steps.
PAD_KEY = "_pad"
# Rows read and shuffled together inside one rank (bounds its memory).
DEFAULT_WINDOW_ROWS = 65536
# Rows decoded per pyarrow batch when a rank reads its slice of a row group.
READ_BATCH_ROWS = 8192


class RankLoader(Protocol):
    """What the training loop needs from a backend."""

    def __len__(self) -> int: ...

    def epoch(self, epoch: int) -> Iterator[Batch]: ...


def _fixed_2d(col: pa.ChunkedArray | pa.Array, dtype: type) -> np.ndarray:
    """array<int>/array<float> of one fixed length -> a 2-D numpy array without Python loops."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    if n == 0:
        return np.zeros((0, 0), dtype=dtype)
    flat = arr.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    return flat.reshape(n, -1)


def _table_to_numpy(table: pa.Table, columns: Sequence[str]) -> Batch:
    out: Batch = {}
    for c in columns:
        t = table.schema.field(c).type
        if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            dtype = np.float32 if pa.types.is_floating(t.value_type) else np.int64
            out[c] = _fixed_2d(table.column(c), dtype)
        elif c == "id":
            out[c] = np.asarray(table.column(c).to_pylist(), dtype=object)
        else:
            out[c] = table.column(c).to_numpy()
        if not out[c].flags.writeable:  # zero-copy views of Arrow buffers are read-only
            out[c] = out[c].copy()
    return out


def _parquet_files(path: Path) -> list[Path]:
    return sorted(p for p in Path(path).rglob("*.parquet"))


def stored_columns(files: Sequence[Path | str], columns: Sequence[str]) -> list[str]:
    """The Parquet columns that hold ``columns`` (tabular ``features`` may be stored in
    compact form: :func:`sparkforge.features.source_columns`)."""
    if not files:
        return list(columns)
    return features.source_columns(columns, pq.read_schema(str(files[0])).names)


def read_split(path: Path, columns: list[str]) -> dict[str, np.ndarray]:
    """Read the columns a model needs from one split folder of ``preprocessed/`` (all rows)."""
    files = _parquet_files(Path(path))
    if not files:
        return {c: np.zeros((0,)) for c in columns}
    stored = stored_columns(files, columns)
    table = pq.ParquetDataset([str(f) for f in files]).read(columns=stored)
    return features.densify(_table_to_numpy(table, stored))


def read_head(path: Path, columns: list[str], rows: int) -> dict[str, np.ndarray]:
    """The first ``rows`` rows of a split folder, in :func:`read_split`'s order, read batch
    by batch: a sample taken on the driver costs its own rows, not the split's."""
    parts: list[pa.RecordBatch] = []
    n = 0
    files = _parquet_files(Path(path))
    stored = stored_columns(files, columns)
    for f in files:
        for batch in pq.ParquetFile(str(f)).iter_batches(batch_size=max(min(rows, 8192), 1),
                                                         columns=stored):
            parts.append(batch)
            n += batch.num_rows
            if n >= rows:
                break
        if n >= rows:
            break
    if not parts:
        return {c: np.zeros((0,)) for c in columns}
    return features.densify(_table_to_numpy(pa.Table.from_batches(parts).slice(0, rows),
                                            stored))


def _concat(parts: list[Batch]) -> Batch:
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _take(batch: Batch, sel: np.ndarray | slice) -> Batch:
    return {k: v[sel] for k, v in batch.items()}


def _length(batch: Batch) -> int:
    return len(next(iter(batch.values()))) if batch else 0


# ---------------------------------------------------------------------------
# arrow: each rank reads its own share


@dataclass(frozen=True)
class RowGroup:
    path: str
    index: int
    num_rows: int


@dataclass(frozen=True)
class Slice:
    """Rows ``[start, stop)`` of one row group."""

    group: RowGroup
    start: int
    stop: int

    @property
    def num_rows(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class RankPlan:
    slices: list[Slice]
    pad: Slice | None  # the one repeated row, when this rank's range is one row short

    @property
    def num_rows(self) -> int:
        return sum(s.num_rows for s in self.slices) + (1 if self.pad else 0)


def list_row_groups(path: Path) -> list[RowGroup]:
    """Every non-empty row group of the split's Parquet files (reads footers only)."""
    groups = []
    for f in _parquet_files(Path(path)):
        meta = pq.ParquetFile(f).metadata
        for i in range(meta.num_row_groups):
            n = meta.row_group(i).num_rows
            if n > 0:
                groups.append(RowGroup(str(f), i, n))
    return groups


def has_column(path: Path, name: str) -> bool:
    """Whether the split folder's Parquet files carry column ``name`` (footer only)."""
    files = _parquet_files(Path(path))
    return bool(files) and name in pq.read_schema(files[0]).names


def plan_epoch(groups: Sequence[RowGroup], world: int, seed: int, epoch: int,
               shuffle: bool = True) -> list[RankPlan]:
    """Which rows of which row groups each rank reads in ``epoch`` (the same on every rank)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(groups)) if shuffle else np.arange(len(groups))
    seq = [groups[i] for i in order]
    n = sum(g.num_rows for g in seq)
    q, rem = divmod(n, world)
    bounds = [(r * q + min(r, rem), (r + 1) * q + min(r + 1, rem)) for r in range(world)]
    offsets = np.cumsum([0] + [g.num_rows for g in seq])
    # A seeded rotation moves the rank boundaries inside row groups too, so even a split
    # of one big row group is dealt differently each epoch.
    shift = int(rng.integers(n)) if shuffle and n else 0

    def interval(lo: int, hi: int) -> list[Slice]:
        out = []
        for g, g_lo in zip(seq, offsets[:-1], strict=True):
            g_hi = g_lo + g.num_rows
            a, b = max(lo, int(g_lo)), min(hi, int(g_hi))
            if a < b:
                out.append(Slice(g, a - int(g_lo), b - int(g_lo)))
        return out

    def slices(lo: int, hi: int) -> list[Slice]:
        """Rows [lo, hi) of the rotated sequence."""
        if lo >= hi:
            return []
        start = (lo + shift) % n
        end = start + (hi - lo)
        return interval(start, min(end, n)) + (interval(0, end - n) if end > n else [])

    plans = []
    for r, (lo, hi) in enumerate(bounds):
        own = slices(lo, hi)
        pad = None
        if rem and r >= rem:  # one row short of ceil(n / world)
            if own:
                pad = Slice(own[0].group, own[0].start, own[0].start + 1)
            else:  # n < world: no rows of its own, repeat one of the epoch's first rows
                (pad,) = slices((r - rem) % n, (r - rem) % n + 1)
        plans.append(RankPlan(own, pad))
    return plans


class ArrowLoader:
    """This rank's share of one split folder of ``preprocessed/``, read with pyarrow."""

    def __init__(self, path: Path, columns: Sequence[str], rank: int, world: int,
                 batch_size: int, seed: int, shuffle: bool = True,
                 window_rows: int = DEFAULT_WINDOW_ROWS) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside world of size {world}")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: use a positive integer")
        self.path, self.columns = Path(path), list(columns)
        self.rank, self.world, self.batch_size = rank, world, batch_size
        self.seed, self.shuffle, self.window_rows = seed, shuffle, max(window_rows, batch_size)
        self.groups = list_row_groups(self.path)
        self.n = sum(g.num_rows for g in self.groups)
        # What is read: tabular features stay compact through the read, the window and
        # the shuffle, and become dense one batch at a time (epoch).
        self.stored = stored_columns([self.groups[0].path] if self.groups else [],
                                     self.columns)
        # Rows decoded from Parquet in the last epoch (whole row groups), for tests/benchmarks.
        self.rows_read = 0

    @property
    def rows_per_rank(self) -> int:
        return math.ceil(self.n / self.world)

    def __len__(self) -> int:
        return math.ceil(self.rows_per_rank / self.batch_size)

    def plan(self, epoch: int) -> RankPlan:
        return plan_epoch(self.groups, self.world, self.seed, epoch, self.shuffle)[self.rank]

    def _read(self, slices: Sequence[Slice], files: dict[str, pq.ParquetFile]) -> Batch:
        parts = []
        for s in slices:
            pf = files.get(s.group.path)
            if pf is None:
                pf = files[s.group.path] = pq.ParquetFile(s.group.path)
            # The slice's rows only, decoded a batch at a time: a rank's memory is its
            # window, not the row groups the writer chose (Spark's reach 128 MB, so whole
            # ones made rank memory grow with the data: 2.4 GiB at 1M rows, 4.0 at 5M).
            kept, pos = [], 0
            for batch in pf.iter_batches(batch_size=READ_BATCH_ROWS,
                                         row_groups=[s.group.index], columns=self.stored,
                                         use_threads=False):
                lo, hi = max(s.start - pos, 0), min(s.stop - pos, batch.num_rows)
                pos += batch.num_rows
                self.rows_read += batch.num_rows
                if lo < hi:
                    kept.append(batch.slice(lo, hi - lo))
                if pos >= s.stop:
                    break
            parts.append(_table_to_numpy(pa.Table.from_batches(kept), self.stored))
        return _concat(parts)

    def _windows(self, slices: list[Slice]) -> list[list[Slice]]:
        windows: list[list[Slice]] = [[]]
        rows = 0
        for s in slices:
            if rows >= self.window_rows:
                windows.append([])
                rows = 0
            windows[-1].append(s)
            rows += s.num_rows
        return [w for w in windows if w]

    def epoch(self, epoch: int) -> Iterator[Batch]:
        for batch in self._epoch(epoch):
            yield features.densify(batch)

    def _epoch(self, epoch: int) -> Iterator[Batch]:
        plan = self.plan(epoch)
        rng = np.random.default_rng([self.seed, epoch, self.rank, 1])
        self.rows_read = 0
        files: dict[str, pq.ParquetFile] = {}
        windows = self._windows(plan.slices)
        carry: Batch | None = None
        # One reader thread: pyarrow decodes the next window while the model trains.
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sparkforge-loader")
        try:
            pending: Future[Batch] | None = (pool.submit(self._read, windows[0], files)
                                             if windows else None)
            for i in range(len(windows)):
                assert pending is not None
                data = pending.result()
                pending = (pool.submit(self._read, windows[i + 1], files)
                           if i + 1 < len(windows) else None)
                data[PAD_KEY] = np.zeros(_length(data), dtype=bool)
                if self.shuffle:
                    data = _take(data, rng.permutation(_length(data)))
                if carry is not None:
                    data = _concat([carry, data])
                full = _length(data) - _length(data) % self.batch_size
                for start in range(0, full, self.batch_size):
                    yield _take(data, slice(start, start + self.batch_size))
                carry = _take(data, slice(full, None)) if full < _length(data) else None
            tail = [carry] if carry is not None else []
            if plan.pad is not None:
                pad = self._read([plan.pad], files)
                pad[PAD_KEY] = np.ones(1, dtype=bool)
                tail.append(pad)
            if tail:
                rest = _concat(tail)
                for start in range(0, _length(rest), self.batch_size):
                    yield _take(rest, slice(start, start + self.batch_size))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------
# petastorm


def petastorm_columns(file_urls: Sequence[str], columns: Sequence[str]) -> list[str]:
    """The columns of the converter's files that hold ``columns`` (see
    :func:`stored_columns`), from the first file's footer."""
    from petastorm.fs_utils import get_filesystem_and_path_or_paths

    if not file_urls:
        return list(columns)
    fs, path = get_filesystem_and_path_or_paths(file_urls[0])
    return features.source_columns(columns, pq.read_schema(path, filesystem=fs).names)


def petastorm_shard_rows(file_urls: Sequence[str], world: int) -> list[int]:
    """Rows petastorm gives each of ``world`` shards of these files (footers only).

    Uses petastorm's own row-group enumeration; the shard of row group i is i mod world.
    """
    from petastorm.etl import dataset_metadata
    from petastorm.fs_utils import get_filesystem_and_path_or_paths

    fs, paths = get_filesystem_and_path_or_paths(list(file_urls))
    dataset = pq.ParquetDataset(paths, filesystem=fs, validate_schema=False,
                                metadata_nthreads=4)
    groups = dataset_metadata.load_row_groups(dataset)
    rows = [0] * world
    for i, piece in enumerate(groups):
        rows[i % world] += piece.get_metadata().row_group(piece.row_group).num_rows
    if len(groups) < world:
        raise ValueError(f"the petastorm dataset has {len(groups)} row group(s) for {world} "
                         "ranks; petastorm needs at least one per rank (repartition it)")
    return rows


class PetastormLoader:
    """This rank's petastorm shard: ``make_torch_dataloader(cur_shard=rank, shard_count=world)``."""

    def __init__(self, converter: Any, columns: Sequence[str], rank: int, world: int,
                 batch_size: int, seed: int, shuffle: bool = True, workers_count: int = 1) -> None:
        self.converter, self.columns = converter, list(columns)
        self.stored = petastorm_columns(converter.file_urls, self.columns)
        self.rank, self.world, self.batch_size = rank, world, batch_size
        self.seed, self.shuffle, self.workers_count = seed, shuffle, workers_count
        self.shard_rows = petastorm_shard_rows(converter.file_urls, world)
        self.expected_rows = self.shard_rows[rank]
        self.steps = max(math.ceil(r / batch_size) for r in self.shard_rows)
        self.rows_read = 0

    def __len__(self) -> int:
        return self.steps

    def _to_numpy(self, tb: dict[str, Any]) -> Batch:
        out: Batch = {}
        for c in self.stored:
            v = tb[c].numpy() if hasattr(tb[c], "numpy") else np.asarray(tb[c])
            if v.dtype.kind in "iu":
                v = v.astype(np.int64, copy=False)
            elif v.dtype.kind == "f" and v.ndim > 1:
                v = v.astype(np.float32, copy=False)
            out[c] = v
        out = features.densify(out)
        out[PAD_KEY] = np.zeros(_length(out), dtype=bool)
        return out

    def epoch(self, epoch: int) -> Iterator[Batch]:
        own_steps = math.ceil(self.expected_rows / self.batch_size)
        deficit = self.steps - own_steps
        kept: list[Batch] = []
        rows = steps = 0
        with self.converter.make_torch_dataloader(
                batch_size=self.batch_size, num_epochs=1, workers_count=self.workers_count,
                cur_shard=self.rank, shard_count=self.world, seed=self.seed + epoch,
                shuffle_row_groups=self.shuffle, shuffle_rows=self.shuffle,
                schema_fields=self.stored) as dl:
            for tb in dl:
                batch = self._to_numpy(tb)
                rows += _length(batch)
                steps += 1
                if steps > self.steps:
                    raise RuntimeError(
                        f"petastorm shard {self.rank}/{self.world} yielded more than the "
                        f"{self.steps} batches its Parquet footers allow; refusing to run "
                        "uneven steps across ranks")
                if len(kept) < deficit and _length(batch) == self.batch_size:
                    kept.append(batch)
                yield batch
        self.rows_read = rows
        if rows != self.expected_rows:
            raise RuntimeError(
                f"petastorm shard {self.rank}/{self.world} yielded {rows} rows in epoch {epoch}, "
                f"but its row groups hold {self.expected_rows}; refusing to train on a "
                "short epoch")
        for i in range(self.steps - steps):
            if not kept:  # the shard is smaller than one batch: repeat what it has
                raise RuntimeError(
                    f"petastorm shard {self.rank}/{self.world} holds {rows} rows, fewer than "
                    f"one batch of {self.batch_size}, but other shards need {self.steps} "
                    "steps; lower train.batch_size or repartition the data")
            pad = dict(kept[i % len(kept)])
            pad[PAD_KEY] = np.ones(_length(pad), dtype=bool)
            yield pad


# ---------------------------------------------------------------------------
# in memory (reference)


class ShardedLoader:
    """Batches of this rank's strided share of in-memory ``data``; same steps on every rank.

    Each epoch takes a seeded permutation of all rows, pads it to a multiple of ``world``
    by repeating its first rows and deals rows round-robin to ranks.
    """

    def __init__(self, data: dict[str, np.ndarray], rank: int, world: int, batch_size: int,
                 seed: int, shuffle: bool = True) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside world of size {world}")
        self.data, self.rank, self.world = data, rank, world
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.n = len(next(iter(data.values()))) if data else 0

    @property
    def rows_per_rank(self) -> int:
        return math.ceil(self.n / self.world) if self.n else 0

    def __len__(self) -> int:
        return math.ceil(self.rows_per_rank / self.batch_size)

    def indices(self, epoch: int) -> np.ndarray:
        """Row indices this rank sees in ``epoch`` (seeded, identical on every rank)."""
        if self.n == 0:
            return np.zeros(0, dtype=np.int64)
        order = (np.random.default_rng([self.seed, epoch]).permutation(self.n) if self.shuffle
                 else np.arange(self.n))
        pad = self.rows_per_rank * self.world - self.n
        order = np.concatenate([order, order[:pad]])
        return order[self.rank::self.world]

    def epoch(self, epoch: int) -> Iterator[Batch]:
        idx = self.indices(epoch)
        for start in range(0, len(idx), self.batch_size):
            sel = idx[start:start + self.batch_size]
            yield {k: v[sel] for k, v in self.data.items()}


def make_loader(backend: str, *, columns: Sequence[str], rank: int, world: int,
                batch_size: int, seed: int, path: Path | None = None,
                converter: Any = None, shuffle: bool = True) -> RankLoader:
    """The training loader for ``train.loader`` (``arrow`` or ``petastorm``)."""
    if backend == "arrow":
        if path is None:
            raise ValueError("the arrow loader needs the split folder")
        return ArrowLoader(path, columns, rank, world, batch_size, seed, shuffle=shuffle)
    if backend == "petastorm":
        if converter is None:
            raise ValueError("the petastorm loader needs a SparkDatasetConverter")
        return PetastormLoader(converter, columns, rank, world, batch_size, seed, shuffle=shuffle)
    raise ValueError(f"train.loader={backend!r}: use arrow or petastorm")


def trim_padding(batch: Batch) -> Batch:
    """Cut token columns to the longest sequence in the batch (pad per batch, not to max)."""
    if "attention_mask" not in batch:
        return batch
    mask = batch["attention_mask"]
    longest = int(mask.sum(axis=1).max()) if len(mask) else 1
    longest = max(longest, 1)
    return {k: (v[:, :longest] if k in ("input_ids", "attention_mask") else v)
            for k, v in batch.items()}
