"""Stage 2: preprocessed/ -> model/ (weights, spec, history) via TorchDistributor.

The driver validates resources before anything is launched (more processes than task
slots fails at once, naming ``train.num_processes``), builds the ranks'
:class:`~sparkforge.train.spec.TrainSpec` (:func:`train_spec`), then
:func:`sparkforge.train.launch.launch` runs the training core on
``train.num_processes`` ranks: torchrun on the driver with ``train.local_mode=true``,
barrier tasks on the executors otherwise, relaunched up to ``train.max_restarts`` times.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkforge.artifacts import read_json, update_manifest, write_json_atomic
from sparkforge.config import Config, ConfigError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from sparkforge.train.launch import Resources
    from sparkforge.train.spec import TrainSpec

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
    from sparkforge import features

    df = spark.read.parquet(str(cfg.out / "preprocessed" / "split=train"))
    df = df.select(*features.source_columns(columns, df.columns))
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


def train_spec(cfg: Config, res: Resources | None = None, converter: Any = None,
               class_weights: list[float] | None = None) -> TrainSpec:
    """The :class:`~sparkforge.train.spec.TrainSpec` every training rank gets
    (``class_weights``: :func:`class_weight_decision`'s, in label order)."""
    from sparkforge.train.spec import spec_from_config

    out = cfg.out
    n_train = int(_preprocess_summary(cfg).get("rows_per_split", {}).get("train", 0))
    spec = model_spec(cfg, pretrained=True)
    return spec_from_config(
        cfg, model=spec,
        train_path=str((out / "preprocessed" / "split=train").resolve()),
        val_path=str((out / "preprocessed" / "split=val").resolve()),
        out_dir=str((out / "model").resolve()),
        batch_size=rank_batch_size(cfg, n_train),
        class_weights=tuple(class_weights) if class_weights else None,
        target_std=float(spec.get("target_std", 1.0)),
        # The driver clears old checkpoints unless train.resume, so whatever a rank finds
        # was written by this run: a relaunched barrier stage continues from it.
        resume=True, converter=converter,
        use_cuda=res.use_gpu if res else False, threads=res.threads if res else 0)


def run_train(spark: SparkSession, cfg: Config) -> dict[str, Any]:
    """Train and write model/.

    Test hooks (killing a rank, tracing the rows each rank read) are installed with
    :func:`sparkforge.train.hooks.installed`, not passed here."""
    from sparkforge.train import checkpoint, hooks
    from sparkforge.train.launch import launch, resources
    from sparkforge.train.loop import BEST_WEIGHTS, CHECKPOINT_DIR

    out = cfg.out
    model_dir = out / "model"
    if not (out / "preprocessed").exists():
        raise ConfigError(f"output.dir={str(out)!r}: no preprocessed/ folder; run "
                          "`sparkforge preprocess` with this config first")
    t = cfg.train
    res = resources(spark, cfg)  # fails fast, before any slow driver work
    weights, weight_info = class_weight_decision(
        spark, cfg, read_json(model_dir / "labels.json"))
    spec = train_spec(cfg, res, class_weights=weights)
    ckpt_root = model_dir / CHECKPOINT_DIR
    last = checkpoint.latest(ckpt_root)
    if not t.resume:
        checkpoint.clear(ckpt_root)
    elif last is None:
        log.warning("train.resume=true but %s holds no complete checkpoint; starting fresh",
                    ckpt_root)
    converter = None
    if t.loader == "petastorm":
        installed = hooks.active()
        traced = installed.trace_columns() if installed else []
        converter = petastorm_converter(spark, cfg, [*spec.columns(), *traced])
        spec = dataclasses.replace(spec, converter=converter)
    log.info("train: model %s%s", cfg.model_name,
             f", resuming from {last}" if t.resume and last else "")
    try:
        result, restarts = launch(spark, cfg, spec, res=res, max_restarts=t.max_restarts)
    finally:
        if converter is not None:
            converter.delete()
    if not (model_dir / BEST_WEIGHTS).exists():
        raise RuntimeError(f"training finished but wrote no {model_dir / BEST_WEIGHTS}")
    write_json_atomic(model_dir / "model.json", model_spec(cfg, pretrained=False))
    write_json_atomic(model_dir / "history.json", result["history"])
    summary = {"model": cfg.model_name, "num_processes": t.num_processes,
               "local_mode": t.local_mode, "use_gpu": res.use_gpu, "loader": t.loader,
               "fsdp": t.fsdp, "grad_accum_steps": t.grad_accum_steps,
               "epochs_run": len(result["history"]),
               "kept_epoch": result.get("kept_epoch"), "kept_reason": result.get("kept_reason"),
               "stop_reason": result.get("stop_reason"), "select_by": result.get("select_by"),
               "batch_size_per_rank": spec.batch_size,
               "class_weights": weight_info,
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
