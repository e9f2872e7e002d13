"""The one place that builds a SparkSession.

Library code never calls this: it takes ``spark`` or uses ``df.sparkSession``.
The CLI, the tests' fixture and notebooks call :func:`get_session`.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import TYPE_CHECKING

from sparkforge.config import ConfigError, SparkConfig

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

# Environment variable that overrides spark.master for a whole run (clusters, CI).
MASTER_ENV = "SPARKFORGE_MASTER"


# The master URLs Spark 4 accepts (SparkContext.createTaskScheduler); anything else fails
# inside the JVM with a Java traceback, so it is refused here first.
_MASTER_RE = re.compile(r"local(\[(\*|\d+)(,\s*\d+)?\])?|local-cluster\[\d+,\s*\d+,\s*\d+\]"
                        r"|spark://\S+|yarn|k8s://\S+")


def _is_local(master: str) -> bool:
    return master.startswith("local")


def check_master(cfg: SparkConfig) -> None:
    """Raise ConfigError for a master URL Spark cannot parse (``spark.master`` or
    ``SPARKFORGE_MASTER``); under spark-submit the command line's master is used."""
    env = os.environ.get(MASTER_ENV)
    if "PYSPARK_GATEWAY_PORT" in os.environ and not env:
        return
    key, master = (MASTER_ENV, env) if env else ("spark.master", cfg.master)
    if not _MASTER_RE.fullmatch(master.strip()):
        raise ConfigError(f"{key}={master!r}: not a Spark master URL; use local[*], local[N], "
                          "spark://host:7077, yarn or k8s://https://host:port")


def get_session(cfg: SparkConfig | None = None, *, extra: dict[str, str] | None = None
                ) -> SparkSession:
    """Build (or reuse) the SparkSession for ``cfg``.

    Local mode binds the driver to 127.0.0.1: otherwise Spark and TorchDistributor
    bind to the machine's external address, which a sandboxed or offline machine
    may not route. ``PYSPARK_PYTHON`` is set to the running interpreter so that
    Python workers use the same venv as the driver.
    """
    from pyspark.sql import SparkSession

    cfg = cfg or SparkConfig()
    master = os.environ.get(MASTER_ENV) or cfg.master
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(cfg.app_name)
    # Under spark-submit the JVM already exists (it set PYSPARK_GATEWAY_PORT) and the
    # master comes from the spark-submit command line: only the env override wins then.
    if "PYSPARK_GATEWAY_PORT" not in os.environ or os.environ.get(MASTER_ENV):
        builder = builder.master(master)
    else:
        master = os.environ.get("MASTER", "")
    props = {
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": "4096",
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "8" if _is_local(master) else "200",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.pyspark.python": os.environ["PYSPARK_PYTHON"],
    }
    if _is_local(master):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        props["spark.driver.host"] = "127.0.0.1"
        props["spark.driver.bindAddress"] = "127.0.0.1"
        props["spark.driver.memory"] = os.environ.get("SPARKFORGE_DRIVER_MEMORY", "4g")
    props.update(cfg.conf)
    props.update(extra or {})
    for k, v in props.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("SPARKFORGE_SPARK_LOG_LEVEL", "ERROR"))
    log.info("Spark %s session on %s (default parallelism %d)", spark.version,
             spark.sparkContext.master, spark.sparkContext.defaultParallelism)
    return spark
