"""Stage 2: preprocessed/ -> model/ (weights, spec, history) via TorchDistributor.

The driver validates resources before anything is launched (more processes than task
slots fails at once, naming ``train.num_processes``), then TorchDistributor runs
:func:`sparkforge.train.loop.train_fn` on ``train.num_processes`` ranks: torchrun on the
driver with ``train.local_mode=true``, barrier tasks on the executors otherwise.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkforge.artifacts import read_json, update_manifest, write_json_atomic
from sparkforge.config import Config, ConfigError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

TEXT_MODELS = ("embedding_bag", "transformer", "minilm")
# petastorm's converter cache: set it in spark.conf to put the cache elsewhere.
PETASTORM_CACHE_CONF = "petastorm.spark.converter.parentCacheDirUrl"


def model_spec(cfg: Config, pretrained: bool) -> dict[str, Any]:
    """The JSON spec ``build_model`` rebuilds the network from (saved as model/model.json)."""
    out = cfg.out / "model"
    labels = read_json(out / "labels.json")
    num_outputs = 1 if cfg.is_regression else len(labels)
    t = cfg.train
    name = cfg.model_name
    if (name in TEXT_MODELS) != cfg.is_text:
        raise ConfigError(f"train.model={name!r}: " + (
            "text models need task=text_classification; use mlp for tabular tasks"
            if not cfg.is_text else "mlp is for tabular tasks; use embedding_bag, "
            "transformer or minilm for text"))
    spec: dict[str, Any] = {"name": name, "num_outputs": num_outputs, "dropout": t.dropout}
    if name == "mlp":
        spec.update(input_dim=read_json(out / "preprocessor.json")["dim"], hidden_dim=t.hidden_dim)
        if cfg.is_regression:
            target = _preprocess_summary(cfg).get("target", {})
            spec.update(target_mean=float(target.get("mean", 0.0)),
                        target_std=float(target.get("std", 1.0)))
    elif name in ("embedding_bag", "transformer"):
        from tokenizers import Tokenizer

        vocab = Tokenizer.from_file(str(out / "tokenizer.json")).get_vocab_size()
        spec.update(vocab_size=vocab, hidden_dim=t.hidden_dim)
        if name == "transformer":
            spec.update(num_layers=t.num_layers, num_heads=t.num_heads,
                        ffn_dim=4 * t.hidden_dim,
                        max_length=int(_preprocess_summary(cfg).get("max_length")
                                       or cfg.tokenizer.max_length or 512))
    elif name == "minilm":
        spec.update(freeze_encoder=t.freeze_encoder, pretrained=pretrained)
    return spec


def _preprocess_summary(cfg: Config) -> dict[str, Any]:
    path = cfg.out / "manifest.json"
    summary: dict[str, Any] = read_json(path).get("preprocess", {}) if path.exists() else {}
    return summary


def rank_batch_size(cfg: Config, n_train: int) -> int:
    """``train.batch_size``, lowered on small data so that each rank still takes
    ``train.min_steps_per_epoch`` optimizer steps an epoch (never below 8 rows)."""
    t = cfg.train
    if n_train <= 0:
        return t.batch_size
    per_step = n_train // (t.num_processes * t.grad_accum_steps * max(t.min_steps_per_epoch, 1))
    return max(1, min(t.batch_size, max(8, per_step)))


def _use_gpu(spark: SparkSession, cfg: Config) -> bool:
    if cfg.train.use_gpu != "auto":
        return cfg.train.use_gpu == "true"
    if spark.conf.get("spark.task.resource.gpu.amount", None):
        return True
    import torch

    return bool(torch.cuda.is_available())


def _num_executors(spark: SparkSession) -> int:
    from sparkforge.spark.session import is_connect

    if is_connect(spark):  # Spark Connect: no status tracker; counted as one
        return 1
    sc = spark.sparkContext
    if (sc.master or "").startswith("local"):
        return 1
    try:  # executors registered now, less the driver's entry
        return max(1, len(sc.statusTracker().getExecutorInfos()) - 1)
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
    from sparkforge.spark.session import default_parallelism  # Connect-safe

    parallelism = default_parallelism(spark)
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
            gpu_slots = int(executor_gpus // task_gpus) * _num_executors(spark)
            if gpu_slots < slots:
                slots = gpu_slots
                detail = (f"{_num_executors(spark)} executor(s) x spark.executor.resource.gpu."
                          f"amount={executor_gpus:g} / spark.task.resource.gpu.amount="
                          f"{task_gpus:g}")
    if t.num_processes > slots:
        raise ConfigError(
            f"train.num_processes={t.num_processes}: the cluster offers only {slots} task "
            f"slot(s) ({detail}); a barrier stage would wait forever. Lower "
            "train.num_processes or add executors")
    return task_cpus


def class_weight_decision(spark: SparkSession, cfg: Config, labels: list[str]
                          ) -> tuple[list[float] | None, dict[str, Any]]:
    """``train.class_weights`` applied to the train split's label counts (a Spark
    aggregation): (weights in label order or None, the decision for the manifest)."""
    from sparkforge.train.losses import class_weights

    if cfg.is_regression or not labels:
        return None, {"mode": cfg.train.class_weights, "applied": False, "weights": None}
    counts = {r["label"]: int(r["count"]) for r in
              spark.read.parquet(str(cfg.out / "preprocessed" / "split=train"))
              .groupBy("label").count().collect()}
    weights, info = class_weights(cfg.train.class_weights, labels, counts)
    log.info("train.class_weights=%s: %s (rarest class share %.4f)", cfg.train.class_weights,
             f"weights {[round(w, 4) for w in weights]}" if weights else "none applied",
             info["min_class_share"])
    return weights, info


def petastorm_converter(spark: SparkSession, cfg: Config, columns: list[str]) -> Any:
    """Materialise the train split for petastorm (driver side), >= 8 row groups per rank.

    The cache goes under ``output.dir/petastorm_cache`` unless the session sets
    ``petastorm.spark.converter.parentCacheDirUrl``; ``converter.delete()`` removes it."""
    from sparkforge.spark.session import PETASTORM_OVER_CONNECT, is_connect

    if is_connect(spark):  # the converter needs the SparkContext (and df.rdd below)
        raise ConfigError(PETASTORM_OVER_CONNECT)
    try:
        from petastorm.spark import make_spark_converter
    except ImportError as e:
        raise ConfigError(
            "train.loader='petastorm' needs petastorm 0.12.1 to be installed; it cannot import "
            "with pyarrow >= 15 or numpy >= 2, so it runs in its own environment: `make "
            "setup-petastorm`, then .venv-petastorm/bin/sparkforge train ...") from e
    df = spark.read.parquet(str(cfg.out / "preprocessed" / "split=train")).select(*columns)
    # Many small row groups: petastorm deals whole row groups to ranks, so shards then
    # differ by a few rows at most, and no rank gets none.
    parts = max(8 * cfg.train.num_processes, df.rdd.getNumPartitions())
    ours = not spark.conf.get(PETASTORM_CACHE_CONF, None)
    if ours:
        cache = (cfg.out / "petastorm_cache").resolve()
        cache.mkdir(parents=True, exist_ok=True)
        spark.conf.set(PETASTORM_CACHE_CONF, cache.as_uri())
    try:
        return make_spark_converter(df.repartition(parts))
    finally:
        if ours:
            spark.conf.unset(PETASTORM_CACHE_CONF)


def train_params(spark: SparkSession, cfg: Config, use_gpu: bool, threads: int
                 ) -> dict[str, Any]:
    """What every rank's ``train_fn`` gets (picklable)."""
    t = cfg.train
    out = cfg.out
    labels = read_json(out / "model" / "labels.json")
    n_train = int(_preprocess_summary(cfg).get("rows_per_split", {}).get("train", 0))
    spec = model_spec(cfg, pretrained=True)
    weights, weight_info = class_weight_decision(spark, cfg, labels)
    return {
        "pre_dir": str((out / "preprocessed").resolve()),
        "model_dir": str((out / "model").resolve()),
        "spec": spec, "select_by": t.select_by,
        "target_std": spec.get("target_std", 1.0),
        "inputs": ["input_ids", "attention_mask"] if cfg.is_text else ["features"],
        "task": "regression" if cfg.is_regression else "classification",
        "epochs": t.epochs, "batch_size": rank_batch_size(cfg, n_train), "lr": t.lr,
        "weight_decay": t.weight_decay, "warmup_ratio": t.warmup_ratio,
        "grad_clip": t.grad_clip, "seed": t.seed, "patience": t.early_stopping_patience,
        "class_weights": weights, "class_weight_info": weight_info,
        "threads": threads, "use_cuda": use_gpu,
        # The driver clears old checkpoints unless train.resume, so whatever a rank finds
        # was written by this run: a retried barrier stage continues from it.
        "resume": True, "max_steps_per_epoch": t.max_steps_per_epoch,
        "grad_accum_steps": t.grad_accum_steps, "fsdp": t.fsdp, "loader": t.loader,
    }


