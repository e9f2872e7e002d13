"""The Spark ML face: ``SparkForgeClassifier`` inside a ``pyspark.ml.Pipeline``.

For generated tabular data and for generated text: a Spark ML feature stage
(``SQLTransformer``) then the classifier, fitted on part of the rows; the held-back rows
transformed; the fitted PipelineModel saved, loaded in a fresh Python process with its own
SparkSession, which transforms the same rows: the predictions and probabilities are
identical. For the tabular task, the fit's metrics equal those of ``sparkforge pipeline``
(the CLI, another process) run on the same feature-stage output with the same config and
seed.

Cost: three tiny trained runs (the tabular estimator's and the CLI's, the text
estimator's: 2 epochs, one rank, a few thousand rows), one loading process each, and one
small regressor run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from sparkforge.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]

# A fresh session: load the saved PipelineModel, transform the held-back rows, write them.
LOAD_SCRIPT = """
import sys
from pyspark.ml import PipelineModel
from pyspark.ml.functions import vector_to_array
from sparkforge.config import SparkConfig
from sparkforge.spark.session import get_session

model_path, rows_path, out_path = sys.argv[1:4]
# The test session's parallelism and shuffle partitions. int8_dynamic quantizes each row's
# activations on its own, so outputs do not depend on how rows are grouped; the same
# settings keep the comparison to the fitting session free of any other difference.
spark = get_session(SparkConfig(master="local[2]", app_name="load-test"),
                    extra={"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "4"})
out = PipelineModel.load(model_path).transform(spark.read.parquet(rows_path))
out.withColumn("probability", vector_to_array("probability")).write.parquet(out_path)
spark.stop()
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARKFORGE_LOG_LEVEL": "WARNING"}


def _tabular(n: int = 3000) -> pd.DataFrame:
    rng = np.random.default_rng(42)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], size=n)
    # The product x1*x2 carries part of the signal: the feature stage computes it.
    logit = 2.0 * x1 - 1.5 * x2 + 1.5 * x1 * x2 + np.where(color == "red", 1.5, -0.5)
    y = np.where(logit + rng.normal(scale=0.3, size=n) > 0, "approved", "denied")
    return pd.DataFrame({"x1": x1.round(4), "x2": x2.round(4), "color": color,
                         "decision": y})


def _text(n: int = 2000) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    pos = ["wonderful", "moving", "brilliant", "charming", "superb", "delight"]
    neg = ["dull", "tedious", "awful", "boring", "mess", "clumsy"]
    filler = ["the", "film", "story", "actors", "was", "a", "really", "plot", "and", "it"]
    rows = []
    for i in range(n):
        label = str(rng.choice(["up", "down"]))
        words = list(rng.choice(filler, size=8)) + list(
            rng.choice(pos if label == "up" else neg, size=2))
        rng.shuffle(words)
        rows.append((f"review {i}", " ".join(words), label))
    return pd.DataFrame(rows, columns=["headline", "body", "sentiment"])


def _cli_pipeline(task: str, data: Path, label: str, out: Path,
                  settings: dict[str, Any]) -> dict[str, Any]:
    """``sparkforge pipeline`` on ``data`` (Parquet) with ``settings`` as --set flags."""
    conf = out.parent / f"{out.name}.yaml"
    conf.write_text(f"task: {task}\n")
    args = [sys.executable, "-m", "sparkforge", "pipeline", "--config", str(conf),
            "--set", f"data.input={data}", "--set", "data.format=parquet",
            "--set", f"data.label_column={label}", "--set", f"output.dir={out}",
            # The test session's Spark settings: the order in which training reads the
            # rows follows the preprocessed files' layout, which follows the shuffle
            # partitions; with other settings the same seed trains on another order.
            "--set", "spark.master=local[2]",
            "--set", "spark.conf.spark.sql.shuffle.partitions=4"]
    for k, v in settings.items():
        args += ["--set", f"{k}={json.dumps(v)}"]  # JSON is YAML: lists, numbers, booleans
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900, env=_env(),
                          cwd=ROOT)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    metrics: dict[str, Any] = json.loads((out / "metrics.json").read_text())
    return metrics


def _fit_save_load(spark: Any, tmp: Path, feature_stage: Any, clf: Any, data: pd.DataFrame,
                   n_fit: int) -> tuple[Any, pd.DataFrame, pd.DataFrame]:
    """Fit the Pipeline on the first ``n_fit`` rows, transform the rest here and in a
    fresh process from the saved model; returns (fitted, here, there) sorted alike."""
    from pyspark.ml import Pipeline
    from pyspark.ml.functions import vector_to_array

    fit_df = spark.createDataFrame(data.iloc[:n_fit])
    held_path = tmp / "held.parquet"
    data.iloc[n_fit:].to_parquet(held_path, index=False)
    held = spark.read.parquet(str(held_path))

    fitted = Pipeline(stages=[feature_stage, clf]).fit(fit_df)
    here = (fitted.transform(held).withColumn("probability", vector_to_array("probability"))
            .toPandas())  # a few hundred test rows, compared with the other process's
    fitted.write().overwrite().save(str(tmp / "saved"))
    script = tmp / "load.py"
    script.write_text(LOAD_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(tmp / "saved"), str(held_path),
                           str(tmp / "there.parquet")], capture_output=True, text=True,
                          timeout=600, env=_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-5000:]
    there = pd.read_parquet(tmp / "there.parquet")
    key = list(data.columns)
    return (fitted, here.sort_values(key).reset_index(drop=True),
            there.sort_values(key).reset_index(drop=True))


