"""A scikit-learn reference model on the same train split (TF-IDF or one-hot + LR).

This is a yardstick for the report, not part of the distributed pipeline: it
streams a bounded number of train rows (``evaluate.baseline_max_rows``) to the driver.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sparkforge.config import Config

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def _rows(spark: SparkSession, cfg: Config, split: str, cols: list[str]) -> pd.DataFrame:
    from pyspark.sql import functions as F

    df = (spark.read.parquet(str(cfg.out / "preprocessed")).filter(F.col("split") == split)
          .select(*cols).orderBy("id").limit(cfg.evaluate.baseline_max_rows))
    return df.toPandas()


def run_baseline(spark: SparkSession, cfg: Config) -> dict[str, Any]:
    import numpy as np
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score, mean_squared_error

    if cfg.is_text:
        from sklearn.feature_extraction.text import TfidfVectorizer

        train = _rows(spark, cfg, "train", ["id", "text", "label"])
        test = _rows(spark, cfg, "test", ["id", "text", "label"])
        vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        xtr, xte = vec.fit_transform(train["text"]), vec.transform(test["text"])
        name = "tfidf_logreg"
    else:
        train = _rows(spark, cfg, "train", ["id", "features", "label"])
        test = _rows(spark, cfg, "test", ["id", "features", "label"])
        xtr, xte = np.stack(train["features"].to_numpy()), np.stack(test["features"].to_numpy())
        name = "linear_regression" if cfg.is_regression else "onehot_logreg"
    if cfg.is_regression:
        reg = LinearRegression().fit(xtr, train["label"])
        pred = reg.predict(xte)
        return {"model": name, "n_train": len(train), "n_rows": len(test),
                "rmse": float(np.sqrt(mean_squared_error(test["label"], pred)))}
    clf = LogisticRegression(max_iter=2000, C=4.0 if cfg.is_text else 1.0).fit(xtr, train["label"])
    pred = clf.predict(xte)
    result = {"model": name, "n_train": len(train), "n_rows": len(test),
              "accuracy": float(accuracy_score(test["label"], pred)),
              "f1_macro": float(f1_score(test["label"], pred, average="macro"))}
    log.info("baseline %s: %s", name, result)
    return result