def run_train(spark: SparkSession, cfg: Config, *,
              _hooks: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train and write model/.

    ``_hooks`` (tests only) are added to the ranks' params: ``_fail_at`` ({rank, epoch,
    step}) kills that rank there; ``_trace_dir`` makes every rank record the ids (or the
    ``_trace_column``) it trained on."""
    from pyspark.ml.torch.distributor import TorchDistributor

    from sparkforge.train import checkpoint
    from sparkforge.train.loop import BEST_WEIGHTS, CHECKPOINT_DIR, train_fn

    out = cfg.out
    model_dir = out / "model"
    if not (out / "preprocessed").exists():
        raise ConfigError(f"output.dir={str(out)!r}: no preprocessed/ folder; run "
                          "`sparkforge preprocess` with this config first")
    t = cfg.train
    use_gpu = _use_gpu(spark, cfg)
    threads = check_resources(spark, cfg, use_gpu)
    params = train_params(spark, cfg, use_gpu, threads)
    ckpt_root = model_dir / CHECKPOINT_DIR
    last = checkpoint.latest(ckpt_root)
    if not t.resume:
        checkpoint.clear(ckpt_root)
    elif last is None:
        log.warning("train.resume=true but %s holds no complete checkpoint; starting fresh",
                    ckpt_root)
    params.update(_hooks or {})
    converter = None
    if t.loader == "petastorm":
        target = "label" if cfg.is_regression else "label_index"
        traced = [params.get("_trace_column", "id")] if params.get("_trace_dir") else []
        converter = petastorm_converter(spark, cfg, [*params["inputs"], target, *traced])
        params["converter"] = converter
    log.info("TorchDistributor: %d process(es), local_mode=%s, use_gpu=%s, model %s, "
             "loader %s, %s, %d thread(s) per rank%s", t.num_processes, t.local_mode, use_gpu,
             cfg.model_name, t.loader, "FSDP" if t.fsdp else "DDP", threads,
             f", resuming from {last}" if t.resume and last else "")
    restarts = 0
    try:
        while True:
            try:
                result = TorchDistributor(num_processes=t.num_processes, local_mode=t.local_mode,
                                          use_gpu=use_gpu).run(train_fn, params)
                break
            except Exception as e:
                if restarts >= t.max_restarts:
                    raise
                restarts += 1
                log.warning("training failed (%s: %s); restart %d of train.max_restarts=%d "
                            "from %s", type(e).__name__, str(e)[:200], restarts, t.max_restarts,
                            checkpoint.latest(ckpt_root) or "the start")
    finally:
        if converter is not None:
            converter.delete()
    if not isinstance(result, dict):
        raise RuntimeError(f"training returned {result!r} instead of its history")
    if not (model_dir / BEST_WEIGHTS).exists():
        raise RuntimeError(f"training finished but wrote no {model_dir / BEST_WEIGHTS}")
    write_json_atomic(model_dir / "model.json", model_spec(cfg, pretrained=False))
    write_json_atomic(model_dir / "history.json", result["history"])
    summary = {"model": cfg.model_name, "num_processes": t.num_processes,
               "local_mode": t.local_mode, "use_gpu": use_gpu, "loader": t.loader,
               "fsdp": t.fsdp, "grad_accum_steps": t.grad_accum_steps,
               "epochs_run": len(result["history"]),
               "kept_epoch": result.get("kept_epoch"), "kept_reason": result.get("kept_reason"),
               "stop_reason": result.get("stop_reason"), "select_by": result.get("select_by"),
               "batch_size_per_rank": params["batch_size"],
               "class_weights": params["class_weight_info"],
               "resumed_from_epoch": result.get("resumed_from_epoch"), "restarts": restarts,
               "steps_per_epoch": result.get("steps_per_epoch"),
               "param_numel": result.get("param_numel"),
               "param_numel_per_rank": result.get("param_numel_per_rank"),
               "best_val_metric": result["best_val_metric"], "history": result["history"]}
    update_manifest(out, "train", summary,
                    [model_dir / BEST_WEIGHTS, model_dir / "model.json"])
    log.info("train: kept epoch %s of %d (%s); stopped: %s", summary["kept_epoch"],
             summary["epochs_run"], summary["kept_reason"], summary["stop_reason"])
    return summary


def checkpoint_epochs(out: Path) -> list[int]:
    """Epochs with a complete checkpoint under ``out/model/checkpoint`` (for tests, tooling)."""
    from sparkforge.train import checkpoint

    return [e for e, _ in checkpoint.complete(out / "model" / checkpoint.CHECKPOINT_DIR)]
