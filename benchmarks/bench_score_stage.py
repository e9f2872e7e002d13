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

A run's wall time is a fixed part (process and JVM start, planning, the JIT compiling a
fresh JVM's code, the small jobs) and a part that grows with the rows. To tell them apart,
each round also has both sides score the first ``--fixed-rows`` rows (1,000) of the same
table with the same run directory: that run's wall time is the fixed part, and the whole
table's median minus it is the part the rows cost. Both are reported per side, with what
a ratio of 3 would leave for the new side.

``--connect`` runs the same commands through a Spark Connect server per side (each
side's own ``scripts/connect.py``, ``local[--cores]``, 4 GB, its own ``lib`` on the
server's PYTHONPATH), started once and warmed by one whole-table run that is not
counted: a long-lived JVM, as in a notebook or a shared server, which does not compile
Spark's code anew for every run. It writes its own section.

    .venv/bin/python -m benchmarks.bench_score_stage            # 300k x 40, 2 runs each
    .venv/bin/python -m benchmarks.bench_score_stage --connect  # the same, warm servers
"""

from __future__ import annotations

import argparse
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

from benchmarks.bench_preprocess import (
    arg_parser,
    checked_args,
    old_worktree,
    report,
    run_sparkforge,
    start,
    summary,
)

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Score stage"
CONNECT_SECTION = "## Score stage, through Spark Connect"
OLD_COMMIT = "c93e49c"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = arg_parser(__doc__, 2, OLD_COMMIT)
    p.add_argument("--epochs", type=int, default=2, help="training epochs of the run (2)")
    p.add_argument("--fixed-rows", type=int, default=1000,
                   help="rows of the small table whose run measures the fixed part of a "
                        "run (1,000; 0: not measured)")
    p.add_argument("--connect", action="store_true",
                   help="score through a warm Spark Connect server per side")
    args = checked_args(p, argv)
    if args.epochs < 1:
        p.error("--epochs must be >= 1")
    if not 0 <= args.fixed_rows < args.rows:
        p.error(f"--fixed-rows must be >= 0 and below --rows ({args.rows}); "
                f"got {args.fixed_rows}")
    return args


def head_table(table: Path, rows: int, out: Path) -> Path:
    """The header and the first ``rows`` rows of the CSV ``table`` (one record a line, as
    ``make_table`` writes it), written to ``out``."""
    with table.open() as src, out.open("w") as dst:
        for i, line in enumerate(src):
            if i > rows:
                break
            dst.write(line)
    return out


def wall_rows(walls: dict[str, list[float]]) -> list[str]:
    """A Markdown table of each side's median, range and runs (seconds)."""
    return ["| code | median wall s | range s | runs |", "|---|---:|---:|---|",
            *[f"| {s} | {statistics.median(v):.1f} | {min(v):.1f} - {max(v):.1f} | "
              f"{', '.join(f'{x:.1f}' for x in v)} |" for s, v in walls.items()]]


def fixed_lines(walls: dict[str, list[float]], fixed: dict[str, list[float]],
                rows: int, fixed_rows: int) -> list[str]:
    """The fixed part of a run and the part the rows cost, per side, from the medians; and
    what a new side 3x as fast as the old would have left once its fixed part is paid."""
    med = {s: statistics.median(v) for s, v in walls.items()}
    fmed = {s: statistics.median(v) for s, v in fixed.items()}
    per_rows = {s: med[s] - fmed[s] for s in med}
    lines = [
        "", f"The fixed part of a run: the same command on the first {fixed_rows:,} rows "
        "(same run directory, sides alternating):", "", *wall_rows(fixed), "",
        "| code | whole run s | fixed part s | the rows' part s |", "|---|---:|---:|---:|",
        *[f"| {s} | {med[s]:.1f} | {fmed[s]:.1f} | {per_rows[s]:.1f} |" for s in med], "",
        f"- fixed part: new is **{fmed['old'] / fmed['new']:.2f}x** faster than old",
    ]
    if per_rows["new"] > 0:
        lines.append(f"- the rows' part ({rows - fixed_rows:,} more rows): new is "
                     f"**{per_rows['old'] / per_rows['new']:.2f}x** faster than old")
    target = med["old"] / 3
    lines.append(f"- a run 3x as fast as old's median takes {target:.1f} s; the new side's fixed "
                 f"part alone is {fmed['new']:.1f} s of it ({fmed['new'] / target:.0%})")
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    started, load, table = start(args)
    walls: dict[str, list[float]] = {"old": [], "new": []}
    fixed: dict[str, list[float]] = {"old": [], "new": []}
    rows: dict[str, Any] = {}
    fixed_counts: dict[str, Any] = {}
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
                run_sparkforge(libs["old"], [stage, *common], tmp / f"build-{stage}.log",
                           args.cores)
            print(f"run directory built by the old code in {time.perf_counter() - t0:.0f} s",
                  flush=True)
            small = (head_table(table, args.fixed_rows, tmp / "fixed.csv")
                     if args.fixed_rows else None)
            envs: dict[str, dict[str, str] | None] = {"old": None, "new": None}
            if args.connect:
                roots = {"old": wt, "new": ROOT}
                for side in ("old", "new"):
                    envs[side] = {"SPARK_REMOTE": connect_up(roots[side], tmp / f"connect-{side}",
                                                             args.cores)}
                for side in ("old", "new"):  # the warm-up run, not counted
                    w, _ = score_once(libs[side], run, tmp, side, common, 0, "05", None,
                                      args.cores, envs[side])
                    print(f"warm-up {side}: {w:.1f} s", flush=True)
            for r in range(args.repeat):
                order = ("old", "new") if r % 2 == 0 else ("new", "old")
                # The whole table, then the small one (month 02): each side in turn.
                for month, source in [("01", None), *([("02", small)] if small else [])]:
                    for side in order:
                        w, counts = score_once(libs[side], run, tmp, side, common, r, month,
                                               source, args.cores, envs[side])
                        (walls if source is None else fixed)[side].append(w)
                        (rows if source is None else fixed_counts)[side] = counts
                        print(f"run {r + 1}/{args.repeat} {side} "
                              f"{'whole table' if source is None else 'fixed part'}: "
                              f"{w:.1f} s, rows in/scored/quarantined {counts}", flush=True)
        finally:
            if args.connect:
                for side, root in (("old", wt), ("new", ROOT)):
                    subprocess.run([sys.executable, "-m", "scripts.connect", "down", "--dir",
                                    str(tmp / f"connect-{side}")], cwd=root, check=False,
                                   capture_output=True)
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(wt)], check=False, capture_output=True)
    if rows["old"] != rows["new"] or fixed_counts.get("old") != fixed_counts.get("new"):
        raise SystemExit(f"the sides scored different rows: {rows} {fixed_counts}")
    if args.fixed_rows and fixed_counts["new"][0] != args.fixed_rows:
        raise SystemExit(f"the small table gave {fixed_counts['new'][0]} rows in, not "
                         f"{args.fixed_rows}")
    med, ratio, argv_s, machine_line = summary(walls, started, load, argv)
    how = ("through a Spark Connect server per side (`scripts/connect.py` of that side, "
           f"`local[{args.cores}]`, 4 GB, started once and warmed by one uncounted run)"
           if args.connect else f"(a fresh process and JVM, `spark.master=local[{args.cores}]`")
    text = "\n".join([
        CONNECT_SECTION if args.connect else SECTION, "", machine_line,
        f"- data: `bench_preprocess`'s generated CSV, {args.rows:,} rows x {args.cols} "
        "feature columns + the label; one run directory built by the old code "
        f"(`tabular_classification.yaml`, {args.epochs} epochs, `int8_dynamic`, no "
        "baseline variant), copied for each side",
        f"- each run: `python -m sparkforge score` {how}"
        f"{'; ' if args.connect else ', '}a dated run over the whole table: every row "
        "by the selected variant, the test rows by the others, drift, the write and the "
        f"publish{'' if args.connect else ')'}, old = commit {args.old} (a git worktree), "
        "new = this checkout; the two "
        f"alternate, {args.repeat} runs each; rows in / scored / quarantined "
        f"{rows['new']} on both sides", "",
        "```bash", f".venv/bin/python -m benchmarks.bench_score_stage {argv_s}".rstrip(),
        "```", "",
        *wall_rows(walls), "", f"New is **{ratio:.2f}x** faster than old (ratio of the medians).",
        *(fixed_lines(walls, fixed, args.rows, args.fixed_rows) if args.fixed_rows else []),
        ""])
    return report(args, CONNECT_SECTION if args.connect else SECTION, text, walls, med, ratio)


