"""Batch scoring with onnxruntime inside Spark: one InferenceSession per Python worker.

The session is cached in this module, keyed by the model file's sha256, so every
batch and every task that a worker runs reuses it (Spark reuses Python workers,
``spark.python.worker.reuse`` defaults to true). ``mapInPandas`` is used rather
than a scalar pandas UDF because one call sees the whole partition as an iterator
of batches and returns several columns (prediction, probability) at once; scoring
uses its Arrow form, ``mapInArrow`` (BENCHMARKS.md, Scoring: 1.5x faster than
``predict_batch_udf`` on mapInPandas, and mapInArrow about 1.5x faster again).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterator

    import onnxruntime as ort
    import pandas as pd
    import pyarrow as pa
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

_SESSIONS: dict[str, ort.InferenceSession] = {}
MAX_CACHED_SESSIONS = 2
# Driver-side environment variable naming a file to which each session load appends
# a line; read when the scoring plan is built and shipped in the closure.
LOAD_LOG_ENV = "SPARKFORGE_SESSION_LOAD_LOG"


def onnx_session(path: str, sha256: str, threads: int = 1,
                 load_log: str | None = None) -> ort.InferenceSession:
    """The cached InferenceSession for ``path``; loaded once per worker process.

    ``load_log``: a file to which each load appends "pid sha256" (diagnostics; tests
    count loads per worker with it)."""
    key = f"{sha256}:{threads}"
    sess = _SESSIONS.get(key)
    if sess is None:
        import onnxruntime as ort

        from sparkforge.artifacts import sha256_file

        actual = sha256_file(Path(path))
        if actual != sha256:
            raise RuntimeError(f"{path} has sha256 {actual}, expected {sha256}: the model "
                               "changed after it was selected; rerun compress")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in ort.get_available_providers()]
        sess = ort.InferenceSession(path, opts, providers=providers)
        # Keep the few most recent sessions: a stage that scores several variants in
        # turn must not hold every model in each worker (MiniLM variants are ~1 GB each).
        while len(_SESSIONS) >= MAX_CACHED_SESSIONS:
            _SESSIONS.pop(next(iter(_SESSIONS)))
        _SESSIONS[key] = sess
        log.info("loaded ONNX session %s (%s) in pid %d", path, sha256[:12], os.getpid())
        if load_log:
            with open(load_log, "a") as fh:
                fh.write(f"{os.getpid()} {sha256}\n")
    return sess


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def model_inputs(pdf: pd.DataFrame, names: list[str]) -> dict[str, np.ndarray]:
    """Array columns of a pandas batch -> the model's input tensors (padding trimmed)."""
    feeds: dict[str, np.ndarray] = {}
    for n in names:
        dtype = np.float32 if n == "features" else np.int64
        feeds[n] = np.stack(pdf[n].to_numpy()).astype(dtype, copy=False)
    if "attention_mask" in feeds:
        longest = max(int(feeds["attention_mask"].sum(axis=1).max()), 1)
        for n in ("input_ids", "attention_mask"):
            feeds[n] = np.ascontiguousarray(feeds[n][:, :longest])
    return feeds


def predict(sess: ort.InferenceSession, feeds: dict[str, np.ndarray],
            batch_size: int) -> np.ndarray:
    n = len(next(iter(feeds.values())))
    outs = []
    for s in range(0, n, batch_size):
        part = {k: v[s:s + batch_size] for k, v in feeds.items()}
        if "attention_mask" in part:  # trim again: a sub-batch may be shorter
            longest = max(int(part["attention_mask"].sum(axis=1).max()), 1)
            part = {k: np.ascontiguousarray(v[:, :longest]) for k, v in part.items()}
        outs.append(sess.run(["logits"], part)[0])
    return np.concatenate(outs) if outs else np.zeros((0, 1), dtype=np.float32)


