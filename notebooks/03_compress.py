# Databricks notebook source
# MAGIC %md
# MAGIC # 3. Compress
# MAGIC Exports the trained model to ONNX (checked against torch), builds the configured
# MAGIC variants (`compress.variants`: int8, pruned, distilled, ...) and the linear baseline,
# MAGIC measures each on validation fold 1 and picks one by the accuracy gate
# MAGIC (`compress.max_accuracy_drop`). Reads and writes the run directory of notebooks 1-2.
# MAGIC
# MAGIC Parameters: `config`, `output_dir`, `input`, `overrides` as in notebook 1, and
# MAGIC `variants` (comma-separated; empty: the config's).

# COMMAND ----------

import pandas as pd

import sparkforge
from sparkforge import notebook, run_stage

p = notebook.params(globals(), {**notebook.COMMON, "variants": ""})
cfg = notebook.load(p, [f"compress.variants=[{p['variants']}]"] if p["variants"] else [])
try:
    spark  # noqa: B018  (Databricks provides it)
except NameError:
    spark = sparkforge.get_session(cfg.spark)

# COMMAND ----------

summary = run_stage("compress", spark, cfg)
print(f"selected: {summary['selected']}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## The gate
# MAGIC One row per variant: size, latency (batch 1024, one thread), the validation metric the
# MAGIC gate judged, its drop from the reference, and the decision.

# COMMAND ----------

rows = [{"variant": name, "selected": name == summary["selected"],
         "file_bytes": v.get("file_bytes"), "size_ratio": v.get("size_ratio"),
         "latency_ms_b1024": v.get("latency_ms_b1024"), "gate_metric": v.get("gate_metric"),
         "gate_metric_drop": v.get("gate_metric_drop"), "decision": v.get("decision", "")}
        for name, v in summary["variants"].items()]
notebook.show(globals(), spark.createDataFrame(pd.DataFrame(rows)))