def _check_identical(here: pd.DataFrame, there: pd.DataFrame, n_held: int,
                     labels: list[str]) -> None:
    assert len(here) == len(there) == n_held  # every held-back row scored, none dropped
    assert list(here.columns) == list(there.columns)
    pd.testing.assert_frame_equal(here.drop(columns="probability"),
                                  there.drop(columns="probability"), check_exact=True)
    p_here, p_there = np.stack(here["probability"]), np.stack(there["probability"])
    assert np.array_equal(p_here, p_there)
    np.testing.assert_allclose(p_here.sum(axis=1), 1.0, atol=1e-9)
    assert (np.array(labels)[p_here.argmax(axis=1)] == here["prediction"]).all()


def _check_same_metrics(est: dict[str, Any], cli: dict[str, Any]) -> None:
    # The variants' figures, not `selected`: the gate may reject a variant on latency,
    # which is measured and so differs between two runs of the same model.
    assert est["variants"].keys() == cli["variants"].keys()
    for v, m in est["variants"].items():
        c = cli["variants"][v]
        assert m.keys() == c.keys()
        for k, val in m.items():
            if isinstance(val, float):
                assert val == pytest.approx(c[k], rel=1e-9, abs=1e-12), (v, k)
            else:
                assert val == c[k], (v, k)


def test_tabular_classifier_in_a_pipeline(spark: Any, tmp_path: Path) -> None:
    from pyspark.ml.feature import SQLTransformer

    from sparkforge.ml import SparkForgeClassifier

    data, n_fit = _tabular(), 2500
    settings = {"train.epochs": 2, "train.num_processes": 1,
                "compress.variants": ["int8_dynamic"], "evaluate.baseline": False}
    stage = SQLTransformer(statement="SELECT *, x1 * x2 AS x1x2 FROM __THIS__")
    clf = SparkForgeClassifier(labelCol="decision",
                               config={**settings, "output.dir": str(tmp_path / "est")})
    fitted, here, there = _fit_save_load(spark, tmp_path, stage, clf, data, n_fit)
    model = fitted.stages[-1]
    assert list(here.columns) == [*data.columns, "x1x2", "prediction", "probability"]
    _check_identical(here, there, len(data) - n_fit, model.labels)
    # The model learned the signal: judged by scikit-learn on the held-back rows.
    assert skm.accuracy_score(here["decision"], here["prediction"]) > 0.85
    # The loaded model scores from its own copy of the run, checked against the manifest.
    assert model.getRunDir() == tmp_path / "est"
    assert (tmp_path / "saved" / "stages").is_dir()

    # The CLI on the same rows (the feature stage's output) with the same config and seed.
    cli_in = tmp_path / "cli_input.parquet"
    stage.transform(spark.createDataFrame(data.iloc[:n_fit])).write.parquet(str(cli_in))
    cli = _cli_pipeline("tabular_classification", cli_in, "decision", tmp_path / "cli",
                        settings)
    summary = model.summary
    assert set(summary["variants"]) == {"fp32", "int8_dynamic"}
    _check_same_metrics(summary, cli)
    cli_manifest = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    assert model.manifest["preprocess"]["rows_per_split"] == \
        cli_manifest["preprocess"]["rows_per_split"]
    assert model.manifest["preprocess"]["rows_in"] == n_fit


def test_text_classifier_in_a_pipeline(spark: Any, tmp_path: Path) -> None:
    from pyspark.ml.feature import SQLTransformer

    from sparkforge.ml import SparkForgeClassifier

    data, n_fit = _text(), 1700
    # The pretrained vocabulary: a trained one (tokenizer.kind=trained) differs from one
    # process to the next on the same texts (HF tokenizers' WordPiece trainer), so two runs
    # of it train different models and their metrics cannot be compared.
    settings = {"tokenizer.kind": "pretrained", "tokenizer.max_length": 24,
                "train.epochs": 2, "train.batch_size": 32,
                "train.num_processes": 1, "compress.variants": [],
                "evaluate.baseline": False}
    # The config as a YAML file this time (the other form of `config`).
    conf = tmp_path / "est.yaml"
    conf.write_text(_nested_yaml({**settings, "output.dir": str(tmp_path / "est")}))
    stage = SQLTransformer(
        statement="SELECT *, concat(headline, '. ', body) AS review FROM __THIS__")
    clf = SparkForgeClassifier(labelCol="sentiment", textCol="review", config=str(conf))
    fitted, here, there = _fit_save_load(spark, tmp_path, stage, clf, data, n_fit)
    model = fitted.stages[-1]
    assert list(here.columns) == [*data.columns, "review", "prediction", "probability"]
    _check_identical(here, there, len(data) - n_fit, model.labels)
    assert model.labels == ["down", "up"]
    assert skm.accuracy_score(here["sentiment"], here["prediction"]) > 0.9
    # The fit and the CLI run one pipeline function; their equality is checked once, by
    # the tabular test (a second CLI run here cost 70 s of the suite).
    assert model.manifest["preprocess"]["rows_in"] == n_fit
    assert set(model.summary["variants"]) == {"fp32"}


