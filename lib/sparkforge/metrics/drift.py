"""Population stability index (PSI) of features and scores against a training reference.

A reference is a small JSON document: per column, either numeric bin edges with the
fraction of reference rows in each bin, or category fractions. Both the reference
and a new table's fractions are counted in Spark with one aggregation each; only the
bin counts reach the driver.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

EPS = 1e-4  # floor for empty bins, so log(p/q) stays finite
N_BINS = 10


def _bucket(col: Column, edges: list[float]) -> Column:
    """Index of the bin of ``col`` (nulls get their own bin, len(edges) + 1)."""
    from pyspark.sql import functions as F

    idx = sum(((col >= F.lit(e)).cast("int") for e in edges), F.lit(0))
    return F.when(col.isNull(), F.lit(len(edges) + 1)).otherwise(idx)


def numeric_edges(df: DataFrame, cols: list[str], n_bins: int = N_BINS) -> dict[str, list[float]]:
    """Interior quantile edges per numeric column (deduplicated)."""
    if not cols:
        return {}
    probs = [i / n_bins for i in range(1, n_bins)]
    qs = df.approxQuantile(cols, probs, 0.001)
    return {c: sorted({float(v) for v in q}) for c, q in zip(cols, qs, strict=True)}


def profile(df: DataFrame, numeric: dict[str, list[float]], categorical: list[str],
            max_categories: int = 50) -> dict[str, Any]:
    """Fractions per bin / category for each column of ``df``."""
    from pyspark.sql import functions as F

    out: dict[str, Any] = {}
    if numeric:
        aggs = [F.count(F.lit(1)).alias("_n")]
        for c, edges in numeric.items():
            b = _bucket(F.col(c).cast("double"), edges)
            aggs += [F.sum((b == i).cast("long")).alias(f"{c}\u0001{i}")
                     for i in range(len(edges) + 2)]
        row = df.agg(*aggs).first()
        assert row is not None
        n = max(int(row["_n"]), 1)
        for c, edges in numeric.items():
            counts = [int(row[f"{c}\u0001{i}"] or 0) for i in range(len(edges) + 2)]
            out[c] = {"kind": "numeric", "edges": edges, "fractions": [k / n for k in counts]}
    for c in categorical:
        rows = (df.groupBy(F.col(c).cast("string").alias("v")).count()
                .orderBy(F.desc("count")).limit(max_categories + 1).collect())
        total = df.count() if len(rows) > max_categories else sum(r["count"] for r in rows)
        fr = {("\u2400" if r["v"] is None else r["v"]): r["count"] / max(total, 1)
              for r in rows[:max_categories]}
        out[c] = {"kind": "categorical", "fractions": fr}
    return out


def psi(ref: list[float] | dict[str, float], cur: list[float] | dict[str, float]) -> float:
    """PSI = sum((cur - ref) * ln(cur / ref)) over bins, empty bins floored at EPS."""
    if isinstance(ref, dict) and isinstance(cur, dict):
        keys = set(ref) | set(cur)
        pairs = [(ref.get(k, 0.0), cur.get(k, 0.0)) for k in keys]
        # categories outside the reference's top ones count as one "other" bin
        pairs.append((max(0.0, 1 - sum(ref.values())), max(0.0, 1 - sum(cur.values()))))
    else:
        pairs = list(zip(ref, cur, strict=True))  # type: ignore[arg-type]
    total = 0.0
    for r, c in pairs:
        r, c = max(r, EPS), max(c, EPS)
        total += (c - r) * math.log(c / r)
    return total


def drift_report(reference: dict[str, Any], df: DataFrame, threshold: float) -> dict[str, Any]:
    """PSI of every reference column in ``df``; ``drifted`` lists those above threshold."""
    numeric = {c: r["edges"] for c, r in reference.items()
               if r["kind"] == "numeric" and c in df.columns}
    categorical = [c for c, r in reference.items()
                   if r["kind"] == "categorical" and c in df.columns]
    current = profile(df, numeric, categorical)
    values = {c: psi(reference[c]["fractions"], current[c]["fractions"]) for c in current}
    return {"psi": values, "threshold": threshold,
            "drifted": sorted(c for c, v in values.items() if v > threshold)}