def arrow_inputs(batch: pa.RecordBatch, names: list[str]) -> dict[str, np.ndarray]:
    """Fixed-width list columns of an Arrow batch -> model inputs: a reshape of the
    values buffer, no per-row Python objects; padding trimmed to the batch's longest."""
    feeds: dict[str, np.ndarray] = {}
    n = batch.num_rows
    for name in names:
        values = batch.column(name).flatten().to_numpy(zero_copy_only=False)
        dtype = np.float32 if name == "features" else np.int64
        feeds[name] = values.reshape(n, values.size // max(n, 1)).astype(dtype, copy=False)
    if "attention_mask" in feeds:
        longest = max(int(feeds["attention_mask"].sum(axis=1).max()), 1)
        for k in ("input_ids", "attention_mask"):
            feeds[k] = np.ascontiguousarray(feeds[k][:, :longest])
    return feeds


def _list_array(matrix: np.ndarray, value_type: pa.DataType) -> pa.Array:
    import pyarrow as pa

    n, k = matrix.shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * k)  # k may be 0 (regression)
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.ravel(), type=value_type))


def score_df(df: DataFrame, *, model_path: str, sha256: str, inputs: list[str],
             labels: list[str], variant: str, batch_size: int = 256,
             threads: int = 1, passthrough: list[str] | None = None,
             threshold: float | None = None) -> DataFrame:
    """Score every row of ``df`` (id, label, split + model inputs).

    Output columns: id, label, prediction, probability (array<double>, in ``labels``
    order; empty for regression), split, model_variant, then ``passthrough``.
    ``threshold`` (binary only): the prediction is the second label where its probability
    is at least this (``evaluate.threshold``), else the first; None: the argmax.

    Runs on ``mapInArrow``: model inputs are reshaped straight from the Arrow list
    buffers and outputs built as Arrow arrays; measured 1.2-1.8x faster than the same
    code on ``mapInPandas`` (about 1.5x by CPU seconds; BENCHMARKS.md, Scoring).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyspark.sql import types as T

    from sparkforge.metrics.threshold import decide

    regression = not labels
    label_type = T.DoubleType() if regression else T.StringType()
    keep = list(passthrough or [])
    schema = T.StructType([
        T.StructField("id", T.StringType()), T.StructField("label", label_type),
        T.StructField("prediction", label_type),
        T.StructField("probability", T.ArrayType(T.DoubleType())),
        T.StructField("split", T.StringType()), T.StructField("model_variant", T.StringType()),
        *[T.StructField(c, df.schema[c].dataType) for c in keep]])
    load_log = os.environ.get(LOAD_LOG_ENV)

    def _score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        sess = onnx_session(model_path, sha256, threads, load_log)
        label_arr = pa.array(labels, type=pa.string())
        for b in batches:
            n = b.num_rows
            if n == 0:
                continue
            logits = predict(sess, arrow_inputs(b, inputs), batch_size)
            if regression:
                pred = pa.array(logits[:, 0].astype(np.float64))
                prob = _list_array(np.zeros((n, 0)), pa.float64())
            else:
                p = softmax(logits.astype(np.float64))
                pred = pc.take(label_arr, pa.array(decide(p, threshold)))
                prob = _list_array(p, pa.float64())
            cols = {"id": b.column("id"), "label": b.column("label"), "prediction": pred,
                    "probability": prob, "split": b.column("split"),
                    "model_variant": pa.array([variant] * n, type=pa.string())}
            for c in keep:
                cols[c] = b.column(c)
            yield pa.record_batch(cols)

    return df.select("id", "label", "split", *inputs, *keep).mapInArrow(_score, schema)


def embed_df(df: DataFrame, *, model_path: str, sha256: str, batch_size: int = 256,
             threads: int = 1, passthrough: list[str] | None = None) -> DataFrame:
    """Sentence embeddings (array<float>) of every row, from an encoder ONNX file."""
    import pandas as pd
    from pyspark.sql import types as T

    keep = list(passthrough or [])
    schema = T.StructType([T.StructField("id", T.StringType()),
                           T.StructField("embedding", T.ArrayType(T.FloatType())),
                           *[T.StructField(c, df.schema[c].dataType) for c in keep]])
    names = ["input_ids", "attention_mask"]
    load_log = os.environ.get(LOAD_LOG_ENV)

    def _embed(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        sess = onnx_session(model_path, sha256, threads, load_log)
        for pdf in batches:
            if pdf.empty:
                continue
            emb = predict(sess, model_inputs(pdf, names), batch_size)
            res = pd.DataFrame({"id": pdf["id"].to_numpy(), "embedding": list(emb)})
            for c in keep:
                res[c] = pdf[c].to_numpy()
            yield res

    return df.select("id", *names, *keep).mapInPandas(_embed, schema)
