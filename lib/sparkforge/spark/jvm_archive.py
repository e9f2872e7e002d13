"""A class-data-sharing (CDS) archive of the local-mode driver JVM's classes.

A local Spark driver loads and verifies about 15,000 classes from Spark's jars before its
first job. On this project's 2-core machine that start-up (session and first job) took
10.2-10.5 s of every ``python -m sparkforge`` stage. The JDK can map classes it loaded
once from an archive instead (Java 13+, ``-XX:ArchiveClassesAtExit`` to write one,
``-XX:SharedArchiveFile`` to use it): 5.5-6.2 s (``BENCHMARKS.md``, "Preprocess").

``make setup`` writes the archive into the venv (``python -m sparkforge.spark.jvm_archive``)
and :func:`java_options` hands it to the driver JVMs that :func:`~sparkforge.spark.session.
get_session` launches in local mode. Only there: under spark-submit the JVM already runs,
and a cluster's or a Connect server's JVMs are started by others.

A JVM given an archive that is truncated crashes (SIGBUS) before Spark starts, so an
archive is only used when its size is the one recorded when it was written and checked;
the JVM itself refuses (and ignores, with ``-Xshare:auto``) one from another JDK or
classpath. ``SPARKFORGE_JVM_ARCHIVE=off`` turns it off; a path uses that archive.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "SPARKFORGE_JVM_ARCHIVE"
# The JVM's notes about classes it cannot archive (signed jars, ...) and archives it
# ignores go nowhere: the archive only changes how fast the JVM starts.
_QUIET = ["-Xshare:auto", "-Xlog:cds=off", "-Xlog:cds+dynamic=off"]


def default_path() -> Path:
    """The venv's archive, one per pyspark version (its jars are the classpath)."""
    import pyspark

    return Path(sys.prefix) / "share" / "sparkforge" / f"spark-{pyspark.__version__}.jsa"


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def usable(path: Path) -> bool:
    """The archive exists, with the size recorded when it was written and checked."""
    try:
        meta = json.loads(_sidecar(path).read_text())
        return bool(path.stat().st_size == int(meta["bytes"]))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def chosen_path() -> Path | None:
    """The archive local sessions use: ``SPARKFORGE_JVM_ARCHIVE``, or the venv's; None when
    turned off or not (completely) written."""
    env = os.environ.get(ENV, "").strip()
    if env.lower() in ("off", "0", "false", "no"):
        return None
    path = Path(env) if env else default_path()
    return path if usable(path) else None


def java_options(path: Path | None) -> str:
    """Driver JVM options that use ``path`` (empty for None)."""
    return " ".join([f"-XX:SharedArchiveFile={path}", *_QUIET]) if path else ""


def discard(path: Path) -> None:
    """Forget an archive the JVM could not start with (the next setup writes another)."""
    for p in (_sidecar(path), path):
        p.unlink(missing_ok=True)


def _workload(out: str) -> None:
    """What a stage does, small: the classes it loads are the ones the archive holds."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from sparkforge.config import SparkConfig
    from sparkforge.spark.session import get_session

    spark = get_session(SparkConfig(master="local[2]", app_name="sparkforge-jvm-archive"))
    rows = spark.range(0, 2000).selectExpr(
        "cast(id as string) AS a", "cast(id % 7 as string) AS b", "rand(1) AS x")
    rows.write.mode("overwrite").option("header", True).csv(f"{out}/csv")
    df = (spark.read.option("header", True).option("mode", "PERMISSIVE")
          .schema("a string, b string, x string, _corrupt_record string").csv(f"{out}/csv"))
    df = df.selectExpr("*", "try_cast(x AS DOUBLE) AS d", "x RLIKE '^[0-9]' AS ok",
                       "sha2(concat_ws('|', a, b), 256) AS h")
    df = df.withColumn("n", F.row_number().over(Window.partitionBy("b").orderBy("a"))).cache()
    df.groupBy("b").agg(F.count("*"), F.avg("d"), F.collect_set("ok")).collect()
    df.select(F.to_json(F.struct("a", "b")).alias("j")).write.mode("overwrite").json(
        f"{out}/json")
    df.write.mode("overwrite").partitionBy("b").parquet(f"{out}/parquet")
    back = spark.read.parquet(f"{out}/parquet")
    back.toArrow()
    back.mapInArrow(lambda batches: batches, back.schema).count()
    back.toPandas()
    df.unpersist()
    spark.stop()


def _run_workload(out: str) -> None:
    """In a child process: run the workload, then wait for the JVM to write the archive."""
    from pyspark import SparkContext

    _workload(out)
    gateway = SparkContext._gateway
    proc = getattr(gateway, "proc", None) if gateway is not None else None
    if gateway is not None:
        gateway.shutdown()
    if proc is not None:
        # The JVM exits when its stdin closes, and writes the archive as it exits.
        proc.stdin.close()
        proc.wait(timeout=600)


def build(path: Path | None = None) -> Path:
    """Write the archive (a local session running a small stage-like workload), check
    that a session starts with it, and publish it with its size. Returns its path."""
    path = path or default_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="sparkforge-jvm-archive-") as work:
        env = {**os.environ, ENV: "off",
               "PYSPARK_SUBMIT_ARGS": (f"--driver-java-options -XX:ArchiveClassesAtExit={tmp} "
                                       "pyspark-shell")}
        cmd = [sys.executable, "-c", "import sys; from sparkforge.spark.jvm_archive import "
               "_run_workload; _run_workload(sys.argv[1])", work]
        subprocess.run(cmd, env=env, check=True, cwd=work, stdout=subprocess.DEVNULL)
        if not tmp.is_file():
            raise RuntimeError(f"the JVM wrote no class archive at {tmp}")
        # A session must start with it before anything else uses it.
        check = {**os.environ, ENV: str(tmp), "PYSPARK_SUBMIT_ARGS": "pyspark-shell"}
        _sidecar(tmp).write_text(json.dumps({"bytes": tmp.stat().st_size}))
        probe = [sys.executable, "-c", "from sparkforge.config import SparkConfig; "
                 "from sparkforge.spark.session import get_session; "
                 "s = get_session(SparkConfig(master='local[1]')); "
                 "assert s.range(3).count() == 3; s.stop()"]
        subprocess.run(probe, env=check, check=True, cwd=work, stdout=subprocess.DEVNULL)
    tmp.replace(path)
    _sidecar(tmp).replace(_sidecar(path))
    return path


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = default_path()
    if usable(path) and "--force" not in sys.argv:
        log.info("JVM class archive: %s (already written)", path)
        return 0
    built = build(path)
    log.info("JVM class archive: wrote %s (%.0f MB)", built, built.stat().st_size / 1e6)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
