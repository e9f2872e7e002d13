"""The CLI's exit-code contract, driven through ``python -m sparkforge``: user errors exit 2
with a short message and no traceback, data-quality stops 3, runtime failures 4 with the
cause first (the traceback only with --verbose). None of these cases starts a JVM."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEXT = ROOT / "conf" / "text_classification.yaml"
TAB = ROOT / "conf" / "tabular_classification.yaml"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT / "lib"), **(env or {})}
    full_env.pop("SPARKFORGE_MASTER", None) if "SPARKFORGE_MASTER" not in (env or {}) else None
    return subprocess.run([sys.executable, "-m", "sparkforge", *args], capture_output=True,
                          text=True, timeout=120, env=full_env, cwd=ROOT)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    rows = [f"{i},c{i % 3},{'ab'[i % 2]}" for i in range(20)]
    (tmp_path / "t.csv").write_text("size,color,y\n" + "\n".join(rows) + "\n")
    with gzip.open(tmp_path / "r.csv.gz", "wt") as fh:
        fh.write("text,label\n" + "".join(f"review {i},{'ab'[i % 2]}\n" for i in range(20)))
    (tmp_path / "afile").write_text("in the way\n")
    return tmp_path


def _tab(data: Path, *sets: str) -> list[str]:
    args = ["--config", str(TAB), "--set", f"data.input={data / 't.csv'}",
            "--set", "data.label_column=y", "--set", f"output.dir={data / 'run'}"]
    for s in sets:
        args += ["--set", s]
    return args


def _score_run(data: Path) -> Path:
    """A run directory as preprocess leaves it: the training feature columns."""
    model = data / "run" / "model"
    model.mkdir(parents=True)
    (model / "preprocessor.json").write_text(json.dumps(
        {"numeric": {"size": {"mean": 0.0, "std": 1.0}}, "categorical": {"color": ["c0"]}}))
    return model


CASES = [  # (stage, extra --set values, needle in the message)
    ("preprocess", ["data.format=parquet"], "not a parquet file"),
    ("preprocess", ["data.format=orc"], "not a orc file"),
    ("preprocess", ["data.format=json"], "no line of"),
    ("preprocess", ["data.options.encoding=no-such-charset"],
     "data.options.encoding='no-such-charset': unknown encoding"),
    ("preprocess", ["spark.master=foo://bar"], "spark.master='foo://bar': not a Spark master"),
    ("preprocess", ["output.dir={data}/afile/run"], "output.dir="),
    ("score", ["score.input={data}/nope.csv"], "score.input="),
    ("score", ["score.input={data}/r.csv.gz"],
     "training feature column 'size' (model/preprocessor.json): no such column"),
    ("train", ["data.table=db.t"], "data.table='db.t': data.input="),
]


@pytest.mark.parametrize(("stage", "sets", "needle"), CASES)
def test_user_errors_exit_2_with_a_message_and_no_traceback(
        data: Path, stage: str, sets: list[str], needle: str) -> None:
    if stage == "score":
        _score_run(data)
    proc = cli(stage, *_tab(data, *[s.format(data=data) for s in sets]))
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "SparkContext" not in proc.stderr  # refused before a JVM started


def test_master_from_the_environment_is_checked(data: Path) -> None:
    proc = cli("preprocess", *_tab(data), env={"SPARKFORGE_MASTER": "local[x]"})
    assert proc.returncode == 2
    assert "SPARKFORGE_MASTER='local[x]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_compressed_header_is_read_through_its_codec(data: Path) -> None:
    proc = cli("preprocess", "--config", str(TEXT), "--set", f"data.input={data / 'r.csv.gz'}",
               "--set", "data.label_column=stars", "--set", f"output.dir={data / 'run'}")
    assert proc.returncode == 2
    assert "its columns are text, label\n" in proc.stderr


def test_a_stage_refuses_the_output_of_a_failed_stage(data: Path) -> None:
    run = data / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"stages": {"preprocess": {
        "status": "failed", "error": "DataQualityError: 9 of 10 rows were quarantined"}}}))
    for stage in ("train", "compress", "score"):
        proc = cli(stage, *_tab(data))
        assert proc.returncode == 3, proc.stderr
        assert "the preprocess stage" in proc.stderr
        assert "9 of 10 rows" in proc.stderr
        assert "sparkforge preprocess" in proc.stderr       # the fix
        assert "Traceback" not in proc.stderr
    # a rerun that passed lifts the refusal
    (run / "manifest.json").write_text(json.dumps({"stages": {
        "preprocess": {"status": "passed"}, "train": {"status": "failed", "error": "x"}}}))
    proc = cli("compress", *_tab(data))
    assert proc.returncode == 3
    assert "the train stage" in proc.stderr


def test_runtime_failure_exits_4_cause_first_traceback_only_when_verbose(data: Path) -> None:
    env = {"SPARKFORGE_FAULTS": "cli.before_session=raise"}
    proc = cli("preprocess", *_tab(data), env=env)
    assert proc.returncode == 4
    ours = [line for line in proc.stderr.splitlines() if line.startswith("sparkforge:")]
    assert ours[0] == ("sparkforge: preprocess failed: InjectedFault: injected fault at "
                       "cli.before_session")
    assert "Traceback" not in proc.stderr
    assert "--verbose" in proc.stderr
    proc = cli("preprocess", "--verbose", *_tab(data), env=env)
    assert proc.returncode == 4
    assert "Traceback" in proc.stderr
