"""The ``score`` stage end to end, old code vs new, side by side on one wide mixed table.

Issue 13: "on a 300k-row x 41-column CSV, ``score`` took 149 s (re-read, re-applied
preprocessing, drift, every variant on test, write) for a model that scores 500k rows/s
in one process". This runs that stage as a user does: a fresh ``python -m sparkforge
score`` process (JVM start included) on the generated CSV of ``bench_preprocess`` (40
feature columns + the label), with one trained run directory that both sides score.

The run directory is built once by the OLD code (a git worktree of ``--old``: its
``preprocess``, ``train`` (``--epochs``) and ``compress`` with ``int8_dynamic``; the
baseline variant is off, since the old compress ran out of JVM heap sampling 200k dense
rows of this table). The new code reads that older run as it is (dense ``features`` in
``preprocessed/``), so both sides score the same model files and the same variants.
Each side scores its own copy of the run directory; the sides alternate, ``--repeat``
runs each, and the ratio of the median wall times is reported.

    .venv/bin/python -m benchmarks.bench_score_stage            # 300k x 40, 2 runs each
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import machine, write_section
from benchmarks.bench_preprocess import make_table, old_worktree

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
SECTION = "## Score stage"
OLD_COMMIT = "c93e49c"


def sparkforge(lib: Path, args: list[str], log: Path, cores: int) -> float:
    """Wall seconds of one ``python -m sparkforge`` run with ``lib`` on PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": str(lib), "PYSPARK_PYTHON": sys.executable}
    cmd = [sys.executable, "-m", "sparkforge", *args, "--set", f"spark.master=local[{cores}]"]
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                            cwd=lib.parent).returncode
    wall = time.perf_counter() - t0
    if rc != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-40:])
        raise SystemExit(f"sparkforge {args[0]} failed (exit {rc}) with PYTHONPATH={lib}:"
                         f"\n{tail}")
    return wall


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=300_000, help="rows (default 300,000)")
    p.add_argument("--cols", type=int, default=40, help="feature columns (default 40)")
    p.add_argument("--repeat", type=int, default=2, help="runs of each side (default 2)")
    p.add_argument("--cores", type=int, default=2, help="local[N] for both sides (default 2)")
    p.add_argument("--epochs", type=int, default=2, help="training epochs of the run (2)")
    p.add_argument("--old", default=OLD_COMMIT, help=f"old commit (default {OLD_COMMIT})")
    p.add_argument("--cache", type=Path,
                   default=Path(tempfile.gettempdir()) / "sparkforge-bench-preprocess",
                   help="folder for the generated table (shared with bench_preprocess)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 20,000 rows, 1 run each, prints instead of writing md")
    p.add_argument("--no-md", action="store_true", help="print instead of updating "
                   "BENCHMARKS.md")
    args = p.parse_args(argv)
    if args.quick:
        args.rows, args.repeat, args.no_md = 20_000, 1, True
    if min(args.rows, args.cols, args.repeat, args.cores, args.epochs) < 1:
        p.error("--rows, --cols, --repeat, --cores and --epochs must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
    load = os.getloadavg()
    args.cache.mkdir(parents=True, exist_ok=True)
    table = args.cache / f"mixed_{args.rows}x{args.cols}.csv"
    if not table.exists():
        print(f"writing {table} ...", flush=True)
        make_table(table, args.rows, args.cols)
    walls: dict[str, list[float]] = {"old": [], "new": []}
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-score-stage-") as tmp_s:
        tmp = Path(tmp_s)
        wt = old_worktree(args.old, tmp)
        try:
            libs = {"old": wt / "lib", "new": ROOT / "lib"}
            run = tmp / "run"
            common = ["--config", str(wt / "conf" / "tabular_classification.yaml"),
                      "--set", f"data.input={table}", "--set", f"output.dir={run}",
                      "--set", f"train.epochs={args.epochs}",
                      "--set", "compress.variants=[int8_dynamic]",
                      "--set", "evaluate.baseline=false"]
            t0 = time.perf_counter()
            for stage in ("preprocess", "train", "compress"):
                sparkforge(libs["old"], [stage, *common], tmp / f"build-{stage}.log",
                           args.cores)
            print(f"run directory built by the old code in {time.perf_counter() - t0:.0f} s",
                  flush=True)
            for r in range(args.repeat):
                order = ("old", "new") if r % 2 == 0 else ("new", "old")
                for side in order:
                    mine = tmp / f"run-{side}"
                    if not mine.exists():
                        shutil.copytree(run, mine)
                    argv_side = [a if not a.startswith("output.dir=") else f"output.dir={mine}"
                                 for a in common]
                    w = sparkforge(libs[side], ["score", *argv_side,
                                                "--set", f"run.date=2026-01-{r + 1:02d}"],
                                   tmp / f"{side}-{r}.log", args.cores)
                    walls[side].append(w)
                    date = f"2026-01-{r + 1:02d}"
                    man = json.loads((mine / "scores" / f"run_date={date}" /
                                      "_run_manifest.json").read_text())
                    rows[side] = (man["rows_in"], man["rows_scored"], man["rows_quarantined"])
                    print(f"run {r + 1}/{args.repeat} {side}: {w:.1f} s, rows in/scored/"
                          f"quarantined {rows[side]}", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(wt)], check=False, capture_output=True)
    if rows["old"] != rows["new"]:
        raise SystemExit(f"the sides scored different rows: {rows}")
    med = {s: statistics.median(v) for s, v in walls.items()}
    ratio = med["old"] / med["new"]
    argv_s = " ".join(argv if argv is not None else sys.argv[1:])
    m = machine()
    import pyspark

    text = "\n".join([
        SECTION, "",
        f"- machine: nproc {m['nproc']}, {m['cpu']}, {m['ram']} RAM, Python {m['python']}, "
        f"pyspark {pyspark.__version__}; {started} UTC; load average at start "
        f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}",
        f"- data: `bench_preprocess`'s generated CSV, {args.rows:,} rows x {args.cols} "
        "feature columns + the label; one run directory built by the old code "
        f"(`tabular_classification.yaml`, {args.epochs} epochs, `int8_dynamic`, no "
        "baseline variant), copied for each side",
        f"- each run: `python -m sparkforge score` (a fresh process and JVM, "
        f"`spark.master=local[{args.cores}]`, a dated run over the whole table: every row "
        "by the selected variant, the test rows by the others, drift, the write and the "
        f"publish), old = commit {args.old} (a git worktree), new = this checkout; the two "
        f"alternate, {args.repeat} runs each; rows in / scored / quarantined "
        f"{rows['new']} on both sides", "",
        "```bash", f".venv/bin/python -m benchmarks.bench_score_stage {argv_s}".rstrip(),
        "```", "",
        "| code | median wall s | range s | runs |",
        "|---|---:|---:|---|",
        *[f"| {s} | {med[s]:.1f} | {min(v):.1f} - {max(v):.1f} | "
          f"{', '.join(f'{x:.1f}' for x in v)} |" for s, v in walls.items()],
        "", f"New is **{ratio:.2f}x** faster than old (ratio of the medians).", ""])
    print(text)
    if not args.no_md:
        write_section(BENCHMARKS_MD, SECTION, text)
    return {"walls": walls, "median": med, "ratio": ratio}


if __name__ == "__main__":
    main()
