"""Config loading and validation: bad configs fail fast, naming key, value and fix."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from sparkforge.config import ConfigError, load_config
from sparkforge.data.preflight import check_inputs

ROOT = Path(__file__).resolve().parents[2]
TEXT = ROOT / "conf" / "text_classification.yaml"
TAB = ROOT / "conf" / "tabular_classification.yaml"


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    p = tmp_path / "x.csv"
    p.write_text("a,b,y\n1,u,yes\n2,v,no\n")
    return p


def test_extends_and_overrides(csv_file: Path) -> None:
    cfg = load_config(ROOT / "conf" / "demo_text.yaml",
                      [f"data.input={csv_file}", "train.epochs=3", "data.options.sep=;"])
    assert cfg.task == "text_classification"
    assert cfg.train.model == "minilm"           # from demo_text.yaml
    assert cfg.train.epochs == 3                 # from --set
    # inherited, YAML bool -> Spark string
    assert cfg.data.format_options["csv"]["multiLine"] == "true"
    assert cfg.data.options["sep"] == ";"
    assert cfg.data.input == str(csv_file)


@pytest.mark.parametrize(("override", "needle"), [
    ("train.epochz=3", "train.epochz"),
    ("train.epochs=many", "train.epochs='many'"),
    ("train.epochs=0", "positive integer"),
    ("task=clustering", "use one of"),
    ("preprocess.split.train=0.9", "sum to 1"),
    ("compress.select=biggest", "smallest, fastest"),
    ("data.format=xml", "csv, json, parquet, orc, text"),
    ("data.format_options.xml.a=1", "data.format_options.xml"),
    ("data.format_options.csv=1", "expected a mapping"),
    ("data.table=db.t", "data.table='db.t'"),
    ("train.lr=.nan", "train.lr=nan: use a finite number"),
])
def test_bad_values_name_key_value_and_fix(csv_file: Path, override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(TAB, [f"data.input={csv_file}", "data.label_column=y", override])
    assert needle in str(e.value)


def test_unknown_key_suggests_the_close_one(csv_file: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'label_column'"):
        load_config(TAB, [f"data.input={csv_file}", "data.label_colum=y"])


def test_preflight_missing_path_and_column(csv_file: Path, tmp_path: Path) -> None:
    cfg = load_config(TAB, [f"data.input={tmp_path / 'nope' / '*.csv'}", "data.label_column=y"])
    with pytest.raises(ConfigError, match="no file matches"):
        check_inputs(cfg)
    cfg = load_config(TAB, [f"data.input={csv_file}", "data.label_column=target"])
    with pytest.raises(ConfigError, match=r"data.label_column='target'.*columns are a, b, y"):
        check_inputs(cfg)
    check_inputs(load_config(TAB, [f"data.input={csv_file}", "data.label_column=y"]))


@pytest.mark.parametrize("override", [
    "data.label_column=missing_col", "train.epochs=abc", "spark.mastr=local[1]",
    "data.input=/no/such/file.csv",
])
def test_cli_bad_config_exits_2_fast_without_traceback(csv_file: Path, override: str) -> None:
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "sparkforge", "pipeline", "--config", str(TAB),
         "--set", f"data.input={csv_file}", "--set", "data.label_column=y", "--set", override],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Exception" not in proc.stderr
    key = override.split("=")[0]
    assert key in proc.stderr
    # No JVM was started: a config error costs well under Spark's start-up time.
    assert "SparkContext" not in proc.stderr
    assert time.time() - t0 < 30


def test_text_models_are_refused_for_tabular_tasks(csv_file: Path) -> None:
    for model in ("embedding_bag", "transformer", "minilm"):
        with pytest.raises(ConfigError, match="text models need task=text_classification"):
            load_config(TAB, [f"data.input={csv_file}", "data.label_column=y",
                              f"train.model={model}"])


def test_per_format_options_and_catalog_tables(csv_file: Path) -> None:
    from sparkforge.data.readers import reader_options

    cfg = load_config(TEXT, [f"data.input={csv_file}"])
    assert reader_options(cfg) == {"header": "true", "multiLine": "true", "escape": '"'}
    # the CSV settings never reach the JSON reader; explicit options reach any format
    cfg = load_config(TEXT, [f"data.input={csv_file}", "data.format=json"])
    assert reader_options(cfg) == {}
    cfg = load_config(TEXT, [f"data.input={csv_file}", "data.format=json",
                             "data.options.multiLine=true"])
    assert reader_options(cfg) == {"multiLine": "true"}
    cfg = load_config(TAB, ["data.input=", "data.table=db.events", "data.label_column=y"])
    assert cfg.data.table == "db.events"
    # Neither: preprocess refuses before Spark starts (score and evaluate may take the
    # training's data settings from the run directory instead).
    with pytest.raises(ConfigError, match=r"data\.table"):
        check_inputs(load_config(TAB, ["data.input=", "data.label_column=y"]), "preprocess")


def test_dotted_keys_inside_string_maps_stay_one_key() -> None:
    """``--set spark.conf.spark.sql.shuffle.partitions=4`` used to nest into
    ``{'spark': "{'sql': ...}"}``, so Spark never saw the property."""
    cfg = load_config(ROOT / "conf" / "tabular_classification.yaml", [
        "data.input=x.csv", "spark.conf.spark.sql.shuffle.partitions=4",
        "spark.conf.spark.executor.cores=2", "data.format_options.csv.multiLine=true"])
    assert cfg.spark.conf == {"spark.sql.shuffle.partitions": "4", "spark.executor.cores": "2"}
    assert cfg.data.format_options["csv"]["multiLine"] == "true"
