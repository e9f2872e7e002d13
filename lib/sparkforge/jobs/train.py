"""Stage 2: preprocessed/ -> model/ (weights, spec, history) via TorchDistributor."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from sparkforge.artifacts import read_json, update_manifest, write_json_atomic
from sparkforge.config import Config, ConfigError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def model_spec(cfg: Config, pretrained: bool) -> dict[str, Any]:
    """The JSON spec ``build_model`` rebuilds the network from (saved as model/model.json)."""
    out = cfg.out / "model"
    labels = read_json(out / "labels.json")
    num_outputs = 1 if cfg.is_regression else len(labels)
    t = cfg.train
    name = cfg.model_name
    spec: dict[str, Any] = {"name": name, "num_outputs": num_outputs, "dropout": t.dropout}
    if name == "mlp":
        spec.update(input_dim=read_json(out / "preprocessor.json")["dim"], hidden_dim=t.hidden_dim)
    elif name == "embedding_bag":
        from tokenizers import Tokenizer

        vocab = Tokenizer.from_file(str(out / "tokenizer.json")).get_vocab_size()
        spec.update(vocab_size=vocab, hidden_dim=t.hidden_dim)
    elif name == "minilm":
        spec.update(freeze_encoder=t.freeze_encoder, pretrained=pretrained)
    return spec


def _use_gpu(spark: SparkSession, cfg: Config) -> bool:
    if cfg.train.use_gpu != "auto":
        return cfg.train.use_gpu == "true"
    if spark.conf.get("spark.task.resource.gpu.amount", None):
        return True
    import torch

    return bool(torch.cuda.is_available())


def _check_resources(spark: SparkSession, cfg: Config, use_gpu: bool) -> int:
    """Fail at once, naming the setting, instead of letting a barrier stage wait forever.

    Returns torch threads per rank (= cores per task)."""
    t = cfg.train
    if t.local_mode:
        cores = os.cpu_count() or 1
        return max(1, cores // t.num_processes)
    task_cpus = int(spark.conf.get("spark.task.cpus", "1") or "1")
    slots = spark.sparkContext.defaultParallelism // max(task_cpus, 1)
    if use_gpu:
        gpus = spark.conf.get("spark.task.resource.gpu.amount", None)
        if not gpus:
            raise ConfigError("train.use_gpu=true with train.local_mode=false needs "
                              "spark.task.resource.gpu.amount set (e.g. --set "
                              "spark.conf.spark.task.resource.gpu.amount=1)")
    if t.num_processes > slots:
        raise ConfigError(
            f"train.num_processes={t.num_processes}: the cluster offers only {slots} task "
            f"slot(s) (default parallelism {spark.sparkContext.defaultParallelism} / "
            f"spark.task.cpus={task_cpus}); a barrier stage would wait forever. Lower "
            "train.num_processes or add executors")
    return task_cpus


def run_train(spark: SparkSession, cfg: Config) -> dict[str, Any]:
    from pyspark.ml.torch.distributor import TorchDistributor

    from sparkforge.train.loop import BEST_WEIGHTS, train_fn

    out = cfg.out
    model_dir = out / "model"
    if not (out / "preprocessed").exists():
        raise ConfigError(f"output.dir={str(out)!r}: no preprocessed/ folder; run "
                          "`sparkforge preprocess` with this config first")
    use_gpu = _use_gpu(spark, cfg)
    threads = _check_resources(spark, cfg, use_gpu)
    t = cfg.train
    class_weights = None
    pre = read_json(out / "manifest.json").get("preprocess", {})
    labels = read_json(model_dir / "labels.json")
    if t.class_weights and labels:
        dist_ = pre.get("label_distribution", {})
        total = sum(dist_.values())
        class_weights = [total / (len(labels) * max(dist_.get(lab, 1), 1)) for lab in labels]
    params = {
        "pre_dir": str((out / "preprocessed").resolve()),
        "model_dir": str(model_dir.resolve()),
        "spec": model_spec(cfg, pretrained=True),
        "inputs": ["input_ids", "attention_mask"] if cfg.is_text else ["features"],
        "task": "regression" if cfg.is_regression else "classification",
        "epochs": t.epochs, "batch_size": t.batch_size, "lr": t.lr,
        "weight_decay": t.weight_decay, "warmup_ratio": t.warmup_ratio,
        "grad_clip": t.grad_clip, "seed": t.seed, "patience": t.early_stopping_patience,
        "class_weights": class_weights, "threads": threads, "use_cuda": use_gpu,
        "resume": t.resume, "max_steps_per_epoch": t.max_steps_per_epoch,
    }
    log.info("TorchDistributor: %d process(es), local_mode=%s, use_gpu=%s, model %s, "
             "%d thread(s) per rank", t.num_processes, t.local_mode, use_gpu, cfg.model_name,
             threads)
    result = TorchDistributor(num_processes=t.num_processes, local_mode=t.local_mode,
                              use_gpu=use_gpu).run(train_fn, params)
    if not isinstance(result, dict):
        raise RuntimeError(f"training returned {result!r} instead of its history")
    if not (model_dir / BEST_WEIGHTS).exists():
        raise RuntimeError(f"training finished but wrote no {model_dir / BEST_WEIGHTS}")
    write_json_atomic(model_dir / "model.json", model_spec(cfg, pretrained=False))
    write_json_atomic(model_dir / "history.json", result["history"])
    summary = {"model": cfg.model_name, "num_processes": t.num_processes,
               "local_mode": t.local_mode, "use_gpu": use_gpu,
               "epochs_run": len(result["history"]),
               "best_val_metric": result["best_val_metric"], "history": result["history"]}
    update_manifest(out, "train", summary,
                    [model_dir / BEST_WEIGHTS, model_dir / "model.json"])
    return summary
