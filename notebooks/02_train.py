# Databricks notebook source
# MAGIC %md
# MAGIC # 2. Train
# MAGIC Trains the model on the run directory notebook 1 wrote (`output_dir`), with
# MAGIC TorchDistributor (`train.num_processes` ranks), then shows the per-epoch history the
# MAGIC stage recorded (`model/history.json`, the manifest's `train` section).
# MAGIC
# MAGIC Parameters: `config`, `output_dir`, `input`, `overrides` as in notebook 1, and
# MAGIC `epochs` (the most; early stopping may end sooner).

# COMMAND ----------

import pandas as pd

import sparkforge
from sparkforge import notebook, run_stage

p = notebook.params(globals(), {**notebook.COMMON, "epochs": "30"})
cfg = notebook.load(p, [f"train.epochs={p['epochs']}"])
try:
    spark  # noqa: B018  (Databricks provides it)
except NameError:
    spark = sparkforge.get_session(cfg.spark)

# COMMAND ----------

summary = run_stage("train", spark, cfg)
print(f"kept epoch {summary['kept_epoch']} of {summary['epochs_run']} "
      f"({summary['kept_reason']}); stopped: {summary['stop_reason']}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Training curves

# COMMAND ----------

import matplotlib

matplotlib.use("Agg")  # no-op on Databricks, which renders figures itself
import matplotlib.pyplot as plt

history = pd.DataFrame(summary["history"])
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(history["epoch"], history["train_loss"], marker="o", label="train loss")
ax.plot(history["epoch"], history["val_loss"], marker="o", label="validation loss (fold 0)")
ax.axvline(summary["kept_epoch"], color="grey", linestyle=":", label="kept epoch")
ax.set_xlabel("epoch")
ax.legend()
notebook.show(globals(), fig, name="training_curves", out=cfg.out / "notebooks")

# COMMAND ----------

notebook.show(globals(), spark.createDataFrame(
    history[["epoch", "train_loss", "val_loss", "val_metric", "metric_name", "lr",
             "samples_per_s", "epoch_s"]]))
