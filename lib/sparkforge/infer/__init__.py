"""Batch scoring inside Spark: ``score_df`` (predictions and probabilities) and
``embed_df`` (sentence embeddings), both thin ``emit`` functions over the one scoring core
in :mod:`sparkforge.infer.predictor` (one model per Python worker, cached by the file's
sha256; Arrow batches in ``mapInArrow``). Distillation's ``soft_label_df``
(``compress/distill.py``) is a third. ``score_parquet`` (:mod:`sparkforge.infer.files`)
scores Parquet files into Parquet files with the same core, each task reading and writing
its own files.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import numpy as np

from sparkforge.infer.files import ScoredFiles, score_parquet
from sparkforge.infer.predictor import (
    LOAD_LOG_ENV,
    MAX_CACHED_SESSIONS,
    Backend,
    ModelRef,
    OnnxBackend,
    Predictor,
    TorchBackend,
    arrow_inputs,
    list_array,
    load_backend,
    map_predictions,
    model_inputs,
    onnx_session,
    predict,
    score_columns,
    softmax,
)
from sparkforge.models import task_input_names

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame

__all__ = ["LOAD_LOG_ENV", "MAX_CACHED_SESSIONS", "Backend", "ModelRef", "OnnxBackend",
           "Predictor", "ScoredFiles", "TorchBackend", "arrow_inputs", "embed_df", "load_backend",
           "map_predictions", "model_inputs", "onnx_session", "predict", "score_columns",
           "score_df", "score_parquet", "softmax"]

log = logging.getLogger(__name__)


def score_df(df: DataFrame, *, model_path: str, sha256: str, inputs: list[str],
             labels: list[str], variant: str, batch_size: int = 256,
             threads: int = 1, passthrough: list[str] | None = None,
             threshold: float | None = None, model_format: str = "onnx",
             model_spec: str = "") -> DataFrame:
    """Score every row of ``df`` (id, label, split + model inputs).

    Output columns: id, label, prediction, probability (array<double>, in ``labels``
    order; empty for regression), split, model_variant, then ``passthrough``.
    ``threshold`` (binary only): the prediction is the second label where its probability
    is at least this (``evaluate.threshold``), else the first; None: the argmax.
    ``model_format`` / ``model_spec``: :class:`ModelRef`'s ``format`` and ``spec``
    (``torch``: ``model_path`` is the safetensors weights, ``model_spec`` the spec's JSON
    text); the score job takes them from :func:`sparkforge.infer.runs.variant_model`.
    Tabular ``features`` may come in compact form (:func:`sparkforge.features.compact`).
    """
    from pyspark.sql import types as T

    label_type = T.DoubleType() if not labels else T.StringType()
    keep = list(passthrough or [])
    schema = T.StructType([
        T.StructField("id", T.StringType()), T.StructField("label", label_type),
        T.StructField("prediction", label_type),
        T.StructField("probability", T.ArrayType(T.DoubleType())),
        T.StructField("split", T.StringType()), T.StructField("model_variant", T.StringType()),
        *[T.StructField(c, df.schema[c].dataType) for c in keep]])
    labels = list(labels)

    def emit(batch: pa.RecordBatch, logits: np.ndarray) -> pa.RecordBatch:
        return score_columns(batch, logits, labels, variant, keep, threshold)

    return map_predictions(df, _ref(model_path, sha256, threads, model_format, model_spec),
                           inputs=inputs,
                           columns=["id", "label", "split", *inputs, *keep], schema=schema,
                           emit=emit, batch_size=batch_size)


def embed_df(df: DataFrame, *, model_path: str, sha256: str, batch_size: int = 256,
             threads: int = 1, passthrough: list[str] | None = None) -> DataFrame:
    """Sentence embeddings (array<float>) of every row, from an encoder ONNX file."""
    from pyspark.sql import types as T

    keep = list(passthrough or [])
    schema = T.StructType([T.StructField("id", T.StringType()),
                           T.StructField("embedding", T.ArrayType(T.FloatType())),
                           *[T.StructField(c, df.schema[c].dataType) for c in keep]])
    names = task_input_names(text=True)  # embeddings come from text encoders only

    def emit(batch: pa.RecordBatch, emb: np.ndarray) -> pa.RecordBatch:
        import pyarrow as pa

        cols = {"id": batch.column("id"),
                "embedding": list_array(emb.astype(np.float32, copy=False), pa.float32())}
        for c in keep:
            cols[c] = batch.column(c)
        return pa.RecordBatch.from_arrays(list(cols.values()), names=list(cols))

    return map_predictions(df, _ref(model_path, sha256, threads), inputs=names,
                           columns=["id", *names, *keep], schema=schema, emit=emit,
                           batch_size=batch_size)


def _ref(model_path: str, sha256: str, threads: int, model_format: str = "onnx",
         model_spec: str = "") -> ModelRef:
    """The model's recipe, with the load log named on the driver (tests count loads)."""
    return ModelRef(model_path, sha256, threads, model_format, os.environ.get(LOAD_LOG_ENV),
                    model_spec)
