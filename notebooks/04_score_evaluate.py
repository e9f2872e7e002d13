# Databricks notebook source
# MAGIC %md
# MAGIC # 4. Batch score and evaluate
# MAGIC Scores a table with the selected ONNX variant (onnxruntime in an Arrow UDF, one session
# MAGIC per Python worker), then evaluates: metrics aggregated in Spark, `metrics.json` and
# MAGIC `report.html`. Reads the run directory of notebooks 1-3.
# MAGIC
# MAGIC Parameters: `config`, `output_dir`, `input`, `overrides` as in notebook 1, and for a
# MAGIC scheduled (dated) run `run_date` (YYYY-MM-DD) and `score_input` (the table to score).
# MAGIC Both empty: the pipeline's own scoring of its input (`eval_scores/`, `metrics.json`).

# COMMAND ----------

import json

import pandas as pd

import sparkforge
from sparkforge import notebook, run_stage
from sparkforge.infer.runs import score_target

p = notebook.params(globals(), {**notebook.COMMON, "run_date": "", "score_input": ""})
extra = [f"run.date={p['run_date']}"] if p["run_date"] else []
extra += [f"score.input={p['score_input']}"] if p["score_input"] else []
cfg = notebook.load(p, extra)
try:
    spark  # noqa: B018  (Databricks provides it)
except NameError:
    spark = sparkforge.get_session(cfg.spark)

# COMMAND ----------

scored = run_stage("score", spark, cfg)
print(f"{scored['rows_in']} rows in, {scored['rows_scored']} scored, "
      f"{scored['rows_quarantined']} quarantined; drifted: {scored['drift']['drifted'] or 'none'}")

# COMMAND ----------

metrics = run_stage("evaluate", spark, cfg)

# COMMAND ----------

# Scores stay in Spark: aggregate them there rather than collecting them.
scores = spark.read.parquet(str(score_target(cfg).final))
notebook.show(globals(), scores.groupBy("split", "model_variant", "prediction").count()
              .orderBy("split", "model_variant", "prediction"))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Test metrics per variant (`metrics.json`; the report is `report.html` beside it)

# COMMAND ----------

keys = ("n_rows", "accuracy", "f1_macro", "log_loss", "roc_auc", "rmse", "mae", "r2")
table = pd.DataFrame([{"variant": name, "selected": name == metrics.get("selected"),
                       **{k: m[k] for k in keys if k in m}}
                      for name, m in metrics.get("variants", {}).items()])
if table.empty:  # a dated table without labels: its counts (and drift, in the report)
    table = pd.DataFrame([{"run_date": metrics["run_date"],
                           **{k: metrics["run"][k] for k in ("rows_in", "rows_scored",
                                                             "rows_quarantined")}}])
print(json.dumps({"selected": metrics.get("selected")}))
notebook.show(globals(), spark.createDataFrame(table))
