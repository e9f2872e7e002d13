"""sparkforge: train, compress and batch-score deep-learning models on Apache Spark.

The public API is small and imports neither pyspark nor torch at import time::

    from sparkforge import load_config, get_session, run_stage
    cfg = load_config("conf/demo_text.yaml", ["output.dir=runs/x"])
    spark = get_session(cfg.spark)
    run_stage("pipeline", spark, cfg)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sparkforge.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__version__ = "0.1.0"
__all__ = ["Config", "ConfigError", "__version__", "get_session", "load_config", "run_stage"]


def get_session(cfg: Any = None) -> SparkSession:
    from sparkforge.spark.session import get_session as _get

    return _get(cfg)


def run_stage(stage: str, spark: SparkSession, cfg: Config) -> dict[str, Any]:
    from sparkforge.jobs import stage_fn

    return stage_fn(stage)(spark, cfg)
