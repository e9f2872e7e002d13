"""The one TorchDistributor launch: resources checked on the driver, ranks started, retried.

Training (``jobs/train.py``) and distillation (``jobs/compress.py``) both call
:func:`launch` with a :class:`~sparkforge.train.spec.TrainSpec`:

1. :func:`resources` (call it early, before slow driver work): ``use_gpu`` resolved
   (:func:`use_gpu`) and the task slots checked (:func:`check_resources`), which fails
   at once naming ``train.num_processes`` where a barrier stage would wait forever;
2. TorchDistributor runs :func:`sparkforge.train.loop.train_rank` on
   ``train.num_processes`` ranks (torchrun on the driver with ``train.local_mode=true``,
   barrier tasks on the executors otherwise), the test hooks installed on the driver
   (:mod:`sparkforge.train.hooks`) shipped beside the spec;
3. a failed launch is relaunched up to ``max_restarts`` times; with
   ``spec.resume`` each relaunch continues from the run's last complete checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkforge.config import Config, ConfigError
from sparkforge.train import hooks

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from sparkforge.train.spec import TrainSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resources:
    """What :func:`resources` decided: GPUs or not, torch threads per rank."""

    use_gpu: bool
    threads: int


def use_gpu(spark: SparkSession, cfg: Config) -> bool:
    """``train.use_gpu``; ``auto``: GPUs when ``spark.task.resource.gpu.amount`` is set or
    CUDA is visible to the driver."""
    if cfg.train.use_gpu != "auto":
        return cfg.train.use_gpu == "true"
    if spark.conf.get("spark.task.resource.gpu.amount", None):
        return True
    import torch

    return bool(torch.cuda.is_available())


# Cluster facts through spark/session.py's Connect-safe helpers (a Spark Connect session
# has no SparkContext).
def _is_local_master(spark: SparkSession) -> bool:
    from sparkforge.spark.session import master_of

    return master_of(spark).startswith("local")


def _default_parallelism(spark: SparkSession) -> int:
    from sparkforge.spark.session import default_parallelism

    return default_parallelism(spark)


def _num_executors(spark: SparkSession) -> int:
    from sparkforge.spark.session import is_connect

    if is_connect(spark) or _is_local_master(spark):  # Connect: no status tracker; one
        return 1
    try:  # executors registered now, less the driver's entry
        return max(1, len(spark.sparkContext.statusTracker().getExecutorInfos()) - 1)
    except Exception:  # pragma: no cover - defensive: status API unavailable
        return 1


def check_resources(spark: SparkSession, cfg: Config, use_gpu: bool) -> int:
    """Fail at once, naming the setting, instead of letting a barrier stage wait forever.

    Returns torch threads per rank (= cores per task)."""
    t = cfg.train
    if t.local_mode:
        if use_gpu:
            import torch

            gpus = torch.cuda.device_count()
            if t.num_processes > gpus:
                raise ConfigError(
                    f"train.num_processes={t.num_processes}: train.local_mode=true with GPUs "
                    f"runs one process per driver GPU and {gpus} are visible. Lower "
                    "train.num_processes or set train.use_gpu=false")
        cores = os.cpu_count() or 1
        if t.num_processes > cores:
            log.warning("train.num_processes=%d exceeds the driver's %d cores: the ranks will "
                        "share cores", t.num_processes, cores)
        return max(1, cores // t.num_processes)
    task_cpus = int(spark.conf.get("spark.task.cpus", "1") or "1")
    parallelism = _default_parallelism(spark)
    slots = parallelism // max(task_cpus, 1)
    detail = f"default parallelism {parallelism} / spark.task.cpus={task_cpus}"
    if use_gpu:
        task_gpus = float(spark.conf.get("spark.task.resource.gpu.amount", "0") or "0")
        if task_gpus <= 0:
            raise ConfigError("train.use_gpu=true with train.local_mode=false needs "
                              "spark.task.resource.gpu.amount set (e.g. --set "
                              "spark.conf.spark.task.resource.gpu.amount=1)")
        executor_gpus = float(spark.conf.get("spark.executor.resource.gpu.amount", "0") or "0")
        if executor_gpus > 0:
            executors = _num_executors(spark)
            gpu_slots = int(executor_gpus // task_gpus) * executors
            if gpu_slots < slots:
                slots = gpu_slots
                detail = (f"{executors} executor(s) x spark.executor.resource.gpu."
                          f"amount={executor_gpus:g} / spark.task.resource.gpu.amount="
                          f"{task_gpus:g}")
    if t.num_processes > slots:
        raise ConfigError(
            f"train.num_processes={t.num_processes}: the cluster offers only {slots} task "
            f"slot(s) ({detail}); a barrier stage would wait forever. Lower "
            "train.num_processes or add executors")
    return task_cpus


def resources(spark: SparkSession, cfg: Config) -> Resources:
    """:func:`use_gpu` and :func:`check_resources` together (raises ConfigError)."""
    gpu = use_gpu(spark, cfg)
    return Resources(use_gpu=gpu, threads=check_resources(spark, cfg, gpu))


def _rank_main(fn: Callable[[TrainSpec], dict[str, Any]], spec: TrainSpec,
               installed: hooks.TrainHooks | None) -> dict[str, Any]:
    """What TorchDistributor runs in each rank: the driver's test hooks, then ``fn``."""
    with hooks.installed(installed):
        return fn(spec)


def launch(spark: SparkSession, cfg: Config, spec: TrainSpec, *,
           res: Resources | None = None, max_restarts: int = 0,
           fn: Callable[[TrainSpec], dict[str, Any]] | None = None) -> tuple[dict[str, Any], int]:
    """Run ``fn`` (default :func:`~sparkforge.train.loop.train_rank`) on
    ``train.num_processes`` ranks; returns (rank 0's result, relaunches it took).

    ``res``: from :func:`resources` when the caller checked early; the spec's
    ``use_cuda`` and ``threads`` are set from it."""
    from pyspark.ml.torch.distributor import TorchDistributor

    from sparkforge.train import checkpoint
    from sparkforge.train.loop import CHECKPOINT_DIR, train_rank

    t = cfg.train
    res = res or resources(spark, cfg)
    spec = dataclasses.replace(spec, use_cuda=res.use_gpu, threads=res.threads)
    run_fn = fn or train_rank
    installed = hooks.active()
    log.info("TorchDistributor (%s): %d process(es), local_mode=%s, use_gpu=%s, %s, loader "
             "%s, %d thread(s) per rank", spec.name, t.num_processes, t.local_mode,
             res.use_gpu, "FSDP" if spec.fsdp else "DDP", spec.loader, res.threads)
    restarts = 0
    while True:
        try:
            result = TorchDistributor(num_processes=t.num_processes, local_mode=t.local_mode,
                                      use_gpu=res.use_gpu).run(_rank_main, run_fn, spec,
                                                               installed)
            break
        except Exception as e:
            if restarts >= max_restarts:
                raise
            restarts += 1
            where = (checkpoint.latest(Path(spec.out_dir) / CHECKPOINT_DIR)
                     if spec.out_dir and spec.checkpoint else None)
            log.warning("%s failed (%s: %s); restart %d of %d from %s", spec.name,
                        type(e).__name__, str(e)[:200], restarts, max_restarts,
                        where or "the start")
    if not isinstance(result, dict):
        raise RuntimeError(f"{spec.name} returned {result!r} instead of its history")
    return result, restarts
