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
import json
import shutil
import subprocess
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
OLD_COMMIT = "c93e49c"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = arg_parser(__doc__, 2, OLD_COMMIT)
    p.add_argument("--epochs", type=int, default=2, help="training epochs of the run (2)")
    args = checked_args(p, argv)
    if args.epochs < 1:
        p.error("--epochs must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    started, load, table = start(args)
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
                run_sparkforge(libs["old"], [stage, *common], tmp / f"build-{stage}.log",
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
                    w = run_sparkforge(libs[side], ["score", *argv_side,
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
    med, ratio, argv_s, machine_line = summary(walls, started, load, argv)
    text = "\n".join([
        SECTION, "", machine_line,
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
    return report(args, SECTION, text, walls, med, ratio)


if __name__ == "__main__":
    main()
