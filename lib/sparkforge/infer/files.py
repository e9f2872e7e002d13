"""Parquet in, Parquet out, with tasks that read and write their own files:
:func:`score_parquet`.

Why a second way in: for a cheap model the data path is the whole cost. ``score_df`` over
``spark.read.parquet`` turns every column into JVM rows, hands them to the Python worker
as Arrow and back, and Spark's writer turns them into Parquet again: about 3x the CPU
that one pyarrow + onnxruntime process spends on the same rows (BENCHMARKS.md, Scoring).
Here Spark still schedules the tasks, retries the failed ones and decides which attempt
counts, but each task reads its row groups with pyarrow, scores them with the one scoring
core (:class:`~sparkforge.infer.predictor.Predictor` and :func:`score_columns`, as
``score_df``) and writes its own Parquet file: the rows never become JVM rows.

Commit (the protocol of Hadoop's ``FileOutputCommitter``, by hand): every task attempt
writes ``DEST/_temporary/JOB/part-G-aA-XXXX.parquet`` and returns one small row (group,
file, rows). Spark keeps the result of exactly one successful attempt per partition, so
the driver moves exactly those files to ``DEST/part-G-JOB.snappy.parquet``, removes
``_temporary`` (with the files of failed or duplicate attempts) and writes ``_SUCCESS``.
A failed job leaves neither part files nor ``_SUCCESS``. The commit runs where
``score_parquet`` is called (the driver, or a Spark Connect client), which must reach
``dest`` with the same URI as the executors (a shared file system or object store).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from sparkforge.faults import fault_point
from sparkforge.infer.predictor import LOAD_LOG_ENV, ModelRef

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

# Fault point after a task attempt wrote its file, before Spark has its result: the
# retry and failure tests crash attempts there (sparkforge.faults).
TASK_WRITTEN = "score_parquet.task_written"
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"  # Spark's directory name for a null partition
TEMPORARY = "_temporary"
SUCCESS = "_SUCCESS"
TASKS_PER_SLOT = 4  # tasks per task slot by default: a slow task leaves no core idle long
# Output row groups: batches are buffered up to this many bytes or rows (whichever comes
# first) and written as one row group, so readers do not get a row group per Arrow batch.
ROW_GROUP_BYTES = 64 << 20
ROW_GROUP_ROWS = 1 << 20


@dataclass(frozen=True)
class Piece:
    """One unit of work: a row group of one file, with the file's partition values
    (``key=value`` directories, as Spark writes ``partitionBy``)."""

    path: str
    row_group: int
    rows: int
    partition: tuple[tuple[str, str | None], ...]


@dataclass(frozen=True)
class ScoredFiles:
    """What :func:`score_parquet` wrote: ``files`` under ``dest`` (in the input's order),
    ``rows`` in all, by ``tasks`` Spark tasks."""

    dest: str
    files: tuple[str, ...]
    rows: int
    tasks: int


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's file system for ``uri`` and the path in it (a plain path is local)."""
    import pyarrow.fs as pafs

    if "://" not in uri:
        return pafs.LocalFileSystem(), str(Path(uri).resolve())
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, path


def _partition_value(part: str) -> tuple[str, str | None] | None:
    key, sep, value = part.partition("=")
    if not sep or not key:
        return None
    value = unquote(value)  # Spark escapes '/', '=', '%' and others as %XX
    return key, None if value == HIVE_NULL else value


def list_pieces(source: str) -> tuple[list[Piece], pa.Schema, list[str]]:
    """Every row group of the Parquet files under ``source`` (a file or a directory),
    in path order (row groups without rows left out), the files' schema (the first
    file's; every file must agree on it) and the partition keys of their directories.
    Names that start with ``_`` or ``.`` are skipped, as Spark skips them (``_SUCCESS``,
    ``.crc`` files, ``_temporary``)."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    fs, root = filesystem(source)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"score_parquet: source {source} does not exist")
    found: list[tuple[str, tuple[tuple[str, str | None], ...]]] = []
    if info.type == pafs.FileType.File:
        found.append((root, ()))
    else:
        for f in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
            rel = f.path[len(root):].strip("/").split("/")
            if f.type != pafs.FileType.File or any(p.startswith(("_", ".")) for p in rel):
                continue
            parts = tuple(kv for kv in map(_partition_value, rel[:-1]) if kv is not None)
            found.append((f.path, parts))
        found.sort()
    if not found:
        raise ValueError(f"score_parquet: {source} holds no Parquet files (names starting "
                         "with _ or . are skipped); point source at the files to score")
    keys = [k for k, _ in found[0][1]]
    odd = next((p for p, parts in found if [k for k, _ in parts] != keys), None)
    if odd is not None:
        raise ValueError(f"score_parquet: {odd} is not under the partition directories "
                         f"{keys} that {found[0][0]} is under; score one layout at a time")

    def metadata(path: str) -> Any:
        with fs.open_input_file(path) as fh:
            return pq.ParquetFile(fh).metadata

    # Footers in parallel: on an object store each one is a round trip.
    with ThreadPoolExecutor(8) as pool:
        metas = list(pool.map(metadata, [p for p, _ in found]))
    schema = metas[0].schema.to_arrow_schema()
    pieces: list[Piece] = []
    for (path, parts), meta in zip(found, metas, strict=True):
        file_schema = meta.schema.to_arrow_schema()
        if not file_schema.equals(schema):
            raise ValueError(f"score_parquet: {path} has schema {file_schema}, but "
                             f"{found[0][0]} has {schema}; score files of one schema")
        pieces += [Piece(path, i, meta.row_group(i).num_rows, parts)
                   for i in range(meta.num_row_groups) if meta.row_group(i).num_rows]
    return pieces, schema, keys


def group_pieces(pieces: Sequence[Piece], tasks: int) -> list[list[Piece]]:
    """``min(tasks, len(pieces))`` groups of consecutive pieces with about as many rows
    each: each task's file holds a contiguous stretch of the input, in order. A group
    closes once the groups so far hold their share of the rows, or when each piece left
    must start a group of its own (one large row group leaves no task empty)."""
    total, want = sum(p.rows for p in pieces), max(1, min(tasks, len(pieces)))
    groups: list[list[Piece]] = [[]]
    seen = 0
    for i, p in enumerate(pieces):
        if groups[-1] and len(groups) < want and (
                seen * want >= len(groups) * total or len(pieces) - i <= want - len(groups)):
            groups.append([])
        groups[-1].append(p)
        seen += p.rows
    return groups if pieces else []


def output_schema(schema: pa.Schema, partition_keys: Sequence[str], labels: Sequence[str],
                  passthrough: Sequence[str]) -> pa.Schema:
    """``score_df``'s columns as Arrow types: id, label, prediction, probability, split,
    model_variant, then ``passthrough`` (partition values are strings)."""
    import pyarrow as pa

    label = pa.string() if labels else pa.float64()
    fields = [pa.field("id", pa.string()), pa.field("label", label),
              pa.field("prediction", label), pa.field("probability", pa.list_(pa.float64())),
              pa.field("split", pa.string()), pa.field("model_variant", pa.string())]
    for c in passthrough:
        fields.append(pa.field(c, pa.string() if c in partition_keys
                               else schema.field(c).type))
    return pa.schema(fields)


@dataclass(frozen=True)
class _Job:
    """What every task needs, shipped in the closure (small and picklable)."""

    source: str
    staging: str
    ref: ModelRef
    inputs: tuple[str, ...]
    read: tuple[str, ...]          # columns read from the files
    schema: pa.Schema              # the output files' schema
    labels: tuple[str, ...]
    variant: str
    passthrough: tuple[str, ...]
    threshold: float | None
    batch_size: int
    batch_rows: int


def _with_partition(batch: pa.RecordBatch, piece: Piece) -> pa.RecordBatch:
    import pyarrow as pa

    if not piece.partition:
        return batch
    extra = [pa.repeat(pa.scalar(v, type=pa.string()), batch.num_rows)
             for _, v in piece.partition]
    return pa.RecordBatch.from_arrays([*batch.columns, *extra],
                                      names=[*batch.schema.names,
                                             *(k for k, _ in piece.partition)])


def _score_group(job: _Job, group: int, pieces: list[Piece]) -> tuple[str, int]:
    """One task attempt: ``pieces`` scored into one file in the staging directory."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark import TaskContext

    from sparkforge.infer.predictor import Predictor, score_columns

    ctx = TaskContext.get()
    attempt = ctx.attemptNumber() if ctx is not None else 0
    predictor = Predictor.load(job.ref, list(job.inputs), job.batch_size)
    fs_in, _ = filesystem(job.source)
    fs_out, staging = filesystem(job.staging)
    path = f"{staging}/part-{group:05d}-a{attempt}-{uuid.uuid4().hex[:8]}.parquet"
    rows = 0
    buffered: list[pa.Table] = []

    def flush(writer: pq.ParquetWriter) -> None:
        if buffered:
            writer.write_table(pa.concat_tables(buffered), row_group_size=ROW_GROUP_ROWS)
            buffered.clear()

    def full() -> bool:
        return (sum(t.nbytes for t in buffered) >= ROW_GROUP_BYTES
                or sum(t.num_rows for t in buffered) >= ROW_GROUP_ROWS)

    with fs_out.open_output_stream(path) as sink, \
            pq.ParquetWriter(sink, job.schema, compression="snappy") as writer:
        for piece in pieces:
            with fs_in.open_input_file(piece.path) as fh:
                pf = pq.ParquetFile(fh)
                cols = [c for c in job.read if c in pf.schema_arrow.names]
                got = 0
                for batch in pf.iter_batches(batch_size=job.batch_rows,
                                             row_groups=[piece.row_group], columns=cols):
                    batch = _with_partition(batch, piece)
                    out = score_columns(batch, predictor.predict(batch), list(job.labels),
                                        job.variant, job.passthrough, job.threshold)
                    buffered.append(pa.Table.from_batches([out]).cast(job.schema))
                    got += batch.num_rows
                    if full():
                        flush(writer)
            if got != piece.rows:
                raise RuntimeError(f"{piece.path} row group {piece.row_group} has {got} "
                                   f"rows, its footer said {piece.rows} when the job was "
                                   "planned: the input changed during the job; rerun it")
            rows += got
        flush(writer)
    fault_point(TASK_WRITTEN)
    return path, rows


def _task(job: _Job, groups: list[list[Piece]]
          ) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        for b in batches:
            for g in b.column(0).to_pylist():
                path, rows = _score_group(job, g, groups[g])
                yield pa.RecordBatch.from_pydict(
                    {"grp": pa.array([g], pa.int64()), "path": pa.array([path], pa.string()),
                     "rows": pa.array([rows], pa.int64())})

    return run


def score_parquet(spark: SparkSession, source: str, dest: str, *, model_path: str,
                  sha256: str, inputs: list[str], labels: list[str], variant: str,
                  batch_size: int = 256, threads: int = 1,
                  passthrough: list[str] | None = None, threshold: float | None = None,
                  model_format: str = "onnx", model_spec: str = "",
                  tasks: int | None = None, batch_rows: int = 4096,
                  overwrite: bool = False) -> ScoredFiles:
    """Score every row of the Parquet files under ``source`` into Parquet files under
    ``dest``: the columns and values of :func:`sparkforge.infer.score_df`, with each
    Spark task reading its row groups and writing its file with pyarrow.

    ``source``: a file or a directory (``key=value`` subdirectories, as ``partitionBy``
    writes them, become string columns: a run's ``preprocessed/`` has ``split``). Its rows
    need id, label, split, the model ``inputs`` (tabular ``features`` may be compact) and
    ``passthrough``. ``tasks``: Spark tasks (default: 4 per task slot, at most one per row
    group); ``batch_rows``: rows per Arrow batch read. ``dest`` must not exist unless
    ``overwrite`` (then it is replaced, as Spark's ``mode("overwrite")``). The other
    arguments are ``score_df``'s. Read the files back with ``spark.read.parquet(dest)``.
    """
    from sparkforge import features
    from sparkforge.spark.session import default_parallelism

    if batch_rows < 1 or batch_size < 1 or (tasks is not None and tasks < 1):
        raise ValueError(f"score_parquet: batch_rows={batch_rows}, batch_size={batch_size}, "
                         f"tasks={tasks}: each must be at least 1")
    keep = list(passthrough or [])
    src_fs, src_root = filesystem(source)
    dst_fs, dst_root = filesystem(dest)
    if type(src_fs) is type(dst_fs) and (
            os.path.commonpath([src_root, dst_root]) in (src_root, dst_root)):
        raise ValueError(f"score_parquet: dest {dest} and source {source} overlap (one is "
                         "inside the other); write the scores somewhere else")
    pieces, schema, keys = list_pieces(source)  # before any Spark work: errors first
    available = [*schema.names, *keys]
    read = ["id", "label", "split", *features.source_columns(inputs, available), *keep]
    missing = [c for c in dict.fromkeys(read) if c not in available]
    if missing:
        raise ValueError(f"score_parquet: {source} has no column(s) {missing} (it has "
                         f"{available}); it needs id, label, split, the model inputs "
                         f"{inputs} and the passthrough columns {keep}")
    import pyarrow.fs as pafs

    if dst_fs.get_file_info(dst_root).type != pafs.FileType.NotFound:
        if not overwrite:
            raise FileExistsError(f"score_parquet: dest {dest} already exists; pass "
                                  "overwrite=True to replace it, or choose another dest")
        dst_fs.delete_dir(dst_root)
    job_id = uuid.uuid4().hex[:12]
    # Absolute for a local dest: executors (a Connect server's too) run in another
    # directory than the caller, and must write where the caller commits from.
    staging = f"{dest.rstrip('/') if '://' in dest else dst_root}/{TEMPORARY}/{job_id}"
    dst_fs.create_dir(f"{dst_root}/{TEMPORARY}/{job_id}", recursive=True)
    n_tasks = tasks or TASKS_PER_SLOT * default_parallelism(spark)
    groups = group_pieces(pieces, min(n_tasks, max(1, len(pieces))))
    job = _Job(source, staging,
               ModelRef(model_path, sha256, threads, model_format,
                        os.environ.get(LOAD_LOG_ENV), model_spec),
               tuple(inputs), tuple(dict.fromkeys(read)),
               output_schema(schema, keys, labels, keep), tuple(labels), variant,
               tuple(keep), threshold, batch_size, batch_rows)
    planned = sum(p.rows for p in pieces)
    log.info("score_parquet: %d rows in %d row groups of %s, %d tasks, into %s", planned,
             len(pieces), source, len(groups), dest)
    try:
        results = [] if not pieces else (
            spark.range(0, len(groups), 1, len(groups))
            .mapInArrow(_task(job, groups), "grp long, path string, rows long").collect())
    except BaseException:
        _discard(dst_fs, f"{dst_root}/{TEMPORARY}")
        raise
    files = _commit(dst_fs, dst_root, dest, staging, results, len(groups), planned,
                    job.schema, job_id)
    return ScoredFiles(dest, tuple(files), planned, len(groups))


def _discard(fs: pafs.FileSystem, path: str) -> None:
    """Remove what a failed job staged. A failure to remove it is logged, not raised: the
    job's own error is the one to report (an object store refusing a delete must not
    replace it), and the next run with ``overwrite=True`` removes the leftovers."""
    try:
        fs.delete_dir(path)
    except Exception as e:  # logged: the caller re-raises the job's error
        log.warning("score_parquet: could not remove %s after the job failed (%s); remove "
                    "it by hand or rerun with overwrite=True", path, e)


def _commit(fs: pafs.FileSystem, root: str, dest: str, staging_uri: str,
            results: list[Any], n_groups: int, planned: int, schema: pa.Schema,
            job_id: str) -> list[str]:
    """The successful attempts' files (one per group, Spark's choice) moved into ``dest``
    (no rows at all: one empty file of ``schema``, so that readers still get the schema);
    everything else under ``_temporary`` removed; ``_SUCCESS`` last."""
    import pyarrow.parquet as pq

    by_group = {int(r["grp"]): r for r in results}
    rows = sum(int(r["rows"]) for r in results)
    if len(results) != n_groups or sorted(by_group) != list(range(n_groups)) \
            or rows != planned:
        _discard(fs, f"{root}/{TEMPORARY}")
        raise RuntimeError(f"score_parquet: {len(results)} task results for {n_groups} "
                           f"tasks and {rows} rows for {planned} planned; nothing was "
                           f"committed to {dest}")
    _, staging = filesystem(staging_uri)
    files = []
    for g in range(n_groups):
        src = by_group[g]["path"]
        if not src.startswith(staging + "/"):
            raise RuntimeError(f"score_parquet: task {g} reported {src}, outside {staging}")
        target = f"{root}/part-{g:05d}-{job_id}.snappy.parquet"
        fs.move(src, target)
        files.append(target)
    if not files:
        files.append(f"{root}/part-00000-{job_id}.snappy.parquet")
        with fs.open_output_stream(files[0]) as sink:
            pq.write_table(schema.empty_table(), sink, compression="snappy")
    fs.delete_dir(f"{root}/{TEMPORARY}")
    with fs.open_output_stream(f"{root}/{SUCCESS}"):
        pass
    return files
