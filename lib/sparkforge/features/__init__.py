"""Tabular encoding: statistics fitted on the train split only, applied identically later.

Numeric columns: mean imputation and standardization. Categorical columns, whatever
their cardinality: one-hot over the most frequent train values (the vocabulary, at most
``max_categories``), then a few hashed buckets that every other value falls into (rare
train values and values never seen in training alike, by a fixed hash of the value, so
the same value always lands in the same bucket), then one slot for nulls. No value ever
needs quarantining at scoring, and rare values still carry signal through their bucket.

The fitted state is a small JSON document (``model/preprocessor.json``); preprocess and
scoring apply it in Spark SQL (:func:`compact`), and whoever feeds a model expands the
compact rows to the dense vector one batch at a time (:func:`densify`).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from pyspark.sql import Column, DataFrame

log = logging.getLogger(__name__)

# Measured on a 300-value column with signal (3,000 rows, logistic regression, 5 seeds;
# see the encode report): one-hot of the top 64 + 1 "other" bucket 0.57 accuracy, top 64 +
# 16 hashed buckets 0.61, top 128 + 1 bucket 0.64, top 128 + 16 hashed 0.68, all 300
# values 0.83. The vocabulary is where the signal is; the buckets keep some of it for the
# tail at a small, fixed width per column (the features are dense, one float per slot).
MAX_CATEGORIES = 128  # one-hot vocabulary per column
HASH_BUCKETS = 16     # hashed buckets per column for values outside the vocabulary
ENCODING = "top_k_one_hot+hashed_tail+null_slot"
HASH = "crc32(utf-8 value) mod buckets"


def value_counts(df: DataFrame, columns: dict[str, Column], limit: int,
                 skip_nulls: bool = False) -> dict[str, dict[str, Any]]:
    """Value counts of several columns in ONE Spark job (one scan, one small shuffle).

    Per name: ``top``, the ``limit`` most frequent values as (value, count), by count
    descending then value (nulls are None; with ``skip_nulls`` they never take a top
    place); ``distinct`` values (null included), ``rows`` and ``nulls``. Only the top
    values and three numbers per column reach the driver, never a column."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    names = list(columns)
    if not names:
        return {}
    pairs = F.array(*[F.struct(F.lit(i).alias("c"), col.cast("string").alias("v"))
                      for i, col in enumerate(columns.values())])
    counts = (df.select(F.explode(pairs).alias("x")).select("x.c", "x.v")
              .groupBy("c", "v").count())
    order = ([F.col("v").isNull()] if skip_nulls else []) + [F.desc("count"),
                                                           F.asc_nulls_first("v")]
    by_col = Window.partitionBy("c")
    ranked = counts.select(
        "c", "v", "count", F.row_number().over(by_col.orderBy(*order)).alias("r"),
        F.count(F.lit(1)).over(by_col).alias("distinct"),
        F.sum("count").over(by_col).alias("rows"),
        F.sum(F.when(F.col("v").isNull(), F.col("count")).otherwise(0)).over(by_col)
        .alias("nulls"))
    out: dict[str, dict[str, Any]] = {
        n: {"top": [], "distinct": 0, "rows": 0, "nulls": 0} for n in names}
    for r in sorted(ranked.filter(F.col("r") <= limit).collect(), key=lambda r: (r.c, r.r)):
        o = out[names[r.c]]
        o.update(distinct=int(r.distinct), rows=int(r.rows), nulls=int(r.nulls))
        if not (skip_nulls and r.v is None):
            o["top"].append((r.v, int(r["count"])))
    return out


def fit(train: DataFrame, numeric: list[str], categorical: list[str],
        max_categories: int = MAX_CATEGORIES, hash_buckets: int = HASH_BUCKETS
        ) -> dict[str, Any]:
    """Fit on ``train`` (the train split only, so val/test statistics never leak in).

    Two Spark jobs whatever the number of columns: one aggregation for the numeric
    statistics, one value count for all categorical columns."""
    return fit_with_counts(train, numeric, categorical, max_categories, hash_buckets)[0]


def moment_aggs(numeric: list[str], where: Column | None = None) -> list[Column]:
    """Aggregate columns of the numeric statistics :func:`fit` needs (of the rows where
    ``where`` holds), for a caller to add to a pass of its own: :func:`moments` reads
    them back from its result row."""
    from pyspark.sql import functions as F

    def v(c: str) -> Column:
        return F.col(c) if where is None else F.when(where, F.col(c))

    aggs = []
    for i, c in enumerate(numeric):
        aggs += [F.mean(v(c)).alias(f"_fit_m{i}"), F.stddev_pop(v(c)).alias(f"_fit_s{i}")]
    return aggs


def moments(row: Any, numeric: list[str]) -> dict[str, dict[str, float]]:
    """Mean and spread per numeric column from a row with :func:`moment_aggs`; a column
    with no value gets mean 0, and a constant one spread 1 (standardising divides by it)."""
    out = {}
    for i, c in enumerate(numeric):
        mean, std = row[f"_fit_m{i}"], row[f"_fit_s{i}"]
        out[c] = {"mean": float(mean) if mean is not None else 0.0,
                  "std": float(std) if std else 1.0}
    return out


