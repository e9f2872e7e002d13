"""Preprocess wall time, old code vs new, side by side on one wide mixed table.

Generates (once, cached) a CSV of ``--rows`` rows x ``--cols`` feature columns: numeric
columns (some with nulls), categorical columns of cardinalities from 2 to a few thousand
(some with nulls), no id column (ids come from the content hash, as with the census
table) and a binary label with ~6% positives. Then runs ``sparkforge preprocess`` on it,
as a fresh ``python -m sparkforge`` process each time (JVM start included, as a user
sees it), alternating the OLD code (a git worktree of ``--old`` in a temp dir, run with
its own PYTHONPATH) and the NEW code (this checkout's lib/), ``--repeat`` runs each, and
reports the median and range of the wall time of each and the ratio of the medians.

    .venv/bin/python -m benchmarks.bench_preprocess              # 300k x 40, 3 runs each
    .venv/bin/python -m benchmarks.bench_preprocess --quick      # 20k rows, 1 run, no md
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import machine, write_section

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
SECTION = "## Preprocess"
OLD_COMMIT = "2b3c321"
# Categorical cardinalities, cycled over the categorical columns: a census-like mix of
# small codes, a few mid-sized ones and a long tail.
CARDINALITIES = (2, 3, 5, 8, 12, 16, 24, 40, 60, 100, 300, 1000, 3000, 9, 7, 50)


# What the new code does differently, for the section (the job counts are measured).
WHAT_CHANGED = (
    "What was removed since the old code, on the driver and in Spark: the quarantine "
    "checks and the type decision are written as SQL text (one JVM call per expression "
    "instead of one per function: about a thousand round trips and their analysis for 40 "
    "columns); the type decision casts only values that can be numbers (a failed cast "
    "throws an exception in Spark: most of that scan's time went to the categorical "
    "columns), and it and the missing-value test look at a value's first code point "
    "before anything costlier; the driver JVM maps Spark's classes from the class-data-"
    "sharing archive that `make setup` writes (`spark/jvm_archive.py`: about 4.5 s less "
    "start-up); repeats are numbered on a narrow projection (a row number, the content "
    "hash, the reason, the label) and only the later or conflicting repeats are joined "
    "back, broadcast: no shuffle of every wide row; the rows read are cached once, as "
    "uncompressed columnar batches (building a compressed cache tries each encoding on "
    "each column), and the kept rows are a projection of that cache (cached only when a "
    "stratified split makes them a shuffle); each numeric "
    "column is parsed once into a double that the checks and the "
    "kept rows share (it was parsed per check); the count of kept rows, the labels, the "
    "null rates, the target's and the encoder's numeric statistics are one pass (five jobs "
    "before), grouped by reason so that it counts the quarantine too; the drift "
    "reference reuses the categorical value counts of the encoder fit "
    "and bins the numeric columns in numpy on a seeded sample of about 50,000 train rows "
    "(a Spark aggregation of a count per column and bin over every row before); sessions "
    "turn whole-stage code generation off (see \"Code generation\"); plus the changes "
    "since the old commit already on main (one-job value counts for all categorical "
    "columns, repeats numbered by the columns that can differ instead of a sort on every "
    "column). The encoded features are written compact, computed in Spark SQL "
    "(standardised numerics and one one-hot slot number per categorical column: 40 numbers "
    "a row here) instead of the dense one-hot row (821 floats here) built by an Arrow UDF, "
    "which the readers now expand per batch.")


def make_table(path: Path, rows: int, cols: int, seed: int = 7) -> None:
    """The benchmark CSV: ~60% numeric, ~40% categorical columns, a 6% positive label."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    n_cat = max(1, int(cols * 0.4))
    n_num = cols - n_cat
    data: dict[str, Any] = {}
    logit = np.full(rows, -3.3)
    for i in range(n_num):
        v = rng.normal(0, 1, rows)
        logit += 0.3 * v if i < 5 else 0.0
        s = pd.Series(np.round(v * (10 ** (i % 4)) + 50 * (i % 3), 3))
        if i % 3 == 0:  # some nulls
            s[rng.random(rows) < 0.02] = np.nan
        data[f"num_{i:02d}"] = s
    for i in range(n_cat):
        k = CARDINALITIES[i % len(CARDINALITIES)]
        # Zipf-ish frequencies: a few common values, a long tail of rare ones.
        p = 1.0 / np.arange(1, k + 1) ** 1.1
        codes = rng.choice(k, size=rows, p=p / p.sum())
        logit += 0.4 * ((codes % 5) == 1) if i < 4 else 0.0
        vals = pd.Series(np.char.add(f"c{i}_", codes.astype(str)), dtype=object)
        if i % 4 == 0:
            vals[rng.random(rows) < 0.03] = None
        data[f"cat_{i:02d}"] = vals
    label = rng.random(rows) < 1 / (1 + np.exp(-logit))
    data["label"] = np.where(label, ">50K", "<=50K")
    tmp = path.with_suffix(".tmp")
    pd.DataFrame(data).to_csv(tmp, index=False)
    tmp.replace(path)


