"""Spark ML Estimators: ``SparkForgeClassifier`` and ``SparkForgeRegressor``.

The third face of the pipeline (beside the CLI and ``run_stage``), in the style of
xgboost's ``SparkXGBClassifier``: keyword params for the columns, ``config`` (a YAML path
or a dict of the CLI's ``--set`` keys) for everything else, validated by
:mod:`sparkforge.config` with the same messages::

    clf = SparkForgeClassifier(labelCol="decision", config={"train.epochs": 2})
    model = Pipeline(stages=[SQLTransformer(statement=...), clf]).fit(train_df)
    model.transform(new_df)                    # + prediction, probability
    model.write().overwrite().save("/models/loans")
    PipelineModel.load("/models/loans")

``fit(df)`` writes ``df`` to ``<output.dir>/input/`` as Parquet and runs the pipeline's
own stages on it (preprocess, train with TorchDistributor, compress, and the pipeline's
scoring and evaluation of that input for ``metrics.json``): the same code and the same
run directory as ``sparkforge pipeline --set data.format=parquet`` on that Parquet.
``output.dir`` is the config's, or a fresh temporary directory when the config leaves
the default. The run directory must be a path the driver (and, with
``train.local_mode=false``, the training ranks) can open: local, NFS or a DBFS fuse mount.

``transform(df)`` re-applies the saved preprocessing (:func:`sparkforge.data.prepare.prepare`
with the training's fitted encoding) and scores with onnxruntime in Spark
(:func:`sparkforge.infer.score_df`): lazy, like any Spark ML transform. It keeps every
input column and adds ``predictionCol`` (the label, as in the score job's output;
regression: the value) and ``probabilityCol`` (an ML ``Vector`` in the order of
``model.labels``). Rows that the score job would quarantine (a label or category the
training never saw when configured so, a value of the wrong type, a number more than
1000 training standard deviations from the mean, an empty text) are left out: the
saved encoding cannot score them.

Saving writes Spark ML's metadata (``metadata/``: class, uid, params) and copies the run
directory's scoring files (``run/``: ``manifest.json``, ``model/``, the selected and
other ONNX variants, ``metrics.json``); no pickle. Loading checks every file against the
sha256 the manifest recorded, as the score job does, and refuses a changed one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pyspark.ml import Estimator, Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasLabelCol, HasPredictionCol, HasProbabilityCol
from pyspark.ml.util import (
    DefaultParamsReadable,
    DefaultParamsReader,
    DefaultParamsWritable,
    DefaultParamsWriter,
    MLReadable,
    MLReader,
    MLWritable,
    MLWriter,
)
from pyspark.sql import DataFrame

from sparkforge.config import Config, ConfigError, OutputConfig, load_config

if TYPE_CHECKING:
    from sparkforge.jobs.score import ScoringModel

log = logging.getLogger(__name__)

__all__ = ["SparkForgeClassificationModel", "SparkForgeClassifier",
           "SparkForgeRegressionModel", "SparkForgeRegressor"]

# Where fit() writes the DataFrame it is given, under output.dir.
INPUT_DIR = "input"
# Where save() puts the copied run directory, under the model's path.
RUN_DIR = "run"
# The config keys the estimator's params own: a config dict naming one is refused.
_PARAM_KEYS = {"task": "the estimator's class (SparkForgeClassifier / SparkForgeRegressor) "
                       "and textCol",
               "data.label_column": "labelCol", "data.text_column": "textCol",
               "data.feature_columns": "featuresCols", "data.id_column": "idCol",
               "data.input": "the DataFrame given to fit()",
               "data.table": "the DataFrame given to fit()",
               "data.format": "the DataFrame given to fit()"}
# Transform's copies of the input columns, carried through scoring untouched.
_COPY_PREFIX = "_sf_in_"

M = TypeVar("M", bound="_SparkForgeModel")


class _SparkForgeParams(HasLabelCol, HasPredictionCol):
    """Params shared by the estimators and their models."""

    textCol: Param[str] = Param(
        Params._dummy(), "textCol", "the text column (text classification); unset: tabular",
        typeConverter=TypeConverters.toString)
    featuresCols: Param[list[str]] = Param(
        Params._dummy(), "featuresCols", "tabular feature columns (numeric or string; string "
        "columns are categorical); unset: every column but the label and the id",
        typeConverter=TypeConverters.toListString)
    idCol: Param[str] = Param(
        Params._dummy(), "idCol", "a stable row id; unset: derived from the row's content",
        typeConverter=TypeConverters.toString)
    config: Param[Any] = Param(
        Params._dummy(), "config", "a YAML config path, or a dict of dotted config keys "
        "(the CLI's --set keys, e.g. {'train.epochs': 2}); the columns come from the params")

    def __init__(self) -> None:
        super().__init__()
        self._setDefault(labelCol="label", predictionCol="prediction", config={})

    def getTextCol(self) -> str | None:
        return self.getOrDefault(self.textCol) if self.isDefined(self.textCol) else None

    def getFeaturesCols(self) -> list[str] | None:
        return (self.getOrDefault(self.featuresCols) if self.isDefined(self.featuresCols)
                else None)

    def getIdCol(self) -> str | None:
        return self.getOrDefault(self.idCol) if self.isDefined(self.idCol) else None

    def getConfig(self) -> Any:
        return self.getOrDefault(self.config)


class _ClassifierParams(_SparkForgeParams, HasProbabilityCol):
    def __init__(self) -> None:
        super().__init__()
        self._setDefault(probabilityCol="probability")


# ---------------------------------------------------------------------------
# Estimators


class _SparkForgeEstimator(Estimator[M], _SparkForgeParams):
    _model_cls: type[M]

    def _task(self) -> str:
        raise NotImplementedError

    def _config(self, columns: list[str] | None = None, run: bool = True) -> Config:
        """The run's Config: ``config`` (YAML or dict), then the params' columns and task;
        with ``run``, its output.dir (a fresh temporary one when the config leaves the
        default) and data.input (``input/`` there).

        Raises ConfigError (naming the key or the param) before any Spark work."""
        conf = self.getConfig()
        path: str | None = None
        settings: dict[str, Any] = {}
        if isinstance(conf, str | Path):
            path = str(conf)
        elif isinstance(conf, dict):
            settings = {str(k): v for k, v in conf.items()}
            owned = sorted(k for k in settings if k in _PARAM_KEYS)
            if owned:
                raise ConfigError(f"config={{{owned[0]!r}: {settings[owned[0]]!r}}}: set by "
                                  f"{_PARAM_KEYS[owned[0]]}, not by config; remove the key")
        elif conf is not None:
            raise ConfigError(f"config={conf!r}: use a YAML path or a dict of dotted keys, "
                              "e.g. {'train.epochs': 2}")
        label, text = self.getLabelCol(), self.getTextCol()
        feats, id_col = self.getFeaturesCols(), self.getIdCol()
        owned_settings: dict[str, Any] = {
            "task": self._task(), "data.label_column": label, "data.text_column": text,
            "data.feature_columns": feats, "data.id_column": id_col,
            "data.table": "", "data.format": "parquet", "data.input": ""}
        cfg = load_config(path, settings={**settings, **owned_settings})
        if columns is not None:
            self._check_columns(columns)
        if not run:
            return cfg
        out = (Path(tempfile.mkdtemp(prefix="sparkforge-ml-"))
               if cfg.output.dir == OutputConfig().dir else Path(cfg.output.dir).resolve())
        return load_config(path, settings={**settings, **owned_settings, "output.dir": str(out),
                                           "data.input": str(out / INPUT_DIR)})

    def _check_columns(self, columns: list[str]) -> None:
        named: dict[str, list[str | None]] = {
            "labelCol": [self.getLabelCol()], "textCol": [self.getTextCol()],
            "idCol": [self.getIdCol()], "featuresCols": list(self.getFeaturesCols() or [])}
        for param, cols in named.items():
            for c in cols:
                if c is not None and c not in columns:
                    raise ConfigError(f"{param}={c!r}: not a column of the DataFrame given to "
                                      f"fit(); its columns are {columns}")

    def _check_types(self, dataset: DataFrame) -> None:
        """Feature columns must be numeric, boolean or string: sparkforge encodes them
        itself (a VectorAssembler's vector would be read as one categorical string)."""
        from pyspark.sql import types as T

        if self.getTextCol() is not None:
            return
        skip = {self.getLabelCol(), self.getIdCol()}
        feats = self.getFeaturesCols() or [c for c in dataset.columns if c not in skip]
        for c in feats:
            tp = dataset.schema[c].dataType
            if not isinstance(tp, T.NumericType | T.StringType | T.BooleanType):
                raise ConfigError(
                    f"featuresCols: column {c!r} is {tp.simpleString()}; sparkforge encodes "
                    "numeric and string columns itself (standardised, one-hot): give it the "
                    "raw columns, not an assembled vector or array, or leave "
                    f"{c!r} out with featuresCols=[...]")

    def _fit(self, dataset: DataFrame) -> M:
        from sparkforge.data.preflight import check_output_dir
        from sparkforge.jobs import run_pipeline

        cfg = self._config(dataset.columns)
        self._check_types(dataset)
        check_output_dir(cfg)
        spark = dataset.sparkSession
        log.info("%s: fitting on %d columns into %s", type(self).__name__,
                 len(dataset.columns), cfg.out)
        # The stages read files (data.input); the DataFrame is written once, as Parquet,
        # into the run directory, so the run is the CLI's on that Parquet.
        dataset.write.mode("overwrite").parquet(cfg.data.input)
        run_pipeline(spark, cfg)
        model = self._model_cls(runDir=str(cfg.out))
        self._copyValues(model)
        return model


class SparkForgeClassifier(_SparkForgeEstimator["SparkForgeClassificationModel"],
                           _ClassifierParams, DefaultParamsWritable,
                           DefaultParamsReadable["SparkForgeClassifier"]):
    """Train, compress and evaluate a classifier (tabular, or text with ``textCol``)."""

    def __init__(self, *, labelCol: str = "label", textCol: str | None = None,
                 featuresCols: list[str] | None = None, idCol: str | None = None,
                 predictionCol: str = "prediction", probabilityCol: str = "probability",
                 config: str | dict[str, Any] | None = None) -> None:
        super().__init__()
        self._model_cls = SparkForgeClassificationModel
        self._set(labelCol=labelCol, predictionCol=predictionCol,
                  probabilityCol=probabilityCol, config=config if config is not None else {})
        for name, value in (("textCol", textCol), ("featuresCols", featuresCols),
                            ("idCol", idCol)):
            if value is not None:
                self._set(**{name: value})
        self._config(run=False)  # validate the params and the config now, as xgboost does

    def _task(self) -> str:
        return "text_classification" if self.getTextCol() else "tabular_classification"


class SparkForgeRegressor(_SparkForgeEstimator["SparkForgeRegressionModel"],
                          DefaultParamsWritable, DefaultParamsReadable["SparkForgeRegressor"]):
    """Train, compress and evaluate a tabular regressor."""

    def __init__(self, *, labelCol: str = "label", featuresCols: list[str] | None = None,
                 idCol: str | None = None, predictionCol: str = "prediction",
                 config: str | dict[str, Any] | None = None) -> None:
        super().__init__()
        self._model_cls = SparkForgeRegressionModel
        self._set(labelCol=labelCol, predictionCol=predictionCol,
                  config=config if config is not None else {})
        for name, value in (("featuresCols", featuresCols), ("idCol", idCol)):
            if value is not None:
                self._set(**{name: value})
        self._config(run=False)

    def _task(self) -> str:
        if self.getTextCol():
            raise ConfigError(f"textCol={self.getTextCol()!r}: regression is tabular only; "
                              "use SparkForgeClassifier for text")
        return "tabular_regression"


# ---------------------------------------------------------------------------
# Models


class _SparkForgeModel(Model, _SparkForgeParams, MLWritable, MLReadable[Any]):
    runDir: Param[str] = Param(Params._dummy(), "runDir", "the run directory scored from",
                               typeConverter=TypeConverters.toString)

    def __init__(self, runDir: str = "") -> None:
        super().__init__()
        self._set(runDir=runDir)

    def getRunDir(self) -> Path:
        return Path(self.getOrDefault(self.runDir))

    def _scoring_config(self) -> Config:
        """The training's config (``model/config.json``, checked against the manifest),
        pointed at this model's run directory."""
        from sparkforge.artifacts import TRAINING_CONFIG, verify_artifact

        run = self.getRunDir()
        if not (run / "manifest.json").is_file():
            raise ConfigError(f"runDir={str(run)!r}: no manifest.json; a model is scored "
                              "from the run directory fit() wrote, or one save() copied")
        verify_artifact(run, run / TRAINING_CONFIG)
        cfg = load_config(run / TRAINING_CONFIG)
        return dataclasses.replace(cfg, output=OutputConfig(dir=str(run)))

    def _scoring_model(self) -> tuple[Config, ScoringModel]:
        from sparkforge.jobs.score import load_scoring_model

        cfg = self._scoring_config()
        return cfg, load_scoring_model(cfg)

    @property
    def labels(self) -> list[str]:
        """The classes, in the order of the probability vector (empty for regression)."""
        return self._scoring_model()[1].labels

    @property
    def summary(self) -> dict[str, Any]:
        """``metrics.json`` of the fit: each variant's test-split metrics, the selected
        variant, the compression table (as the CLI's run writes it)."""
        metrics: dict[str, Any] = json.loads((self.getRunDir() / "metrics.json").read_text())
        return metrics

    @property
    def manifest(self) -> dict[str, Any]:
        """``manifest.json``: each stage's figures (row counts, training history, the
        compression decisions) and the sha256 of every artifact."""
        doc: dict[str, Any] = json.loads((self.getRunDir() / "manifest.json").read_text())
        return doc

    def _output_columns(self) -> dict[str, str]:
        return {"prediction": self.getPredictionCol()}

    def _transform(self, dataset: DataFrame) -> DataFrame:
        from pyspark.sql import functions as F

        from sparkforge.data.prepare import prepare
        from sparkforge.infer import score_df
        from sparkforge.jobs.score import encode
        from sparkforge.models import task_input_names

        outputs = self._output_columns()
        clash = [c for c in outputs.values() if c in dataset.columns]
        if clash:
            raise ConfigError(f"the DataFrame already has a column {clash[0]!r}; set "
                              "predictionCol / probabilityCol to another name")
        cfg, model = self._scoring_model()
        spark = dataset.sparkSession
        # Copies of the input columns ride through preprocessing and scoring untouched (the
        # originals are cleaned and encoded), so the output keeps the input as it was.
        copies = {f"{_COPY_PREFIX}{i}": c for i, c in enumerate(dataset.columns)}
        raw = dataset.select("*", *[F.col(f"`{c}`").alias(k) for k, c in copies.items()])
        keep = list(copies)
        # The output keeps the input's columns and no id: no repeats numbered, nothing
        # runs before an action on the output.
        prep = prepare(spark, cfg, stage="score", fitted=model.fitted, raw=raw,
                       keep_columns=keep, number_repeats=False)
        encoded = encode(cfg, prep.kept, model, keep)
        selected = model.selected
        threads = int(spark.conf.get("spark.task.cpus", "1") or "1")
        scored = score_df(encoded, model_path=str(cfg.out / model.selection["paths"][selected]),
                          sha256=model.sha256[selected],
                          inputs=task_input_names(text=cfg.is_text),
                          labels=model.labels, variant=selected,
                          batch_size=cfg.score.batch_size, threads=threads, passthrough=keep)
        cols = [F.col(k).alias(c) for k, c in copies.items()]
        cols.append(F.col("prediction").alias(outputs["prediction"]))
        if "probability" in outputs:
            from pyspark.ml.functions import array_to_vector

            cols.append(array_to_vector(F.col("probability")).alias(outputs["probability"]))
        return scored.select(*cols)

    def write(self) -> MLWriter:
        return _ModelWriter(self)

    @classmethod
    def read(cls) -> MLReader[Any]:
        return _ModelReader(cls)


class SparkForgeClassificationModel(_SparkForgeModel, _ClassifierParams):
    """A fitted :class:`SparkForgeClassifier`: adds ``predictionCol`` (the label) and
    ``probabilityCol`` (a Vector in the order of :attr:`labels`)."""

    def _output_columns(self) -> dict[str, str]:
        return {"prediction": self.getPredictionCol(), "probability": self.getProbabilityCol()}


class SparkForgeRegressionModel(_SparkForgeModel):
    """A fitted :class:`SparkForgeRegressor`: adds ``predictionCol`` (double)."""


# ---------------------------------------------------------------------------
# Persistence: Spark ML metadata + the run directory's scoring files


def _local_path(path: str) -> Path:
    if path.startswith("file:"):
        path = path[len("file:"):]
        while path.startswith("//"):
            path = path[1:]
    if ":" in path.split("/", 1)[0]:
        raise ConfigError(f"path={path!r}: a sparkforge model is saved to a local or mounted "
                          "path (its run directory is copied with the filesystem API); use "
                          "e.g. /dbfs/models/x rather than dbfs:/models/x")
    return Path(path)


def _copy_run(src: Path, dst: Path) -> None:
    """Copy what scoring reads (and the fit's metrics), not the data: ``input/``,
    ``preprocessed/``, ``eval_scores/`` and training checkpoints stay behind."""
    dst.mkdir(parents=True)
    for name in ("manifest.json", "metrics.json", "report.html"):
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    shutil.copytree(src / "model", dst / "model", ignore=shutil.ignore_patterns("checkpoint"))
    shutil.copytree(src / "compressed", dst / "compressed")


class _ModelWriter(MLWriter):
    def __init__(self, instance: _SparkForgeModel) -> None:
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        # runDir is where the model was scored from; a loaded model scores from its copy.
        params = {p.name: v for p, v in self.instance._paramMap.items() if p.name != "runDir"}
        DefaultParamsWriter.saveMetadata(self.instance, path, self.sparkSession,
                                         extraMetadata={"runDir": RUN_DIR}, paramMap=params)
        _copy_run(self.instance.getRunDir(), _local_path(path) / RUN_DIR)


class _ModelReader(MLReader[Any]):
    def __init__(self, cls: type[_SparkForgeModel]) -> None:
        super().__init__()
        self.cls = cls

    def load(self, path: str) -> Any:
        metadata = DefaultParamsReader.loadMetadata(path, self.sparkSession)
        instance = self.cls()
        instance._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(instance, metadata)
        instance._set(runDir=str((_local_path(path) / metadata["runDir"]).resolve()))
        instance._scoring_model()  # every artifact against the manifest's sha256, now
        return instance