def fit_with_counts(train: DataFrame, numeric: list[str], categorical: list[str],
                    max_categories: int = MAX_CATEGORIES, hash_buckets: int = HASH_BUCKETS,
                    numeric_moments: dict[str, dict[str, float]] | None = None
                    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """:func:`fit`, and the categorical columns' :func:`value_counts` (nulls skipped) it
    was fitted from, which preprocess reuses for the drift reference (no second count).
    ``numeric_moments``: the :func:`moments` of ``train``, when the caller already
    counted them in a pass of its own (then no job here computes them)."""
    from pyspark.sql import functions as F

    if max_categories < 0 or hash_buckets < 1:
        raise ValueError(f"max_categories={max_categories}, hash_buckets={hash_buckets}: "
                         "use max_categories >= 0 and hash_buckets >= 1")
    stats: dict[str, Any] = {"numeric": {}, "categorical": {}, "categorical_buckets": {},
                             "categorical_counts": {}}
    if numeric_moments is None:
        row = train.agg(*moment_aggs(numeric)).first() if numeric else None
        numeric_moments = moments(row, numeric) if row is not None else {}
    stats["numeric"] = {c: dict(numeric_moments[c]) for c in numeric}
    counts = value_counts(train, {c: F.col(c) for c in categorical}, max_categories,
                          skip_nulls=True)
    for c in categorical:
        vc = counts[c]
        vocab = [v for v, _ in vc["top"]]
        tail_values = vc["distinct"] - (1 if vc["nulls"] else 0) - len(vocab)
        tail_rows = vc["rows"] - vc["nulls"] - sum(n for _, n in vc["top"])
        stats["categorical"][c] = vocab
        # A column whose train values all fit the vocabulary needs only one bucket (for
        # values first seen at scoring); otherwise as many as the tail can fill.
        stats["categorical_buckets"][c] = max(1, min(hash_buckets, tail_values))
        stats["categorical_counts"][c] = {
            "kept_values": len(vocab), "hashed_values": tail_values,
            "hashed_rows": tail_rows, "null_rows": vc["nulls"], "rows": vc["rows"]}
    stats["encoding"] = {"categorical": ENCODING, "max_categories": max_categories,
                         "hash_buckets": hash_buckets, "hash": HASH}
    stats["dim"] = feature_dim(stats)
    hashed = {c: n for c, n in stats["categorical_counts"].items() if n["hashed_values"]}
    if hashed:
        log.info("categorical values beyond the %d most frequent go to hashed buckets: %s",
                 max_categories, {c: (n["hashed_values"], n["hashed_rows"])
                                  for c, n in hashed.items()})
    return stats, counts


def _block(stats: dict[str, Any], c: str) -> tuple[int, int | None]:
    """(hashed buckets, null slot offset or None) of categorical column ``c``'s block.

    Files written before the hashed tail have no ``categorical_buckets``: one unknown
    bucket after the vocabulary that nulls share (so they still encode as they did)."""
    k = len(stats["categorical"][c])
    buckets = stats.get("categorical_buckets", {}).get(c)
    return (1, None) if buckets is None else (int(buckets), k + int(buckets))


def feature_dim(stats: dict[str, Any]) -> int:
    dim = len(stats["numeric"])
    for c, cats in stats["categorical"].items():
        buckets, null_slot = _block(stats, c)
        dim += len(cats) + buckets + (0 if null_slot is None else 1)
    return dim


def bucket_of(value: str, buckets: int) -> int:
    """Hashed bucket of a value outside the vocabulary: a fixed hash (not Python's
    per-process ``hash``), so training and every scoring run agree."""
    return zlib.crc32(value.encode("utf-8")) % buckets


# The compact form of the encoded features, what preprocess writes and scoring feeds its
# workers: the standardized numerics, per categorical column the position of its one slot
# in the dense vector, and the dense width (a constant column: Parquet stores it in a few
# bytes, and every reader, pyarrow, petastorm or Spark, finds it beside the rows).
# ``expand`` rebuilds the dense vector the model takes, the same bit for bit.
FEATURES = "features"
VALUES, SLOTS, DIM = "feature_values", "feature_slots", "feature_dim"
COMPACT = (VALUES, SLOTS, DIM)


def compact_sql(stats: dict[str, Any]) -> tuple[str, str]:
    """Spark SQL for the compact columns (``feature_values`` array<float>,
    ``feature_slots`` array<int>) of prepared rows: numeric columns as doubles,
    categorical ones as trimmed strings (what ``prepare`` keeps).

    Native Spark expressions, no Python: the vocabulary is a map literal, the hashed
    bucket Spark's ``crc32`` (zlib's CRC-32 of the UTF-8 bytes, as :func:`bucket_of`).
    The dense layout is the one every model was trained on: the numeric columns (sorted
    by name: the JSON file's key order, the one order that survives its round trip), then
    per categorical column (sorted) its vocabulary, its hashed buckets and its null slot
    (files written before the hashed tail: one bucket that nulls share, see ``_block``).
    Written as SQL text: one JVM call for all columns (see ``data/prepare.py``)."""
    from sparkforge.data.prepare import q, sql_str

    values = []
    for c in sorted(stats["numeric"]):
        s = stats["numeric"][c]
        mean, std = repr(float(s["mean"])), repr(float(s["std"]))
        # float64 arithmetic, then float32 (what the model is fed).
        values.append(f"CAST((coalesce({q(c)}, CAST('{mean}' AS DOUBLE)) - "
                      f"CAST('{mean}' AS DOUBLE)) / CAST('{std}' AS DOUBLE) AS FLOAT)")
    slots = []
    j = len(stats["numeric"])
    for c in sorted(stats["categorical"]):
        cats = stats["categorical"][c]
        buckets, null_slot = _block(stats, c)
        null_pos = len(cats) if null_slot is None else null_slot
        v = q(c)
        pairs = ", ".join(f"{sql_str(str(x))}, {i}" for i, x in enumerate(cats))
        known = (f"try_element_at(map({pairs}), CAST({v} AS STRING))" if cats
                 else "CAST(NULL AS INT)")
        crc = f"crc32(CAST(CAST({v} AS STRING) AS BINARY))"
        hashed = f"{len(cats)} + CAST(pmod({crc}, {buckets}) AS INT)"
        slots.append(f"CAST({j} + CASE WHEN {v} IS NULL THEN {null_pos} "
                     f"ELSE coalesce({known}, {hashed}) END AS INT)")
        j += len(cats) + buckets + (0 if null_slot is None else 1)
    return (f"CAST(array({', '.join(values)}) AS ARRAY<FLOAT>)",
            f"CAST(array({', '.join(slots)}) AS ARRAY<INT>)")


def compact(df: DataFrame, stats: dict[str, Any], keep: list[str] | None = None
            ) -> DataFrame:
    """``df``'s prepared rows encoded, in compact form, in the JVM: the raw feature columns
    (but those in ``keep``) replaced by ``feature_values``, ``feature_slots`` and
    ``feature_dim``.

    What preprocess writes and scoring hands its workers: for a census-like table 40
    numbers a row instead of 821 (the dense row through an Arrow UDF and back was most of
    preprocess's write, and filled the driver's heap when compress sampled 200k rows)."""
    from pyspark.sql import functions as F

    cols = sorted(stats["numeric"]) + sorted(stats["categorical"])
    values, slots = compact_sql(stats)
    rest = [c for c in df.columns if c not in cols or c in (keep or [])]
    return df.select(*rest, F.expr(values).alias(VALUES), F.expr(slots).alias(SLOTS),
                     F.lit(int(stats["dim"])).cast("int").alias(DIM))


def source_columns(names: Sequence[str], available: Sequence[str]) -> list[str]:
    """The stored columns to read for the model columns ``names``: ``features`` comes from
    the compact columns where the data has those and no dense ``features`` column (data
    written before the compact form has the dense one)."""
    compact_here = FEATURES not in available and all(c in available for c in COMPACT)
    return [c for n in names
            for c in (COMPACT if n == FEATURES and compact_here else (n,))]


def expand(values: np.ndarray, slots: np.ndarray, dim: int) -> np.ndarray:
    """The dense float32[N, dim] features from the compact form: float32[N, numerics]
    and the one-hot positions int[N, categoricals]."""
    import numpy as np

    n = len(values)
    out = np.zeros((n, dim), dtype=np.float32)
    out[:, :values.shape[1]] = values
    if slots.shape[1]:
        out[np.arange(n)[:, None], slots] = 1.0
    return out


def densify(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A batch of named arrays with the compact columns replaced by dense ``features``
    (unchanged when it has none): values and slots as [rows, width] arrays."""
    import numpy as np

    if VALUES not in batch:
        return batch
    out = {k: v for k, v in batch.items() if k not in COMPACT}
    dims = np.asarray(batch[DIM]).reshape(-1)
    n = len(dims)
    if not n:
        out[FEATURES] = np.zeros((0, 0), dtype=np.float32)
        return out
    values = np.asarray(batch[VALUES], dtype=np.float32).reshape(n, -1)
    slots = np.asarray(batch[SLOTS], dtype=np.int64).reshape(n, -1)
    out[FEATURES] = expand(values, slots, int(dims[0]))
    return out


def from_pandas(pdf: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    """``names`` of a pandas frame of stored rows as arrays: array-valued columns as
    [rows, width], the others as they are, and ``features`` dense whether the frame holds
    it dense or compact."""
    import numpy as np

    out = {}
    for c in source_columns(names, list(pdf.columns)):
        v = pdf[c].to_numpy()
        if v.dtype == object and len(v) and isinstance(v[0], (np.ndarray, list)):
            v = np.stack(v)
        out[c] = v
    return densify(out)
