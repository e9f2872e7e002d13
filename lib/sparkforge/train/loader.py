"""The ``arrow`` loader: preprocessed Parquet -> numpy batches for one DDP rank.

Every rank runs the same number of steps per epoch (an uneven share crashes gloo's
allreduce or hangs NCCL). Policy: each epoch takes a seeded permutation of all
rows, pads it to a multiple of ``world`` by repeating its first rows (fewer than
``world`` rows are seen twice per epoch), and deals rows round-robin to ranks.
Every other row is seen exactly once per epoch across ranks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

Batch = dict[str, np.ndarray]


def _fixed_2d(col: pa.ChunkedArray, dtype: type) -> np.ndarray:
    """array<int>/array<float> of one fixed length -> a 2-D numpy array without Python loops."""
    arr = col.combine_chunks()
    n = len(arr)
    if n == 0:
        return np.zeros((0, 0), dtype=dtype)
    flat = arr.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    return flat.reshape(n, -1)


def read_split(path: Path, columns: list[str]) -> dict[str, np.ndarray]:
    """Read the columns a model needs from one split folder of ``preprocessed/``."""
    files = sorted(p for p in Path(path).rglob("*.parquet"))
    if not files:
        return {c: np.zeros((0,)) for c in columns}
    table = pq.ParquetDataset([str(f) for f in files]).read(columns=columns)
    out: dict[str, np.ndarray] = {}
    for c in columns:
        t = table.schema.field(c).type
        if pa.types.is_list(t):
            dtype = np.float32 if pa.types.is_floating(t.value_type) else np.int64
            out[c] = _fixed_2d(table.column(c), dtype)
        elif c == "id":
            out[c] = np.asarray(table.column(c).to_pylist(), dtype=object)
        else:
            out[c] = table.column(c).to_numpy()
    return out


class ShardedLoader:
    """Batches of this rank's share of ``data``; same step count on every rank."""

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


def trim_padding(batch: Batch) -> Batch:
    """Cut token columns to the longest sequence in the batch (pad per batch, not to max)."""
    if "attention_mask" not in batch:
        return batch
    mask = batch["attention_mask"]
    longest = int(mask.sum(axis=1).max()) if len(mask) else 1
    longest = max(longest, 1)
    return {k: (v[:, :longest] if k in ("input_ids", "attention_mask") else v)
            for k, v in batch.items()}
