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
    from pyspark.sql import DataFrame

EPS = 1e-4  # floor for empty bins, so log(p/q) stays finite
N_BINS = 10


def numeric_edges(df: DataFrame, cols: list[str], n_bins: int = N_BINS) -> dict[str, list[float]]:
    """Interior quantile edges per numeric column (deduplicated)."""
    if not cols:
        return {}
    probs = [i / n_bins for i in range(1, n_bins)]
    qs = df.approxQuantile(cols, probs, 0.001)
    return {c: sorted({float(v) for v in q}) for c, q in zip(cols, qs, strict=True)}


def _numeric_fractions(df: DataFrame, numeric: dict[str, list[float]]) -> dict[str, Any]:
    """Bin fractions of every numeric column from ONE global aggregation, no shuffle.

    Bins 0..len(edges): the number of (ascending) edges at or below the value, so bin i
    holds the rows at or above edge i-1 but below edge i (NaN sorts above every edge);
    bin len(edges) + 1 holds the nulls. Counted as the rows at or above each edge."""
    from sparkforge.data.prepare import q, sql_double

    exprs = ["count(1)"]
    for i, (c, edges) in enumerate(numeric.items()):
        v = f"CAST({q(c)} AS DOUBLE)"
        exprs.append(f"count({v}) AS n{i}")
        exprs += [f"count_if({v} >= {sql_double(e)}) AS g{i}_{j}" for j, e in enumerate(edges)]
    row = df.selectExpr(*exprs).first()
    assert row is not None
    rows = max(int(row[0]), 1)
    out: dict[str, Any] = {}
    for i, (c, edges) in enumerate(numeric.items()):
        present = int(row[f"n{i}"])
        at_or_above = [present] + [int(row[f"g{i}_{j}"]) for j in range(len(edges))] + [0]
        bins = [at_or_above[k] - at_or_above[k + 1] for k in range(len(edges) + 1)]
        bins.append(int(row[0]) - present)  # the null bin
        out[c] = {"kind": "numeric", "edges": edges, "fractions": [b / rows for b in bins]}
    return out


def profile(df: DataFrame, numeric: dict[str, list[float]], categorical: list[str],
            max_categories: int = 50) -> dict[str, Any]:
    """Fractions per bin / category for each column of ``df``: one Spark job for all
    columns (bin indices and categories counted together), whatever their number."""
    from pyspark.sql import functions as F

    from sparkforge.features import value_counts

    out: dict[str, Any] = _numeric_fractions(df, numeric) if numeric else {}
    counts = value_counts(df, {f"\u0001{c}": F.col(c) for c in categorical},
                          max_categories + 1)
    for c in categorical:
        out[c] = categorical_fractions(counts[f"\u0001{c}"], max_categories)
    return out


def categorical_fractions(vc: dict[str, Any], max_categories: int = 50) -> dict[str, Any]:
    """The reference entry of a categorical column from its ``value_counts`` (counted with
    or without ``skip_nulls``, with a limit of at least ``max_categories``): the fractions of
    its ``max_categories`` commonest values, nulls as one value, ties by value."""
    top = [(v, n) for v, n in vc["top"] if v is not None]
    if vc["nulls"]:
        top.append((None, vc["nulls"]))
    # value_counts' order: count descending, then the value with null first (Spark orders
    # strings by their UTF-8 bytes, which is Python's code point order).
    top.sort(key=lambda x: (-x[1], x[0] is not None, x[0] or ""))
    total = max(vc["rows"], 1)
    fr = {("\u2400" if v is None else v): k / total for v, k in top[:max_categories]}
    return {"kind": "categorical", "fractions": fr}


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
