"""Evaluation metrics computed from per-partition partial aggregates.

Every function takes a scored Spark DataFrame and returns a JSON-serialisable
dict; row-level data never reaches the driver. pyspark is imported only when a
function runs, so importing this package stays cheap.
"""

from sparkforge.metrics.classification import classification_metrics, slice_metrics
from sparkforge.metrics.regression import regression_metrics

__all__ = ["classification_metrics", "regression_metrics", "slice_metrics"]
