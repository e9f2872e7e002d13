"""Stages are siblings: no module under ``sparkforge/jobs/`` imports another one (the
dispatcher in ``jobs/__init__`` resolves ``run_<stage>`` by name from a table), and the
run directory's layout has one owner (``sparkforge.rundir``). Static checks (ast) and
path arithmetic: well under a second, no Spark."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sparkforge.jobs as jobs
from sparkforge import rundir

JOBS = Path(jobs.__file__).parent
STAGE_MODULES = {p.stem for p in JOBS.glob("*.py") if p.stem != "__init__"}

# Imports between stages still to be removed, with the branch that removes them. The
# test fails when one of these is gone too, so that the entry goes with it.
PENDING: set[tuple[str, str]] = set()


def stage_imports(path: Path) -> set[str]:
    """The ``sparkforge.jobs.<stage>`` modules that ``path`` imports, however spelled
    (absolute, ``from sparkforge.jobs import <stage>``, relative), at any depth."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ("sparkforge.jobs" + (f".{node.module}" if node.module else "")
                    if node.level else node.module or "")
            names = [base, *(f"{base}.{a.name}" for a in node.names)]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[:2] == ["sparkforge", "jobs"] and len(parts) > 2 \
                    and parts[2] in STAGE_MODULES:
                found.add(".".join(parts[:3]))
    return found


def test_the_check_sees_every_spelling_of_a_stage_import(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("import sparkforge.jobs.score\n"
                   "def f():\n    from sparkforge.jobs.compress import run_compress\n"
                   "from sparkforge.jobs import train, quality_stop\n"
                   "from .evaluate import run_evaluate\n"
                   "from sparkforge.jobs import STAGES\n")
    assert stage_imports(src) == {"sparkforge.jobs.score", "sparkforge.jobs.compress",
                                  "sparkforge.jobs.train", "sparkforge.jobs.evaluate"}


def test_no_job_imports_another_job() -> None:
    assert {"preprocess", "train", "compress", "score", "evaluate"} <= STAGE_MODULES
    seen = {(p.stem, m) for p in JOBS.glob("*.py") for m in stage_imports(p)
            if m != f"sparkforge.jobs.{p.stem}"}
    assert seen - PENDING == set(), (
        "a stage imports another stage; move what it needs into the library (run-directory "
        "paths: sparkforge.rundir; scoring: sparkforge.infer; measurement: "
        "sparkforge.compress.measure)")
    assert seen >= PENDING, f"remove the entries of PENDING that are gone: {PENDING - seen}"


@pytest.mark.parametrize("stage", ["preprocess", "train", "compress", "score", "evaluate"])
def test_the_dispatcher_finds_every_stage_by_name(stage: str) -> None:
    fn = jobs._run_fn(stage)
    assert fn.__name__ == f"run_{stage}"
    assert fn.__module__ == f"sparkforge.jobs.{stage}"


def test_the_layout_names_what_the_stages_write(tmp_path: Path) -> None:
    from sparkforge import artifacts
    from sparkforge.infer import runs

    run = rundir.RunDir(tmp_path)
    assert run.variant("int8_dynamic") == tmp_path / "compressed/int8_dynamic/model.onnx"
    assert run.split("val") == tmp_path / "preprocessed/split=val"
    assert run.selection.relative_to(tmp_path).as_posix() == runs.SELECTION
    assert run.manifest.name == artifacts.MANIFEST
    assert run.training_config.relative_to(tmp_path).as_posix() == artifacts.TRAINING_CONFIG
    # published: only the dates whose folder has _SUCCESS, oldest first
    for date, done in (("2027-01-02", True), ("2027-01-01", True), ("2027-01-03", False)):
        d = run.dated(run.scores, date)
        d.mkdir(parents=True)
        if done:
            (d / "_SUCCESS").touch()
    assert run.published_dates() == ["2027-01-01", "2027-01-02"]
    assert runs.published_dates(run.scores) == run.published_dates()