def connect_up(root: Path, state: Path, cores: int) -> str:
    """Start ``root``'s Spark Connect server (its ``scripts/connect.py``, its ``lib`` on the
    server's PYTHONPATH) with its state in ``state``; return its URL."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SPARK_REMOTE")}
    proc = subprocess.run([sys.executable, "-m", "scripts.connect", "up", "--port", "0",
                           "--master", f"local[{cores}]", "--driver-memory", "4g",
                           "--dir", str(state)], cwd=root, env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise SystemExit(f"the Connect server of {root} did not start:\n{proc.stderr[-3000:]}")
    return (state / "url").read_text().strip()


def score_once(lib: Path, run: Path, tmp: Path, side: str, common: list[str], r: int,
               month: str, source: Path | None, cores: int,
               env: dict[str, str] | None = None) -> tuple[float, tuple[int, ...]]:
    """(wall seconds, rows in / scored / quarantined) of one ``score`` of ``side``'s copy of
    the run directory, dated 2026-``month``-(r + 1), over ``source`` (None: the whole
    table), through the Connect server of ``env``'s SPARK_REMOTE when it has one."""
    mine = tmp / f"run-{side}"
    if not mine.exists():
        shutil.copytree(run, mine)
    argv = [a if not a.startswith("output.dir=") else f"output.dir={mine}" for a in common]
    if source is not None:
        argv += ["--set", f"data.input={source}"]
    date = f"2026-{month}-{r + 1:02d}"
    w = run_sparkforge(lib, ["score", *argv, "--set", f"run.date={date}"],
                       tmp / f"{side}-{month}-{r}.log", cores, env)
    man = json.loads((mine / "scores" / f"run_date={date}" / "_run_manifest.json").read_text())
    return w, (man["rows_in"], man["rows_scored"], man["rows_quarantined"])


if __name__ == "__main__":
    main()
