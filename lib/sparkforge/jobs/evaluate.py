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

    from sparkforge.jobs.score import RUN_MANIFEST, published_dates
    from sparkforge.metrics import classification_metrics, regression_metrics, slice_metrics
    from sparkforge.report import write_report

    out = cfg.out
    dates = published_dates(out / "scores")
    run_date = cfg.run.date or (dates[-1] if dates else "")
    part = out / "scores" / f"run_date={run_date}"
    if run_date not in dates:
        raise ConfigError(f"run.date={run_date!r}: no published scores/run_date={run_date}/ "
                          f"(published: {dates or 'none'}); run `sparkforge score` first")
    labels = read_json(out / "model" / "labels.json")
    run_manifest = read_json(part / RUN_MANIFEST)
    selection = read_json(out / "compressed" / "selection.json")
    scores = (spark.read.parquet(str(part))
              .filter((F.col("split") == "test") & F.col("label").isNotNull()))
    variants: dict[str, Any] = {}
    for variant in selection["paths"]:
        rows = scores.filter(F.col("model_variant") == variant)
        variants[variant] = (regression_metrics(rows) if cfg.is_regression
                             else classification_metrics(rows, labels))
    metrics: dict[str, Any] = {"variants": variants, "selected": selection["selected"],
                               "run_date": run_date,
                               # the gate's decision with every variant's measured figures
                               "compression": {
                                   "max_accuracy_drop": selection.get("max_accuracy_drop"),
                                   "select": selection.get("select"),
                                   "variants": selection.get("variants", {})}}
    if not cfg.is_regression:
        from sparkforge.metrics.curves import binned_curves

        sel_rows = scores.filter(F.col("model_variant") == selection["selected"])
        metrics["curves"] = binned_curves(sel_rows, labels)
    if cfg.evaluate.slice_by and not cfg.is_regression:
        sel_rows = scores.filter(F.col("model_variant") == selection["selected"])
        metrics["slices"] = slice_metrics(sel_rows, labels, cfg.evaluate.slice_by)
    if "baseline" in variants:
        # The linear baseline is a variant (built by compress, scored like the others):
        # these are its test metrics under its model's name.
        model = selection.get("variants", {}).get("baseline", {}).get("model", "linear")
        metrics["baseline"] = {"model": model, **variants["baseline"]}
    write_json_atomic(out / "metrics.json", metrics)
    manifest = update_manifest(out, "evaluate", {"metrics": "metrics.json", "run_date": run_date,
                                                 "selected": selection["selected"]})
    write_report(out, cfg.task, metrics, manifest, run_manifest)
    print(summary_table(metrics, cfg.is_regression), flush=True)
    return metrics


def summary_table(metrics: dict[str, Any], regression: bool) -> str:
    """The table `make demo` prints: each variant's test figures beside the baseline."""
    keys = ["rmse", "mae", "r2"] if regression else ["accuracy", "f1_macro", "log_loss", "roc_auc"]
    lines = [f"{'model (test split)':<28}{'n_rows':>8}" + "".join(f"{k:>11}" for k in keys)]
    names = {"baseline": f"baseline {metrics.get('baseline', {}).get('model', '')}".strip()}
    rows = [(f"{names.get(v, v)}{' (selected)' if v == metrics['selected'] else ''}", m)
            for v, m in metrics["variants"].items()]
    for name, m in rows:
        cells = "".join(f"{m[k]:>11.4f}" if isinstance(m.get(k), (int, float)) else f"{'-':>11}"
                        for k in keys)
        lines.append(f"{name:<28}{m.get('n_rows', 0):>8}" + cells)
    return "\n".join(lines)
