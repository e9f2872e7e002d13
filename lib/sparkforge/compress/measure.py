"""How compress measures a variant, and what the benchmarks measure with the same code.

The rows a variant is judged on (:func:`gate_rows`: validation fold 1), Spark scoring of a
split (:func:`score_split`, the library's ``score_df``), its metrics computed in Spark
(:func:`split_quality`), the agreement of two scorings (:func:`split_parity`), 1-thread
onnxruntime latency (:func:`latency_ms`) and a bounded, seeded sample of a split for
calibration (:func:`sample_split`). ``jobs/compress.py`` runs the stage with these;
``benchmarks/bench_compress.py`` imports them from here.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sparkforge.artifacts import read_json, sha256_file
from sparkforge.models import INPUT_DTYPES
from sparkforge.rundir import RunDir

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from sparkforge.config import Config

log = logging.getLogger(__name__)


def latency_ms(path: Path, feeds: dict[str, np.ndarray], batch: int, repeats: int,
                budget_s: float = 1.0, max_repeats: int = 200) -> float:
    """p50 onnxruntime latency, 1 thread, for ``batch`` rows tiled from ``feeds``.

    At least ``repeats`` runs, more (up to ``max_repeats``) until ``budget_s`` is spent:
    a fast model gets enough runs for a stable median, a slow one is not run for long.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    n = len(next(iter(feeds.values())))
    idx = np.arange(batch) % n
    part = {k: np.ascontiguousarray(v[idx]) for k, v in feeds.items()}
    sess.run(["logits"], {k: v[:8] for k, v in part.items()})  # warm-up: allocations, kernels
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start < budget_s
                                   and len(times) < max_repeats):
        t0 = time.perf_counter()
        sess.run(["logits"], part)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def model_inputs(cfg: Config) -> list[str]:
    """The model's input columns for ``cfg``'s task (``models.task_input_names``)."""
    from sparkforge.models import task_input_names

    return task_input_names(text=cfg.is_text)


def target_column(cfg: Config) -> str:
    """The training target column of the preprocessed rows."""
    return "label" if cfg.is_regression else "label_index"


def split_df(spark: SparkSession, cfg: Config, split: str) -> DataFrame:
    from pyspark.sql import functions as F

    return spark.read.parquet(str(RunDir(cfg.out).preprocessed)).filter(F.col("split") == split)


def rows_df(spark: SparkSession, cfg: Config, split: str, fold: int | None) -> DataFrame:
    from pyspark.sql import functions as F

    from sparkforge.data.prepare import FOLD

    df = split_df(spark, cfg, split)
    return df if fold is None else df.filter(F.col(FOLD) == fold)


def score_split(spark: SparkSession, cfg: Config, path: Path, variant: str,
                split: str, fold: int | None = None) -> DataFrame:
    """``split`` (only its ``fold`` when given) scored in Spark by the ONNX file ``path``
    (not yet computed)."""
    from sparkforge.infer import score_df

    return score_df(rows_df(spark, cfg, split, fold), model_path=str(path.resolve()),
                    sha256=sha256_file(path), inputs=model_inputs(cfg),
                    labels=read_json(RunDir(cfg.out).labels), variant=variant,
                    batch_size=cfg.score.batch_size)


def split_quality(scored: DataFrame, labels: list[str]) -> dict[str, Any]:
    """Metrics of scored rows, computed in Spark; ``gate_metric`` is accuracy (R2)."""
    from sparkforge.metrics import classification_metrics, regression_metrics

    if not labels:
        m = regression_metrics(scored)
        m["gate_metric"] = m["r2"]
        return m
    m = classification_metrics(scored, labels)
    m["gate_metric"] = m["accuracy"]
    return m


def variant_quality(spark: SparkSession, cfg: Config, path: Path, variant: str,
                    split: str, fold: int | None = None) -> dict[str, Any]:
    """Score ``split`` in Spark with ``path`` and compute its metrics in Spark."""
    labels = read_json(RunDir(cfg.out).labels)
    return split_quality(score_split(spark, cfg, path, variant, split, fold), labels)