def old_worktree(commit: str, where: Path) -> Path:
    """A detached git worktree of ``commit`` (the old code), made once per benchmark run."""
    wt = where / f"old-{commit}"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(wt),
                    commit], check=True, capture_output=True)
    return wt


def spark_jobs(event_dir: Path) -> int:
    """Spark jobs a run started, from its (uncompressed) event log."""
    n = 0
    for f in event_dir.rglob("*"):
        if f.is_file() and not f.name.startswith("appstatus"):
            n += sum('"Event":"SparkListenerJobStart"' in line for line in f.open())
    return n


def run_once(lib: Path, table: Path, out: Path, cores: int, log: Path) -> tuple[float, int]:
    """(wall seconds, Spark jobs) of one preprocess run."""
    # Each side reads its own conf (the keys changed between the two); dedupe is set
    # explicitly so that both do the same work (the new default skips it for tables).
    cfg = lib.parent / "conf" / "tabular_classification.yaml"
    # Spark's event log (set through the launcher, which both sides use alike) counts
    # the jobs of each run.
    events = log.with_suffix(".events")
    events.mkdir()
    submit = (f"--conf spark.eventLog.enabled=true --conf spark.eventLog.dir={events} "
              "--conf spark.eventLog.compress=false pyspark-shell")
    wall = run_sparkforge(lib, ["preprocess", "--config", str(cfg),
                                "--set", f"data.input={table}", "--set", f"output.dir={out}",
                                "--set", "preprocess.max_quarantine_fraction=0.5",
                                "--set", "preprocess.dedupe=true"],
                          log, cores, {"PYSPARK_SUBMIT_ARGS": submit})
    return wall, spark_jobs(events)


def run_sparkforge(lib: Path, args: list[str], log: Path, cores: int,
                   env: dict[str, str] | None = None) -> float:
    """Wall seconds of one ``python -m sparkforge`` process (a fresh JVM) with ``lib`` on
    PYTHONPATH and ``spark.master=local[cores]``; its output goes to ``log``."""
    env = {**os.environ, "PYTHONPATH": str(lib), "PYSPARK_PYTHON": sys.executable,
           **(env or {})}
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


def arg_parser(doc: str | None, repeat: int, old: str) -> argparse.ArgumentParser:
    """The old-vs-new benchmarks' options (this one's and ``bench_score_stage``'s)."""
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=300_000, help="rows (default 300,000)")
    p.add_argument("--cols", type=int, default=40, help="feature columns (default 40)")
    p.add_argument("--repeat", type=int, default=repeat,
                   help=f"runs of each side (default {repeat})")
    p.add_argument("--cores", type=int, default=2, help="local[N] for both sides (default 2)")
    p.add_argument("--old", default=old, help=f"old commit (default {old})")
    p.add_argument("--cache", type=Path,
                   default=Path(tempfile.gettempdir()) / "sparkforge-bench-preprocess",
                   help="folder for the generated table (kept between runs)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 20,000 rows, 1 run each, prints instead of writing md")
    p.add_argument("--no-md", action="store_true", help="print instead of updating "
                   "BENCHMARKS.md")
    return p


