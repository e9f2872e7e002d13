"""Config fuzzing: random keys, types and values (nested too) through load_config and the
CLI always end in a Config or a ConfigError with a message (exit 2), never another error."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparkforge.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
REAL_KEYS = sorted({f.name for cls in (Config, *[getattr(__import__("sparkforge.config",
                    fromlist=["x"]), n) for n in ("DataConfig", "SparkConfig", "TrainConfig",
                    "PreprocessConfig", "SplitConfig", "TokenizerConfig", "CompressConfig",
                    "ScoreConfig", "RunConfig", "EvaluateConfig", "OutputConfig")])
                    for f in dataclasses.fields(cls)})

keys = st.one_of(st.sampled_from(REAL_KEYS), st.text(max_size=8))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                    st.text(max_size=12), st.sampled_from(
                        ["csv", "json", "orc", "local[*]", "mlp", "1e999", "2026-02-30",
                         "text_classification", "tabular_regression", "", "0", "-1"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)), max_leaves=12)
trees = st.dictionaries(st.one_of(st.sampled_from(sorted(SECTIONS)), keys), values, max_size=6)
overrides = st.lists(st.builds(lambda k, v: f"{k}={v}",
                               st.lists(keys, min_size=1, max_size=3).map(".".join),
                               st.one_of(st.text(max_size=10), scalars.map(str))), max_size=3)
BASE = {"task": "tabular_classification", "data": {"input": "x.csv", "label_column": "y"}}


def _floats(tree: Any) -> list[float]:
    if isinstance(tree, dict):
        return [f for v in tree.values() for f in _floats(v)]
    if isinstance(tree, list):
        return [f for v in tree for f in _floats(v)]
    return [tree] if isinstance(tree, float) else []


def _load(tree: dict[Any, Any], sets: list[str]) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        yaml.safe_dump(tree, fh)
    message = None
    try:
        cfg = load_config(fh.name, sets)
    except ConfigError as e:
        message = str(e)
    finally:
        Path(fh.name).unlink()
    if message is None:
        # a loaded config holds no NaN or infinity (they pass every range check)
        assert all(math.isfinite(f) for f in _floats(cfg.to_dict())), cfg
    else:
        assert message.strip()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees, sets=overrides)
def test_random_configs_load_or_fail_with_a_config_error(tree: dict[Any, Any],
                                                        sets: list[str]) -> None:
    _load(tree, sets)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(section=st.sampled_from(sorted(SECTIONS)), sub=values, sets=overrides)
def test_random_values_in_a_valid_config(section: str, sub: Any, sets: list[str]) -> None:
    tree = {**BASE, section: sub}
    if section == "data" and isinstance(sub, dict):
        tree["data"] = {**BASE["data"], **sub}
    _load(tree, sets)


TAB = "task: tabular_classification\ndata: {input: x.csv}\n"


@pytest.mark.parametrize("text", [
    "data: [1, 2]\n", TAB + "train: {lr: .nan}\n", TAB + "compress: {parity_atol: .inf}\n",
    "data: {input: x.csv, format_options: {csv: [1]}}\n", "? [a, b]\n: 1\n",
])
def test_cli_on_odd_configs_exits_2_without_traceback(tmp_path: Path, text: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib")}
    proc = subprocess.run([sys.executable, "-m", "sparkforge", "preprocess", "--config",
                           str(cfg), "--set", f"output.dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("sparkforge: config error: ")
    assert "Traceback" not in proc.stderr