def gate_rows(spark: SparkSession, cfg: Config) -> tuple[str, int | None, str]:
    """(split, fold, description) of the rows the gate judges on: validation fold 1.

    Preprocessed data from before the fold column is judged on the whole validation
    split (with a warning: training chose its epoch on those rows too); an empty fold
    falls back to the whole split, an empty split to train (tiny inputs).
    """
    from sparkforge.data.prepare import FOLD, GATE_FOLD

    val = split_df(spark, cfg, "val")
    if FOLD not in val.columns:
        log.warning("compress: preprocessed/ has no %r column (written by an older version); "
                    "the gate judges on the whole validation split, which also chose the "
                    "training epoch: rerun `sparkforge preprocess` to separate them", FOLD)
        return "val", None, "val split (no fold column)"
    counts = {r[FOLD]: r["count"] for r in val.groupBy(FOLD).count().collect()}
    if counts.get(GATE_FOLD, 0):
        return "val", GATE_FOLD, f"val fold {GATE_FOLD} ({counts[GATE_FOLD]} rows)"
    if sum(counts.values()):
        log.warning("compress: validation fold %d is empty; the gate judges on the whole "
                    "validation split", GATE_FOLD)
        return "val", None, f"val split ({sum(counts.values())} rows; fold {GATE_FOLD} empty)"
    n = split_df(spark, cfg, "train").count()
    log.warning("compress: the validation split is empty; the gate judges on train rows")
    return "train", None, f"train split ({n} rows; val empty)"


def split_parity(scored: DataFrame, reference: DataFrame, regression: bool) -> dict[str, Any]:
    """Agreement of two scorings of the same rows, joined by id and aggregated in Spark.

    Classification: ``max_abs_prob_diff`` (over rows and classes) and ``agreement``
    (same predicted label); regression: ``max_abs_pred_diff`` and ``mean_abs_pred_diff``.
    """
    from pyspark.sql import functions as F

    a = scored.select("id", F.col("prediction").alias("p"), F.col("probability").alias("q"))
    b = reference.select("id", F.col("prediction").alias("rp"),
                         F.col("probability").alias("rq"))
    joined = a.join(b, "id")
    if regression:
        diff = F.abs(F.col("p") - F.col("rp"))
        row = joined.agg(F.max(diff).alias("mx"), F.avg(diff).alias("mean"),
                         F.count(F.lit(1)).alias("n")).first()
        assert row is not None
        return {"max_abs_pred_diff": float(row["mx"] or 0.0),
                "mean_abs_pred_diff": float(row["mean"] or 0.0), "rows": int(row["n"])}
    max_diff = F.expr("aggregate(zip_with(q, rq, (x, y) -> abs(x - y)), 0D, "
                      "(acc, v) -> greatest(acc, v))")
    row = joined.agg(F.max(max_diff).alias("mx"),
                     F.avg((F.col("p") == F.col("rp")).cast("double")).alias("agree"),
                     F.count(F.lit(1)).alias("n")).first()
    assert row is not None
    return {"max_abs_prob_diff": float(row["mx"] or 0.0),
            "agreement": float(row["agree"] if row["agree"] is not None else 1.0),
            "rows": int(row["n"])}


def sample_split(spark: SparkSession, cfg: Config, split: str, rows: int,
                 columns: list[str]) -> dict[str, np.ndarray]:
    """A seeded Spark sample of about ``rows`` rows of ``split`` (bounded; to the driver)."""
    from sparkforge import features

    df = split_df(spark, cfg, split)
    stored = features.source_columns(columns, df.columns)
    df = df.select(*stored)
    n = df.count()
    if n == 0:
        return {c: np.zeros((0,)) for c in columns}
    fraction = min(1.0, 1.2 * rows / n)
    # Tabular features come compact (a few numbers a row) and are expanded here: dense
    # rows of a wide table (821 floats x 200k rows) filled the driver JVM's heap.
    pdf: Any = df.sample(fraction=fraction, seed=cfg.train.seed).limit(rows).toPandas()
    out = features.from_pandas(pdf, columns)
    for c in columns:
        if c in INPUT_DTYPES:
            out[c] = out[c].astype(INPUT_DTYPES[c])
    log.info("Sampled %d of %d %s rows for calibration", len(pdf), n, split)
    return out
