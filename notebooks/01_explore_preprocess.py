# Databricks notebook source
# MAGIC %md
# MAGIC # 1. Explore and preprocess
# MAGIC Looks at the raw input (schema, label distribution, nulls per column), then runs the
# MAGIC `preprocess` stage: quarantine, dedupe, split, encoding. It writes the run directory
# MAGIC (`output_dir`) that notebooks 2 (train), 3 (compress) and 4 (score + evaluate) read.
# MAGIC
# MAGIC Parameters (widgets on Databricks; the defaults elsewhere): `config`, `output_dir`,
# MAGIC `input` (empty: the config's `data.input`), `overrides` (`key=value ...`, e.g.
# MAGIC `tracking.mlflow=true`). Install the package first (`%pip install /path/to/sparkforge`
# MAGIC or a cluster library); outside Databricks, `sparkforge.get_session()` builds a local
# MAGIC session.

# COMMAND ----------

import json
from pathlib import Path

from pyspark.sql import functions as F

import sparkforge
from sparkforge import notebook, run_stage
from sparkforge.data.readers import CORRUPT, read_raw

p = notebook.params(globals(), notebook.COMMON)
cfg = notebook.load(p)
try:
    spark  # noqa: B018  (Databricks provides it)
except NameError:
    spark = sparkforge.get_session(cfg.spark)

# COMMAND ----------

# MAGIC %md
# MAGIC ## The raw input
# MAGIC Read with the same reader the pipeline uses (schema, format options, PERMISSIVE mode).

# COMMAND ----------

raw = read_raw(spark, cfg)
columns = [c for c in raw.columns if c != CORRUPT]
raw.select(columns).printSchema()
label = cfg.data.label_column
# Aggregated in Spark: nothing but the counts comes to the driver.
notebook.show(globals(), raw.groupBy(label).count().orderBy(F.desc("count"), label))
notebook.show(globals(), raw.select([F.sum(F.col(c).isNull().cast("int")).alias(c)
                                     for c in columns]))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Preprocess

# COMMAND ----------

summary = run_stage("preprocess", spark, cfg)
print(json.dumps({k: summary.get(k) for k in ("rows_in", "rows_kept", "rows_quarantined",
                                              "rows_per_split", "quarantine_reasons")}, indent=2))

# COMMAND ----------

# Rows per split and label, counted in Spark from what preprocess wrote.
prepared = spark.read.parquet(str(Path(cfg.output.dir, "preprocessed")))
notebook.show(globals(), prepared.groupBy("split", "label").count().orderBy("split", "label"))
