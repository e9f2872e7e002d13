"""Stage entry points: ``run_<stage>(spark, cfg)``; the CLI and notebooks call these.

:func:`stage_fn` wraps each stage so that its outcome is recorded in ``manifest.json``
(``stages.<stage>.status``: ``passed`` or ``failed``, with the error) and a stage refuses
to run on the output of an upstream stage that failed (:class:`UpstreamFailedError`,
exit code 3): e.g. ``train`` after a preprocess that stopped at its quality gate.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sparkforge.config import Config
from sparkforge.data.prepare import DataQualityError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

STAGES = ("preprocess", "train", "compress", "score", "evaluate")
STATUS_SECTION = "stages"
# The stages whose output each stage reads.
UPSTREAM = {"preprocess": (), "train": ("preprocess",), "compress": ("preprocess", "train"),
            "score": ("preprocess", "train", "compress"),
            "evaluate": ("preprocess", "train", "compress")}


class UpstreamFailedError(DataQualityError):
    """An upstream stage failed (its gate or its run): its output is not to be used."""


def stage_status(cfg: Config) -> dict[str, dict[str, Any]]:
    """``manifest.json``'s record of each stage's last outcome ({} before any run)."""
    from sparkforge.artifacts import MANIFEST, read_json

    path = cfg.out / MANIFEST
    if not path.is_file():
        return {}
    try:
        section = read_json(path).get(STATUS_SECTION, {})
    except (OSError, ValueError):
        return {}
    return section if isinstance(section, dict) else {}


def check_upstream(cfg: Config, stage: str) -> None:
    """Raise UpstreamFailedError when a stage that ``stage`` reads from last failed."""
    status = stage_status(cfg)
    for up in UPSTREAM.get(stage, ()):
        rec = status.get(up, {})
        if rec.get("status") == "failed":
            raise UpstreamFailedError(
                f"{stage} refused: the {up} stage of output.dir={str(cfg.out)!r} failed "
                f"({rec.get('error', 'no reason recorded')[:300]}); fix that and rerun "
                f"`sparkforge {up}` with this config (or `sparkforge pipeline`) first")


def quality_stop(spark: SparkSession, cfg: Config, quarantine: DataFrame, counts: dict[str, Any],
                 problem: str) -> DataQualityError:
    """The data-quality stop of a preprocess run that kept too little: the message says what
    was read (rows, columns, the commonest quarantine reasons with an example), and the
    manifest's ``preprocess`` section records the same figures with ``status: failed``."""
    from pyspark.sql import functions as F

    from sparkforge.artifacts import update_manifest
    from sparkforge.data.readers import CORRUPT, describe_source, read_raw

    columns = [c for c in read_raw(spark, cfg).columns if c != CORRUPT]
    reasons: dict[str, int] = counts.get("quarantine_reasons", {})
    top = sorted(reasons.items(), key=lambda kv: -kv[1])[:5]
    example = ""
    if top:
        row = quarantine.filter(F.col("reason") == top[0][0]).select("raw").first()
        if row is not None:
            example = f"; e.g. a {top[0][0]} row: {str(row['raw'])[:200]}"
    n_in = counts.get("rows_in", 0)
    read = (f"read {n_in} rows with columns [{', '.join(columns)}] from "
            f"{describe_source(cfg)} (data.format={cfg.data.format})")
    if n_in == 0:
        detail = "the input has a header or schema but no data rows"
    else:
        detail = (f"{counts.get('rows_kept', 0)} kept, {counts.get('rows_quarantined', 0)} "
                  f"quarantined; reasons {dict(top)}{example}")
    message = f"{problem}: {read}; {detail}"
    update_manifest(cfg.out, "preprocess", {**counts, "columns": columns, "status": "failed",
                                            "error": message})
    return DataQualityError(message)


def _record(cfg: Config, stage: str, status: str, error: str | None = None) -> None:
    from sparkforge.artifacts import update_manifest

    current = stage_status(cfg)
    current[stage] = {"status": status, "at": dt.datetime.now(dt.UTC).isoformat(),
                      **({"error": error} if error else {})}
    update_manifest(cfg.out, STATUS_SECTION, current)


def _guarded(stage: str, fn: Callable[[SparkSession, Config], dict[str, Any]]
             ) -> Callable[[SparkSession, Config], dict[str, Any]]:
    @functools.wraps(fn)
    def run(spark: SparkSession, cfg: Config) -> dict[str, Any]:
        from sparkforge.progress import stage_tag
        from sparkforge.tracking import log_stage

        check_upstream(cfg, stage)
        t0 = time.monotonic()
        try:
            with stage_tag(spark, stage):
                result = fn(spark, cfg)
        except Exception as e:
            error = f"{type(e).__name__}: {str(e)[:1000]}"
            _record(cfg, stage, "failed", error)
            log_stage(cfg, stage, error)
            raise
        _record(cfg, stage, "passed")
        log.info("stage %s done in %.1fs", stage, time.monotonic() - t0)
        log_stage(cfg, stage)  # MLflow, when tracking.mlflow is on
        return result
    return run


def stage_fn(stage: str) -> Callable[[SparkSession, Config], dict[str, Any]]:
    """``run_<stage>``, checking the upstream stages first and recording the outcome."""
    if stage == "pipeline":
        return run_pipeline
    return _guarded(stage, _run_fn(stage))


# stage -> "module:function". Resolved by name when a stage runs: the stage modules are
# siblings that never import each other (tests/unit/test_rundir.py), and this package
# imports none of them until one is asked for (importing it stays light).
_RUNNERS = {stage: f"sparkforge.jobs.{stage}:run_{stage}" for stage in STAGES}


def _run_fn(stage: str) -> Callable[[SparkSession, Config], dict[str, Any]]:
    import importlib

    if stage not in _RUNNERS:
        raise ValueError(f"unknown stage {stage!r}; use one of {(*STAGES, 'pipeline')}")
    module, name = _RUNNERS[stage].split(":")
    fn: Callable[[SparkSession, Config], dict[str, Any]] = getattr(
        importlib.import_module(module), name)
    return fn


def run_pipeline(spark: SparkSession, cfg: Config) -> dict[str, Any]:
    from sparkforge.artifacts import update_manifest

    update_manifest(cfg.out, "config", cfg.to_dict())
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    for stage in STAGES:
        t0 = time.time()
        log.info("=== stage %s ===", stage)
        results[stage] = stage_fn(stage)(spark, cfg)
        timings[stage] = round(time.time() - t0, 1)
    update_manifest(cfg.out, "timings_s", timings)
    print(timings_table(timings), flush=True)
    return results


def timings_table(timings: dict[str, float]) -> str:
    """The pipeline's closing lines: each stage's wall time and the total."""
    total = sum(timings.values())
    lines = [f"{'stage':<12}{'wall':>9}{'share':>8}"]
    lines += [f"{s:<12}{t:>8.1f}s{100 * t / total if total else 0:>7.0f}%"
              for s, t in timings.items()]
    lines.append(f"{'total':<12}{total:>8.1f}s")
    return "\n".join(lines)
