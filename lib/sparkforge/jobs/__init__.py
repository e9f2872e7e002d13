"""Stage entry points: ``run_<stage>(spark, cfg)``; the CLI and notebooks call these."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sparkforge.config import Config

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

STAGES = ("preprocess", "train", "compress", "score", "evaluate")


def stage_fn(stage: str) -> Callable[[SparkSession, Config], dict[str, Any]]:
    if stage == "preprocess":
        from sparkforge.jobs.preprocess import run_preprocess
        return run_preprocess
    if stage == "train":
        from sparkforge.jobs.train import run_train
        return run_train
    if stage == "compress":
        from sparkforge.jobs.compress import run_compress
        return run_compress
    if stage == "score":
        from sparkforge.jobs.score import run_score
        return run_score
    if stage == "evaluate":
        from sparkforge.jobs.evaluate import run_evaluate
        return run_evaluate
    if stage == "pipeline":
        return run_pipeline
    raise ValueError(f"unknown stage {stage!r}; use one of {(*STAGES, 'pipeline')}")


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
        log.info("stage %s done in %.1fs", stage, timings[stage])
    update_manifest(cfg.out, "timings_s", timings)
    return results
