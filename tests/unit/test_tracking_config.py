"""The tracking config section, the notebooks' parameter helper and tracking's flattening
(no MLflow store: the e2e test reads a real one back)."""

from __future__ import annotations

import importlib.util

import pytest

from sparkforge import notebook
from sparkforge.config import ConfigError, MissingExtraError, load_config
from sparkforge.tracking import flatten, key, numeric

TABULAR = "task=tabular_classification"


def test_tracking_defaults_off_and_loads_on() -> None:
    assert load_config(None, [TABULAR]).tracking.mlflow is False
    cfg = load_config(None, [TABULAR, "tracking.mlflow=true", "tracking.uri=sqlite:///x.db",
                             "tracking.experiment=nightly"])
    assert (cfg.tracking.mlflow, cfg.tracking.uri, cfg.tracking.experiment) == (
        True, "sqlite:///x.db", "nightly")


def test_missing_mlflow_fails_at_load_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(MissingExtraError, match=r"sparkforge\[mlflow\]") as e:
        load_config(None, [TABULAR, "tracking.mlflow=true"])
    # a user error for the CLI (exit code 2), an ImportError for code catching those
    assert isinstance(e.value, ConfigError)
    assert isinstance(e.value, ImportError)
    assert "tracking.mlflow=True" in str(e.value)
    load_config(None, [TABULAR, "tracking.mlflow=false"])  # off: mlflow is not needed


def test_unknown_tracking_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="did you mean 'mlflow'"):
        load_config(None, [TABULAR, "tracking.mlfow=true"])


def test_flatten_and_numeric() -> None:
    tree = {"a": {"b": 1, "c": [1, 2], "d": {}}, "e": True, "f": float("nan"), "g": "x"}
    assert dict(flatten(tree)) == {"a.b": 1, "a.c": [1, 2], "a.d": {}, "e": True,
                                   "f": tree["f"], "g": "x"}
    assert numeric(tree, "s.") == {"s.a.b": 1.0}  # bools, NaN, strings and lists left out


class Widgets:
    def __init__(self, values: dict[str, str]) -> None:
        self.values, self.made = values, {}

    def text(self, name: str, default: str, label: str) -> None:
        self.made[name] = default

    def get(self, name: str) -> str:
        return self.values.get(name, self.made[name])


class Dbutils:
    def __init__(self, values: dict[str, str]) -> None:
        self.widgets = Widgets(values)


def test_notebook_params_from_widgets_or_defaults() -> None:
    defaults = {**notebook.COMMON, "epochs": "30"}
    assert notebook.params({}, defaults) == defaults
    db = Dbutils({"epochs": "2", "overrides": "train.hidden_dim=16 'data.options.sep=;'"})
    p = notebook.params({"dbutils": db}, defaults)
    assert db.widgets.made == defaults  # every widget created with its default
    assert p["epochs"] == "2"
    assert p["output_dir"] == "runs/notebooks"
    assert notebook.overrides(p) == ["output.dir=runs/notebooks", "train.hidden_dim=16",
                                     "data.options.sep=;"]
    cfg = notebook.load({**p, "config": "conf/demo_tabular.yaml", "input": "x.csv"},
                        [f"train.epochs={p['epochs']}"])
    assert (cfg.train.epochs, cfg.train.hidden_dim, cfg.data.input) == (2, 16, "x.csv")
    assert cfg.data.options == {"sep": ";"}


def test_keys_mlflow_would_refuse_are_rewritten() -> None:
    assert key("drift.psi.income (k$)") == "drift.psi.income _k__"
    assert key("quarantine_reasons.bad_type:age") == "quarantine_reasons.bad_type:age"
    assert numeric({"psi": {"a,b": 0.5}}) == {"psi.a_b": 0.5}