def _nested_yaml(settings: dict[str, Any]) -> str:
    import yaml

    tree: dict[str, Any] = {}
    for key, value in settings.items():
        *parents, leaf = key.split(".")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return yaml.safe_dump(tree)


def test_config_errors_name_the_key_before_any_spark_work() -> None:
    from sparkforge.ml import SparkForgeClassifier, SparkForgeRegressor

    with pytest.raises(ConfigError, match=r"train\.epochs='many': use a whole number"):
        SparkForgeClassifier(config={"train.epochs": "many"})
    with pytest.raises(ConfigError, match="unknown key; did you mean 'epochs'"):
        SparkForgeClassifier(config={"train.epoch": 2})
    with pytest.raises(ConfigError, match=r"data\.label_column.*set by labelCol"):
        SparkForgeClassifier(config={"data.label_column": "y"})
    with pytest.raises(ConfigError, match="mlp is for tabular"):
        SparkForgeClassifier(textCol="review", config={"train.model": "mlp"})
    with pytest.raises(TypeError):
        SparkForgeRegressor(textCol="review")  # type: ignore[call-arg]


def test_fit_refuses_missing_and_vector_columns(spark: Any, tmp_path: Path) -> None:
    from pyspark.ml.feature import VectorAssembler

    from sparkforge.ml import SparkForgeClassifier

    df = spark.createDataFrame(_tabular(50))
    with pytest.raises(ConfigError, match=r"labelCol='label': not a column"):
        SparkForgeClassifier(config={"output.dir": str(tmp_path / "a")}).fit(df)
    assembled = VectorAssembler(inputCols=["x1", "x2"], outputCol="v").transform(df)
    with pytest.raises(ConfigError, match=r"featuresCols: column 'v' is vector"):
        SparkForgeClassifier(labelCol="decision",
                             config={"output.dir": str(tmp_path / "b")}).fit(assembled)
    # Refused before anything was written.
    assert not (tmp_path / "a").exists()
    assert not (tmp_path / "b" / "input").exists()


def test_regressor_fits_transforms_and_round_trips(spark: Any, tmp_path: Path) -> None:
    from sparkforge.ml import SparkForgeRegressionModel, SparkForgeRegressor

    rng = np.random.default_rng(11)
    n, n_fit = 1500, 1200
    x = rng.normal(size=(n, 2))
    kind = rng.choice(["a", "b"], size=n)
    y = 3 * x[:, 0] - 2 * x[:, 1] + np.where(kind == "a", 2.0, -2.0) + rng.normal(0, .1, n)
    data = pd.DataFrame({"rid": [f"r{i}" for i in range(n)], "x0": x[:, 0], "x1": x[:, 1],
                         "kind": kind, "y": y})
    reg = SparkForgeRegressor(labelCol="y", idCol="rid", config={
        "train.epochs": 8, "train.batch_size": 64, "train.num_processes": 1,
        "compress.variants": [], "evaluate.baseline": False,
        "output.dir": str(tmp_path / "est")})
    model = reg.fit(spark.createDataFrame(data.iloc[:n_fit]))
    held = spark.createDataFrame(data.iloc[n_fit:])
    out = model.transform(held).toPandas().sort_values("rid")
    assert list(out.columns) == [*data.columns, "prediction"]
    assert len(out) == n - n_fit
    assert skm.r2_score(out["y"], out["prediction"]) > 0.9  # scikit-learn judges it
    assert set(model.summary["variants"]) == {"fp32"}

    model.write().overwrite().save(str(tmp_path / "saved"))
    loaded = SparkForgeRegressionModel.load(str(tmp_path / "saved"))
    assert loaded.getRunDir() == (tmp_path / "saved" / "run").resolve()
    again = loaded.transform(held).toPandas().sort_values("rid")
    assert np.array_equal(again["prediction"].to_numpy(), out["prediction"].to_numpy())

    # A changed file in the saved copy is refused at load, naming it (the manifest's sha256).
    with open(tmp_path / "saved" / "run" / "model" / "preprocessor.json", "a") as fh:
        fh.write(" ")
    with pytest.raises(ConfigError, match=r"preprocessor\.json has sha256"):
        SparkForgeRegressionModel.load(str(tmp_path / "saved"))
