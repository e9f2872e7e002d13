"""Stage 4b: scores -> metrics.json + report.html, metrics aggregated in Spark.

The pipeline's evaluation run (``eval_scores/``) gives ``metrics.json`` and
``report.html`` at the top of ``output.dir``: every variant on the test split. A dated
run (``scores/run_date=D/``) gives ``evaluations/run_date=D/metrics.json`` and its
report: the run's counts and drift, and the selected variant's metrics on the labeled
rows the pipeline did not train or select on (splits ``test`` and ``new``); a run
without labels has counts and drift only.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sparkforge.artifacts import (
    read_verified_json,
    scoring_config,
    update_manifest,
    write_json_atomic,
)
from sparkforge.config import Config
from sparkforge.rundir import RunDir

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def run_evaluate(spark: SparkSession, cfg: Config) -> dict[str, Any]:
    from pyspark.sql import functions as F

    from sparkforge.infer.runs import RUN_MANIFEST, evaluate_target, read_selection
    from sparkforge.metrics import classification_metrics, regression_metrics, slice_metrics
    from sparkforge.report import write_report

    cfg = scoring_config(cfg)
    out = cfg.out
    target = evaluate_target(cfg)
    labels = read_verified_json(out, RunDir(out).labels)
    run_manifest = read_verified_json(out, target.final / RUN_MANIFEST)
    selection = read_selection(out)
    selected = selection["selected"]
    scores = spark.read.parquet(str(target.final))
    splits = ["test", "new"] if target.dated else ["test"]
    labeled = scores.filter(F.col("split").isin(splits) & F.col("label").isNotNull())
    variants_to_measure = [selected] if target.dated else list(selection["paths"])
    n_labeled = {r["model_variant"]: r["count"] for r in labeled.filter(
        F.col("model_variant").isin(variants_to_measure)).groupBy("model_variant")
        .count().collect()}
    variants: dict[str, Any] = {}
    for variant in variants_to_measure:
        if not n_labeled.get(variant):
            continue  # no labels (a nightly table of new rows): counts and drift only
        rows = labeled.filter(F.col("model_variant") == variant)
        variants[variant] = (regression_metrics(rows) if cfg.is_regression
                             else classification_metrics(rows, labels))
    if not target.dated and not variants:
        raise RuntimeError(f"{target.final} has no labeled test rows to evaluate; the "
                           "pipeline's evaluation run scores the training input, which has "
                           "labels")
    sel_scores = scores.filter(F.col("model_variant") == selected)
    metrics: dict[str, Any] = {
        "variants": variants, "selected": selected, "run_date": target.run_date,
        "scores": str(target.final.relative_to(out)), "evaluated_splits": splits,
        "run": {k: run_manifest.get(k) for k in (
            "rows_in", "rows_scored", "rows_quarantined", "rows_skipped_already_scored",
            "quarantine_reasons", "input", "model_variant")},
        "rows_labeled": n_labeled.get(selected, 0),
        "rows_per_split": {r["split"]: r["count"]
                           for r in sel_scores.groupBy("split").count().collect()},
        "drift": run_manifest.get("drift", {}),
        # the gate's decision with every variant's measured figures
        # the binary decision threshold score applied to the selected variant (None: argmax)
        "threshold": selection.get("threshold"),
        "compression": {"max_accuracy_drop": selection.get("max_accuracy_drop"),
                        "select": selection.get("select"),
                        "variants": selection.get("variants", {})}}
    if not cfg.is_regression:
        metrics["prediction_distribution"] = {
            r["prediction"]: r["count"]
            for r in sel_scores.groupBy("prediction").count().collect()}
    if not cfg.is_regression and selected in variants:
        from sparkforge.metrics.curves import binned_curves

        sel_rows = labeled.filter(F.col("model_variant") == selected)
        metrics["curves"] = binned_curves(sel_rows, labels)
        if cfg.evaluate.slice_by:
            metrics["slices"] = slice_metrics(sel_rows, labels, cfg.evaluate.slice_by)
    if "baseline" in variants:
        # The linear baseline is a variant (built by compress, scored like the others):
        # these are its test metrics under its model's name.
        model = selection.get("variants", {}).get("baseline", {}).get("model", "linear")
        metrics["baseline"] = {"model": model, **variants["baseline"]}
    dest = target.evaluation_dir(out)
    write_json_atomic(dest / "metrics.json", metrics)
    section = "scheduled_evaluate" if target.dated else "evaluate"
    manifest = update_manifest(out, section, {
        "metrics": str((dest / "metrics.json").relative_to(out)), "run_date": target.run_date,
        "selected": selected})
    dest.mkdir(parents=True, exist_ok=True)
    write_report(dest, cfg.task, metrics, manifest, run_manifest)
    print(summary_table(metrics, cfg.is_regression), flush=True)
    return metrics


def summary_table(metrics: dict[str, Any], regression: bool) -> str:
    """The table `make demo` prints: each variant's test figures beside the baseline; for
    a run without labels, its counts and drift."""
    keys = ["rmse", "mae", "r2"] if regression else ["accuracy", "f1_macro", "log_loss", "roc_auc"]
    lines = [f"{'model (' + '+'.join(metrics.get('evaluated_splits', ['test'])) + ')':<28}"
             f"{'n_rows':>8}" + "".join(f"{k:>11}" for k in keys)]
    names = {"baseline": f"baseline {metrics.get('baseline', {}).get('model', '')}".strip()}
    rows = [(f"{names.get(v, v)}{' (selected)' if v == metrics['selected'] else ''}", m)
            for v, m in metrics["variants"].items()]
    for name, m in rows:
        cells = "".join(f"{m[k]:>11.4f}" if isinstance(m.get(k), (int, float)) else f"{'-':>11}"
                        for k in keys)
        lines.append(f"{name:<28}{m.get('n_rows', 0):>8}" + cells)
    run = metrics.get("run") or {}
    if not metrics["variants"]:
        lines.append(f"{'(no labeled rows)':<28}{0:>8}")
    if run.get("rows_in") is not None:
        lines.append(f"run {metrics['run_date']}: {run['rows_in']} rows in, "
                     f"{run['rows_scored']} scored, {run['rows_quarantined']} quarantined; "
                     f"drifted: {metrics.get('drift', {}).get('drifted') or 'none'}")
    return "\n".join(lines)
