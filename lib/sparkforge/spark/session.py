"""The one place that builds a SparkSession.

Library code never calls this: it takes ``spark`` or uses ``df.sparkSession``.
The CLI, the tests' fixture and notebooks call :func:`get_session`.

``spark.remote`` (or ``SPARK_REMOTE``) makes it a Spark Connect client session. Code that
may run on either kind uses :func:`is_connect` and :func:`default_parallelism` here
instead of ``spark.sparkContext``, which a Connect session does not have.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import TYPE_CHECKING

from sparkforge.config import Config, ConfigError, SparkConfig

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

# Environment variable that overrides spark.master for a whole run (clusters, CI).
MASTER_ENV = "SPARKFORGE_MASTER"
# pyspark's own variable for a Spark Connect URL; it overrides spark.remote.
REMOTE_ENV = "SPARK_REMOTE"
JAVA_OPTIONS = "spark.driver.extraJavaOptions"
PETASTORM_OVER_CONNECT = (
    "train.loader='petastorm' cannot run through Spark Connect (spark.remote or "
    "SPARK_REMOTE): petastorm's converter needs the SparkContext, which a Connect session "
    "does not have; use train.loader=arrow, or run without spark.remote/SPARK_REMOTE")


# Runtime SQL settings of every session, classic or Connect (each yields to spark.conf).
SQL_DEFAULTS = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "4096",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
    # Whole-stage code generation fuses a stage's expressions into one Java method. The
    # quarantine checks, the type decision and the compact encoding are dozens of
    # expressions per column over tens of columns, and their fused methods grow past what
    # HotSpot compiles (8,000 bytes of bytecode), so they ran interpreted. Without it,
    # each expression is still compiled on its own: on a 300k x 40 CSV, preprocess ran
    # 1.50x and score 1.33x as fast (`make bench-codegen`; BENCHMARKS.md, "Code generation").
    "spark.sql.codegen.wholeStage": "false",
    # A stage caches the rows it read once and reads them in every pass after. Building a
    # compressed columnar cache tries each encoding on each column of each batch: on the
    # 300k x 40 CSV, preprocess's caching pass took 17.2 s with it and 11.4 s without, and
    # the passes reading the cache got faster too (72.6 s against 61.3 s in all). The
    # cache is memory and disk: batches that do not fit spill to disk (it takes more heap
    # and disk than compressed; `spark.conf` can turn compression back on).
    "spark.sql.inMemoryColumnarStorage.compressed": "false",
}

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


def remote_url(cfg: SparkConfig) -> str:
    """The Spark Connect URL of this run: ``SPARK_REMOTE``, else ``spark.remote``, else ''."""
    return os.environ.get(REMOTE_ENV) or cfg.remote


def check_connect(cfg: Config) -> None:
    """Refuse, before any Spark work, what cannot run through a Spark Connect session
    (a client with no SparkContext, no RDDs and no JVM of its own)."""
    url = remote_url(cfg.spark)
    if not url:
        return
    key = REMOTE_ENV if os.environ.get(REMOTE_ENV) else "spark.remote"
    if not url.startswith("sc://"):
        raise ConfigError(f"{key}={url!r}: use a Spark Connect URL, sc://host:port")
    if cfg.train.loader == "petastorm":
        raise ConfigError(f"{PETASTORM_OVER_CONNECT} ({key}={url!r})")


def is_connect(spark: SparkSession) -> bool:
    """Whether ``spark`` is a Spark Connect client session (no sparkContext, no rdd)."""
    try:
        from pyspark.sql.connect.session import SparkSession as ConnectSession
    except ImportError:  # the connect extra (grpcio, ...) is not installed: classic only
        return False
    return isinstance(spark, ConnectSession)


def default_parallelism(spark: SparkSession) -> int:
    """The cluster's default parallelism (task slots of a local master or of the
    executors), on a classic or a Spark Connect session."""
    if not is_connect(spark):
        return int(spark.sparkContext.defaultParallelism)
    # A Connect client cannot ask the SparkContext; spark.range without numPartitions is
    # split into exactly that many partitions (SparkSession.range's leaf-node default),
    # and with >= 1 row per partition each one shows up in spark_partition_id().
    from pyspark.sql import functions as F

    # (spark.sql.leafNodeDefaultParallelism, when set, is what such scans get instead.)
    # The partition id is projected first: Spark refuses a non-deterministic expression
    # (spark_partition_id) inside an aggregate function.
    row = (spark.range(0, 1 << 16).select(F.spark_partition_id().alias("p"))
           .agg(F.max("p").alias("p")).first())
    return int(row["p"]) + 1 if row is not None and row["p"] is not None else 1


def master_of(spark: SparkSession) -> str:
    """The master URL the session runs on (a Connect server's own master included)."""
    if is_connect(spark):
        return str(spark.conf.get("spark.master", "") or "")
    return str(spark.sparkContext.master)


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
    remote = remote_url(cfg)
    if remote:
        return _connect_session(cfg, remote, extra)
    master = os.environ.get(MASTER_ENV) or cfg.master
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(cfg.app_name)
    launched = _launch_conf()
    # Under spark-submit the JVM already exists (it set PYSPARK_GATEWAY_PORT) and the
    # master comes from the spark-submit command line: only the env override wins then.
    if "PYSPARK_GATEWAY_PORT" not in os.environ or os.environ.get(MASTER_ENV):
        builder = builder.master(master)
    else:
        master = launched.get("spark.master", "")
    props = {
        **SQL_DEFAULTS,
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "8" if _is_local(master) else "200",
        "spark.pyspark.python": os.environ["PYSPARK_PYTHON"],
    }
    if _is_local(master):
        # A shuffle starts from this many partitions and adaptive execution merges them
        # to about 64 MB each (spark.sql.adaptive.advisoryPartitionSizeInBytes): small
        # data still ends in a few partitions, while large data gets more of them, not
        # bigger ones. Starting from the 8 above, 20M rows made partitions of 2.5M rows,
        # whose cache ran out of a 768 MB heap that 1M rows ran in (BENCHMARKS.md, Scale).
        props["spark.sql.adaptive.coalescePartitions.initialPartitionNum"] = "200"
        # The merge also inside the plans that stages cache (off in this Spark: a cached
        # plan kept all 200 partitions, 1.5 rows each for a 300-row table).
        props["spark.sql.optimizer.canChangeCachedPlanOutputPartitioning"] = "true"
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        props["spark.driver.host"] = "127.0.0.1"
        props["spark.driver.bindAddress"] = "127.0.0.1"
        props["spark.driver.memory"] = os.environ.get("SPARKFORGE_DRIVER_MEMORY", "4g")
    # The defaults above yield to what spark-submit was given (--properties-file, --conf):
    # a builder setting would override it. The config's spark.conf and ``extra`` still win.
    props = {k: v for k, v in props.items() if k not in launched}
    props.update(cfg.conf)
    props.update(extra or {})
    archive, own_options = None, props.get(JAVA_OPTIONS, "")
    if _is_local(master) and "PYSPARK_GATEWAY_PORT" not in os.environ:
        # The driver JVM is launched here: it maps Spark's classes from the venv's class
        # archive when there is one (start-up about 5 s shorter; see jvm_archive).
        from sparkforge.spark import jvm_archive

        archive = jvm_archive.chosen_path()
        if archive is not None:
            props[JAVA_OPTIONS] = f"{own_options} {jvm_archive.java_options(archive)}".strip()
    for k, v in props.items():
        builder = builder.config(k, v)
    try:
        spark = builder.getOrCreate()
    except Exception as e:
        if archive is None or "JAVA_GATEWAY_EXITED" not in str(e):
            raise
        # An archive the JVM cannot start with never stops a run: it goes, and the JVM
        # starts without it.
        log.warning("the driver JVM did not start with the class archive %s (%s); "
                    "starting without it and removing it (make setup writes another)",
                    archive, str(e).splitlines()[0][:200])
        jvm_archive.discard(archive)
        builder = builder.config(JAVA_OPTIONS, own_options)
        spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("SPARKFORGE_SPARK_LOG_LEVEL", "ERROR"))
    log.info("Spark %s session on %s (default parallelism %d)", spark.version,
             spark.sparkContext.master, spark.sparkContext.defaultParallelism)
    return spark


def _launch_conf() -> dict[str, str]:
    """The Spark properties spark-submit launched this driver with (its JVM's SparkConf),
    or {} outside spark-submit."""
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        return {}
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()  # connects to spark-submit's JVM, starts nothing
    return dict(SparkConf().getAll())


def _connect_session(cfg: SparkConfig, remote: str, extra: dict[str, str] | None
                     ) -> SparkSession:
    """A Spark Connect client session on ``remote``.

    The server owns the master, the driver's settings and its log level; the client may
    only set runtime SQL settings. Spark Connect drops static ones silently, so only
    ``spark.sql.*`` defaults are sent, then ``spark.conf`` and ``extra`` as given."""
    from pyspark.sql import SparkSession

    props = dict(SQL_DEFAULTS)
    props.update(cfg.conf)
    props.update(extra or {})
    builder = SparkSession.builder.remote(remote).appName(cfg.app_name)
    for k, v in props.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    log.info("Spark %s Connect session on %s (server master %s)", spark.version, remote,
             master_of(spark))
    return spark
