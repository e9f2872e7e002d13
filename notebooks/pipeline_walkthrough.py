# Databricks notebook source
# MAGIC %md
# MAGIC # sparkforge walkthrough
# MAGIC Runs each stage of the pipeline on the notebook's own SparkSession (`spark`), then
# MAGIC looks at the metrics. Install the package first (`%pip install /path/to/sparkforge`,
# MAGIC or a cluster library); outside Databricks, `sparkforge.get_session()` builds a local one.

# COMMAND ----------

import json
from pathlib import Path

import sparkforge
from sparkforge import load_config, run_stage

try:
    spark  # noqa: B018  (Databricks provides it)
except NameError:
    spark = sparkforge.get_session()

cfg = load_config("conf/demo_tabular.yaml", ["output.dir=runs/notebook_tabular", "train.epochs=3"])

# COMMAND ----------

for stage in ("preprocess", "train", "compress", "score", "evaluate"):
    print(stage, "->", list(run_stage(stage, spark, cfg))[:6])

# COMMAND ----------

metrics = json.loads(Path(cfg.output.dir, "metrics.json").read_text())
print(json.dumps({v: {k: m[k] for k in ("accuracy", "f1_macro", "roc_auc")}
                  for v, m in metrics["variants"].items()}, indent=2))

# COMMAND ----------

# Scores stay in Spark: aggregate them there rather than collecting them.
scores = spark.read.parquet(str(Path(cfg.output.dir, "eval_scores")))
scores.groupBy("split", "model_variant", "prediction").count().orderBy("split").show()
