"""Tabular encoding: statistics fitted on the train split only, applied identically later.

Numeric columns: mean imputation and standardization. Categorical columns: one-hot
over the most frequent train categories plus an unknown bucket. The fitted state is
a small JSON document (``model/preprocessor.json``) shipped to executors in the UDF
closure; scoring re-applies the same document.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pandas as pd  # pandas UDF type hints are resolved at runtime

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

MAX_CATEGORIES = 64  # per column; the rest share the unknown bucket


def fit(train: DataFrame, numeric: list[str], categorical: list[str],
        max_categories: int = MAX_CATEGORIES) -> dict[str, Any]:
    """Fit on ``train`` (the train split only, so val/test statistics never leak in)."""
    from pyspark.sql import functions as F

    stats: dict[str, Any] = {"numeric": {}, "categorical": {}}
    if numeric:
        aggs = []
        for c in numeric:
            aggs += [F.mean(c).alias(f"m_{c}"), F.stddev_pop(c).alias(f"s_{c}")]
        row = train.agg(*aggs).first()
        assert row is not None
        for c in numeric:
            mean = row[f"m_{c}"] if row[f"m_{c}"] is not None else 0.0
            std = row[f"s_{c}"] or 0.0
            stats["numeric"][c] = {"mean": float(mean), "std": float(std) if std > 0 else 1.0}
    for c in categorical:
        # Bounded: the top categories of one column, never the column itself.
        top = (train.groupBy(c).count().orderBy(F.desc("count"), F.asc(c))
               .limit(max_categories).collect())
        stats["categorical"][c] = [r[c] for r in top if r[c] is not None]
    stats["dim"] = feature_dim(stats)
    return stats


def feature_dim(stats: dict[str, Any]) -> int:
    return len(stats["numeric"]) + sum(len(v) + 1 for v in stats["categorical"].values())


def transform_pandas(pdf: pd.DataFrame, stats: dict[str, Any]) -> tuple[Any, Any]:
    """(features float32[N, dim], unknown-category flags bool[N]) for a pandas batch."""
    import numpy as np

    n = len(pdf)
    out = np.zeros((n, stats["dim"]), dtype=np.float32)
    unknown = np.zeros(n, dtype=bool)
    j = 0
    # Column order is the sorted names: the JSON file is written with sorted keys, so
    # this is the one order that survives the round trip to scoring.
    for c in sorted(stats["numeric"]):
        s = stats["numeric"][c]
        v = pdf[c].astype("float64").to_numpy()
        v = np.where(np.isnan(v), s["mean"], v)
        out[:, j] = (v - s["mean"]) / s["std"]
        j += 1
    for c in sorted(stats["categorical"]):
        cats = stats["categorical"][c]
        index = {v: i for i, v in enumerate(cats)}
        vals = pdf[c].tolist()
        # Unknown bucket at the end of this column's block; nulls count as unknown too.
        pos = np.array([index.get(v, len(cats)) for v in vals], dtype=np.int64)
        unknown |= np.array([v is not None and v not in index for v in vals], dtype=bool)
        out[np.arange(n), j + pos] = 1.0
        j += len(cats) + 1
    return out, unknown


def transform(df: DataFrame, stats: dict[str, Any], keep: list[str] | None = None
              ) -> DataFrame:
    """Replace the raw feature columns (but those in ``keep``) by one ``features``
    array<float> column."""
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    cols = sorted(stats["numeric"]) + sorted(stats["categorical"])

    @pandas_udf("array<float>")  # type: ignore[call-overload]
    def _encode(*series: pd.Series) -> pd.Series:
        pdf = pd.concat(series, axis=1, keys=cols)
        feats, _ = transform_pandas(pdf, stats)
        return pd.Series(list(feats))

    rest = [c for c in df.columns if c not in cols or c in (keep or [])]
    return df.select(*rest, _encode(*[F.col(c) for c in cols]).alias("features"))

