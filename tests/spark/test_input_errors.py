"""Runs that keep almost nothing stop with what was read (exit 3), the manifest records the
failed stage, and the next stage refuses to run on its output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sparkforge.config import load_config
from sparkforge.data.prepare import DataQualityError
from sparkforge.jobs import UpstreamFailedError, stage_fn

ROOT = Path(__file__).resolve().parents[2]
TEXT = ROOT / "conf" / "text_classification.yaml"


@pytest.mark.parametrize(("content", "needles"), [
    ("", ["read 0 rows and 0 columns", "empty"]),
    ("text,label\n", ["read 0 rows with columns [text, label]", "no data rows"]),
    ("text,label\n" + "".join(f"review {i},\n" for i in range(30)),
     ["read 30 rows with columns [text, label]", "30 quarantined", "'null_label': 30",
      "e.g. a null_label row"]),
])
def test_nearly_empty_inputs_stop_with_what_was_read(spark, tmp_path: Path, content: str,
                                                     needles: list[str]) -> None:
    (tmp_path / "in.csv").write_text(content)
    cfg = load_config(TEXT, [f"data.input={tmp_path / 'in.csv'}",
                             f"output.dir={tmp_path / 'run'}"])
    with pytest.raises(DataQualityError) as e:
        stage_fn("preprocess")(spark, cfg)
    for needle in needles:
        assert needle in str(e.value)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"]["preprocess"]["status"] == "failed"
    assert needles[0] in manifest["stages"]["preprocess"]["error"]
    with pytest.raises(UpstreamFailedError, match="the preprocess stage"):
        stage_fn("train")(spark, cfg)


def _cli_env(**extra: str) -> dict[str, str]:
    import os
    import sys

    return {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"),
            "PYTHONPATH": str(ROOT / "lib"), "PYSPARK_PYTHON": sys.executable,
            "SPARKFORGE_LOG_LEVEL": "WARNING", **extra}


def test_cli_gate_stop_exits_3_and_train_refuses(tmp_path: Path) -> None:
    import subprocess
    import sys

    rows = [f"review {i},{'ab'[i % 2]}" for i in range(20)] + [f"x{i}," for i in range(10)]
    (tmp_path / "in.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    args = ["--config", str(TEXT), "--set", f"data.input={tmp_path / 'in.csv'}",
            "--set", f"output.dir={tmp_path / 'run'}"]
    run = [sys.executable, "-m", "sparkforge"]
    pre = subprocess.run([*run, "preprocess", *args], capture_output=True, text=True,
                         timeout=600, env=_cli_env(), cwd=ROOT)
    assert pre.returncode == 3, pre.stderr
    assert "10 of 30 rows" in pre.stderr
    train = subprocess.run([*run, "train", *args], capture_output=True, text=True,
                           timeout=120, env=_cli_env(), cwd=ROOT)
    assert train.returncode == 3, train.stderr      # before: trained on the gated data, exit 0
    assert "train refused: the preprocess stage" in train.stderr
    assert "Traceback" not in pre.stderr + train.stderr


def test_venv_spark_submit_works_without_activating_the_venv(tmp_path: Path) -> None:
    """The README's command: PYSPARK_PYTHON names the venv's python, which finds SPARK_HOME
    and runs the driver, with nothing of the venv on PATH."""
    import subprocess
    import sys

    submit = Path(sys.executable).parent / "spark-submit"
    (tmp_path / "in.csv").write_text("text,label\nok,a\n")
    proc = subprocess.run(
        [str(submit), "spark_jobs/pipeline.py", "--config", str(TEXT),
         "--set", f"data.input={tmp_path / 'in.csv'}", "--set", "data.label_column=stars"],
        capture_output=True, text=True, timeout=300, env=_cli_env(), cwd=ROOT)
    assert "Could not find valid SPARK_HOME" not in proc.stderr
    assert proc.returncode == 2, proc.stderr        # our preflight ran in the venv's python
    # spark-submit's PythonRunner merges the driver's stderr into its stdout
    assert "data.label_column='stars': no such column" in proc.stdout + proc.stderr