def checked_args(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = p.parse_args(argv)
    if args.quick:
        args.rows, args.repeat, args.no_md = 20_000, 1, True
    if min(args.rows, args.cols, args.repeat, args.cores) < 1:
        p.error("--rows, --cols, --repeat and --cores must be >= 1")
    return args


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return checked_args(arg_parser(__doc__, 3, OLD_COMMIT), argv)


def start(args: argparse.Namespace) -> tuple[str, tuple[float, float, float], Path]:
    """(start time, load average, the generated table: written once, then reused)."""
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
    load = os.getloadavg()
    args.cache.mkdir(parents=True, exist_ok=True)
    table = args.cache / f"mixed_{args.rows}x{args.cols}.csv"
    if not table.exists():
        print(f"writing {table} ...", flush=True)
        make_table(table, args.rows, args.cols)
    return started, load, table


def summary(walls: dict[str, list[float]], started: str, load: tuple[float, float, float],
            argv: list[str] | None) -> tuple[dict[str, float], float, str, str]:
    """(median per side, old / new ratio, the command's arguments, the machine line)."""
    import pyspark

    med = {s: statistics.median(v) for s, v in walls.items()}
    m = machine()
    line = (f"- machine: nproc {m['nproc']}, {m['cpu']}, {m['ram']} RAM, Python {m['python']}, "
            f"pyspark {pyspark.__version__}; {started} UTC; load average at start "
            f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    argv_s = " ".join(argv if argv is not None else sys.argv[1:])
    return med, med["old"] / med["new"], argv_s, line


def report(args: argparse.Namespace, section: str, text: str, walls: dict[str, list[float]],
           med: dict[str, float], ratio: float) -> dict[str, Any]:
    """Print the section, write it to BENCHMARKS.md (unless --no-md), return the figures."""
    print(text)
    if not args.no_md:
        write_section(BENCHMARKS_MD, section, text)
    return {"walls": walls, "median": med, "ratio": ratio}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    started, load, table = start(args)
    walls: dict[str, list[float]] = {"old": [], "new": []}
    jobs: dict[str, list[int]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as tmp_s:
        tmp = Path(tmp_s)
        wt = old_worktree(args.old, tmp)
        try:
            libs = {"old": wt / "lib", "new": ROOT / "lib"}
            for r in range(args.repeat):
                # Alternate which side goes first, so a load change hits both alike.
                order = ("old", "new") if r % 2 == 0 else ("new", "old")
                for side in order:
                    w, n_jobs = run_once(libs[side], table, tmp / f"run-{side}",
                                         args.cores, tmp / f"{side}-{r}.log")
                    walls[side].append(w)
                    jobs[side].append(n_jobs)
                    print(f"run {r + 1}/{args.repeat} {side}: {w:.1f} s, {n_jobs} Spark jobs",
                          flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(wt)], check=False, capture_output=True)
    med, ratio, argv_s, machine_line = summary(walls, started, load, argv)
    text = "\n".join([
        SECTION, "", machine_line,
        f"- data: a generated CSV of {args.rows:,} rows x {args.cols} feature columns "
        f"({args.cols - max(1, int(args.cols * 0.4))} numeric, {max(1, int(args.cols * 0.4))} "
        "categorical of 2 to 3,000 values, a few % nulls), no id column, a ~6% positive "
        "label",
        f"- each run: `python -m sparkforge preprocess` (a fresh process and JVM, "
        f"`spark.master=local[{args.cores}]`), old = commit {args.old} (a git worktree), "
        "new = this checkout, each with its own `conf/tabular_classification.yaml` and "
        "`preprocess.dedupe=true` (the same work on both sides); the two alternate, "
        f"{args.repeat} runs each", "",
        "```bash", f".venv/bin/python -m benchmarks.bench_preprocess {argv_s}".rstrip(), "```",
        "",
        "| code | median wall s | range s | runs | Spark jobs per run |",
        "|---|---:|---:|---|---:|",
        *[f"| {s} | {med[s]:.1f} | {min(v):.1f} - {max(v):.1f} | "
          f"{', '.join(f'{x:.1f}' for x in v)} | {max(jobs[s])} |" for s, v in walls.items()],
        "", f"New is **{ratio:.2f}x** faster than old (ratio of the medians).", "",
        WHAT_CHANGED, ""])
    return report(args, SECTION, text, walls, med, ratio)


if __name__ == "__main__":
    main()
