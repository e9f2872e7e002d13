"""What cannot run through Spark Connect is refused before any Spark work, naming the key
(no server needed: these run in a second)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparkforge.config import ConfigError, load_config
from sparkforge.spark.session import check_connect, remote_url

CONF = Path(__file__).resolve().parents[2] / "conf" / "tabular_classification.yaml"


def test_spark_remote_must_be_a_connect_url() -> None:
    with pytest.raises(ConfigError, match=r"spark.remote='127.0.0.1:15002'.*sc://host:port"):
        load_config(CONF, ["spark.remote=127.0.0.1:15002"])


def test_petastorm_loader_is_refused_over_connect_naming_both_keys(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPARK_REMOTE", raising=False)
    cfg = load_config(CONF,
                      ["spark.remote=sc://127.0.0.1:15002", "train.loader=petastorm"])
    with pytest.raises(ConfigError, match=r"train.loader='petastorm'.*spark.remote="
                                          r"'sc://127.0.0.1:15002'"):
        check_connect(cfg)
    # the same config without a Connect URL is not refused here
    check_connect(load_config(CONF, ["train.loader=petastorm"]))


def test_spark_remote_env_overrides_the_config_and_is_named(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARK_REMOTE", "sc://localhost:1")
    cfg = load_config(CONF,
                      ["spark.remote=sc://127.0.0.1:15002", "train.loader=petastorm"])
    assert remote_url(cfg.spark) == "sc://localhost:1"
    with pytest.raises(ConfigError, match=r"SPARK_REMOTE='sc://localhost:1'"):
        check_connect(cfg)
    monkeypatch.setenv("SPARK_REMOTE", "localhost:1")
    with pytest.raises(ConfigError, match=r"SPARK_REMOTE='localhost:1'.*sc://host:port"):
        check_connect(load_config(CONF))
