# Databricks notebook source
# MAGIC %md
# MAGIC # sparkforge as a Spark ML Estimator
# MAGIC `SparkForgeClassifier` is a Spark ML `Estimator`: it fits inside a `pyspark.ml.Pipeline`
# MAGIC after Spark's own feature stages, and `fit` runs sparkforge's preprocess,
# MAGIC TorchDistributor training, compression and evaluation on the DataFrame it is given.
# MAGIC The fitted model scores with onnxruntime inside Spark, saves with
# MAGIC `model.write().save(path)` and loads with `PipelineModel.load(path)`.
# MAGIC
# MAGIC Install the package first (`%pip install /path/to/sparkforge`, or a cluster library).
# MAGIC On Databricks, point `run_dir` and `model_path` at a path the driver can open
# MAGIC (a `/dbfs/...` fuse path); outside Databricks, `sparkforge.get_session()` builds a
# MAGIC local session and the widgets' defaults are used.

# COMMAND ----------

import sparkforge

try:
    spark  # noqa: B018  (Databricks provides it)
except NameError:
    spark = sparkforge.get_session()

defaults = {"rows": "3000", "epochs": "2", "run_dir": "runs/notebook_estimator",
            "model_path": "runs/notebook_estimator_model"}
dbutils = globals().get("dbutils")  # Databricks provides it; elsewhere the defaults
if dbutils is not None:
    for name, value in defaults.items():
        dbutils.widgets.text(name, value)
    params = {name: dbutils.widgets.get(name) for name in defaults}
else:
    params = dict(defaults)
print(params)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Data
# MAGIC Generated loan decisions with a learnable signal: two numbers, a colour, and an
# MAGIC interaction of the two numbers that the feature stage below computes.

# COMMAND ----------

from pyspark.sql import functions as F

n = int(params["rows"])
df = (spark.range(n).select(
    F.round(F.randn(1), 4).alias("x1"), F.round(F.randn(2), 4).alias("x2"),
    F.element_at(F.array(F.lit("red"), F.lit("green"), F.lit("blue")),
                 (F.floor(F.rand(3) * 3) + 1).cast("int")).alias("color"))
      .withColumn("decision", F.when(
          2 * F.col("x1") - 1.5 * F.col("x2") + 1.5 * F.col("x1") * F.col("x2")
          + F.when(F.col("color") == "red", 1.5).otherwise(-0.5) > 0, "approved")
          .otherwise("denied"))).cache()
train, held = df.randomSplit([0.85, 0.15], seed=7)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Fit a Pipeline: a Spark ML feature stage, then the classifier
# MAGIC `config` takes the CLI's `--set` keys (validated with the same messages);
# MAGIC the columns are the estimator's params.

# COMMAND ----------

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import SQLTransformer

from sparkforge.ml import SparkForgeClassifier

clf = SparkForgeClassifier(labelCol="decision", config={
    "train.epochs": int(params["epochs"]), "train.num_processes": 1,
    "compress.variants": ["int8_dynamic"], "evaluate.baseline": False,
    "output.dir": params["run_dir"]})
pipeline = Pipeline(stages=[
    SQLTransformer(statement="SELECT *, x1 * x2 AS x1x2 FROM __THIS__"), clf])
model = pipeline.fit(train)
forge = model.stages[-1]
print("selected:", forge.summary["selected"])
for variant, m in forge.summary["variants"].items():
    print(variant, {k: round(m[k], 4) for k in ("accuracy", "f1_macro", "roc_auc")})

# COMMAND ----------

# MAGIC %md
# MAGIC ## Transform held-back rows, save, load, transform again

# COMMAND ----------

from pyspark.ml.functions import vector_to_array

scored = model.transform(held)
scored.select("x1", "x2", "color", "decision", "prediction", "probability").show(5)
# Aggregated in Spark, not collected.
accuracy = scored.select(F.avg((F.col("prediction") == F.col("decision")).cast("double"))
                         ).first()[0]
print(f"held-back accuracy: {accuracy:.4f}")

model.write().overwrite().save(params["model_path"])
reloaded = PipelineModel.load(params["model_path"])
again = reloaded.transform(held)
both = (scored.select("x1", "x2", "color", vector_to_array("probability").alias("p1"))
        .join(again.select("x1", "x2", "color", vector_to_array("probability").alias("p2")),
              ["x1", "x2", "color"]))
differ = both.filter(F.col("p1") != F.col("p2")).count()
print(f"rows whose probabilities differ after save and load: {differ}")
