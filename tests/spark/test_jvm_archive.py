"""The driver JVM's class archive (spark/jvm_archive.py): used when whole, never fatal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sparkforge.spark import jvm_archive

# A local session in a fresh process: it prints the JVM's own arguments and counts rows.
PROBE = ("from sparkforge.config import SparkConfig\n"
         "from sparkforge.spark.session import get_session\n"
         "s = get_session(SparkConfig(master='local[1]'))\n"
         "args = s.sparkContext._jvm.java.lang.management.ManagementFactory"
         ".getRuntimeMXBean().getInputArguments()\n"
         "print('ARGS', ' '.join(str(a) for a in args))\n"
         "print('ROWS', s.range(5).count())\n")


def _probe(archive: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, jvm_archive.ENV: archive}
    env.pop("PYSPARK_SUBMIT_ARGS", None)
    return subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=tmp_path, text=True,
                          capture_output=True, timeout=300)


def test_setup_wrote_an_archive_that_sessions_start_with(tmp_path: Path) -> None:
    """`make setup` writes the venv's archive; a local session's JVM is given it."""
    path = jvm_archive.default_path()
    assert jvm_archive.usable(path), f"make setup wrote no usable class archive at {path}"
    run = _probe(str(path), tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"-XX:SharedArchiveFile={path}" in run.stdout
    assert "ROWS 5" in run.stdout


def test_a_truncated_archive_is_not_used(tmp_path: Path) -> None:
    """A JVM given a truncated archive dies of SIGBUS before Spark starts: the size recorded
    when the archive was written and checked must match, else it is not used."""
    src = jvm_archive.default_path()
    cut = tmp_path / "cut.jsa"
    with open(src, "rb") as f:
        cut.write_bytes(f.read(1_000_000))
    (tmp_path / "cut.json").write_text(json.dumps({"bytes": src.stat().st_size}))
    assert not jvm_archive.usable(cut)
    assert not jvm_archive.usable(tmp_path / "missing.jsa")
    run = _probe(str(cut), tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "SharedArchiveFile" not in run.stdout
    assert "ROWS 5" in run.stdout


def test_an_archive_the_jvm_cannot_start_with_is_dropped_and_the_run_goes_on(
        tmp_path: Path) -> None:
    """The recorded size matches but the bytes are not an archive (the JVM fails to
    start on such a file): the session starts without it and the archive is removed."""
    src = jvm_archive.default_path()
    bad = tmp_path / "bad.jsa"
    with open(src, "rb") as f:
        head = f.read(4096)
    bad.write_bytes(head + b"\0" * 4096)  # the real header, then nothing it points to
    (tmp_path / "bad.json").write_text(json.dumps({"bytes": bad.stat().st_size}))
    assert jvm_archive.usable(bad)
    run = _probe(str(bad), tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "ROWS 5" in run.stdout
    assert "SharedArchiveFile" not in run.stdout
    assert not bad.exists()
    assert not (tmp_path / "bad.json").exists()
    assert "did not start with the class archive" in run.stderr


def test_turned_off_by_the_environment(monkeypatch) -> None:
    monkeypatch.setenv(jvm_archive.ENV, "off")
    assert jvm_archive.chosen_path() is None
    assert jvm_archive.java_options(None) == ""
