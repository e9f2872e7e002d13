"""Stage 4b: scores/ -> metrics.json + report.html, metrics aggregated in Spark."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sparkforge.artifacts import read_json, update_manifest, write_json_atomic
from sparkforge.config import Config, ConfigError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def run_evaluate(spark: SparkSession, cfg: Config) -> dict[str, Any]:
    from pyspark.sql import functions as F

    from sparkforge.metrics import classification_metrics, regression_metrics, slice_metrics
    from sparkforge.report import write_report

    out = cfg.out
    if not (out / "scores").exists():
        raise ConfigError(f"output.dir={str(out)!r}: no scores/; run `sparkforge score` first")
    labels = read_json(out / "model" / "labels.json")
    selection = read_json(out / "compressed" / "selection.json")
    scores = spark.read.parquet(str(out / "scores")).filter(F.col("split") == "test")
    variants: dict[str, Any] = {}
    for variant in selection["paths"]:
        rows = scores.filter(F.col("model_variant") == variant)
        variants[variant] = (regression_metrics(rows) if cfg.is_regression
                             else classification_metrics(rows, labels))
    metrics: dict[str, Any] = {"variants": variants, "selected": selection["selected"]}
    if cfg.evaluate.slice_by and not cfg.is_regression:
        sel_rows = scores.filter(F.col("model_variant") == selection["selected"])
        metrics["slices"] = slice_metrics(sel_rows, labels, cfg.evaluate.slice_by)
    if cfg.evaluate.baseline:
        from sparkforge.baseline import run_baseline

        metrics["baseline"] = run_baseline(spark, cfg)
    write_json_atomic(out / "metrics.json", metrics)
    manifest = update_manifest(out, "evaluate", {"metrics": "metrics.json",
                                                 "selected": selection["selected"]})
    write_report(out, cfg.task, metrics, manifest)
    print(summary_table(metrics, cfg.is_regression), flush=True)
    return metrics


def summary_table(metrics: dict[str, Any], regression: bool) -> str:
    """The table `make demo` prints: each variant's test figures beside the baseline."""
    keys = ["rmse", "mae", "r2"] if regression else ["accuracy", "f1_macro", "log_loss", "roc_auc"]
    lines = [f"{'model (test split)':<28}{'n_rows':>8}" + "".join(f"{k:>11}" for k in keys)]
    rows = [(f"{v}{' (selected)' if v == metrics['selected'] else ''}", m)
            for v, m in metrics["variants"].items()]
    if "baseline" in metrics:
        rows.append((f"baseline {metrics['baseline']['model']}", metrics["baseline"]))
    for name, m in rows:
        cells = "".join(f"{m[k]:>11.4f}" if isinstance(m.get(k), (int, float)) else f"{'-':>11}"
                        for k in keys)
        lines.append(f"{name:<28}{m.get('n_rows', 0):>8}" + cells)
    return "\n".join(lines)
