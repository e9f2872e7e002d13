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
    """Fractions per bin / category for each column of ``df``: one Spark job for all
    columns (bin indices and categories counted together), whatever their number."""
    from pyspark.sql import functions as F

    from sparkforge.features import value_counts

    exprs = {c: _bucket(F.col(c).cast("double"), edges) for c, edges in numeric.items()}
    exprs.update({f"\u0001{c}": F.col(c) for c in categorical})  # numeric names may clash
    limit = max([max_categories + 1] + [len(e) + 2 for e in numeric.values()])
    counts = value_counts(df, exprs, limit)
    out: dict[str, Any] = {}
    for c, edges in numeric.items():
        vc = counts[c]
        n = max(vc["rows"], 1)
        by_bin = {int(v): k for v, k in vc["top"]}
        out[c] = {"kind": "numeric", "edges": edges,
                  "fractions": [by_bin.get(i, 0) / n for i in range(len(edges) + 2)]}
    for c in categorical:
        vc = counts[f"\u0001{c}"]
        total = max(vc["rows"], 1)
        fr = {("\u2400" if v is None else v): k / total for v, k in vc["top"][:max_categories]}
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
