"""Whole-stage code generation on and off: the same code, the same table, both stages.

sparkforge's sessions set ``spark.sql.codegen.wholeStage=false``
(:data:`sparkforge.spark.session.SQL_DEFAULTS`). This measures that choice: ``preprocess``
and ``score`` of ``bench_preprocess``'s generated CSV (``--rows`` x ``--cols``), each as
a fresh ``python -m sparkforge`` process (JVM start included), with this checkout's code
and ``--set spark.conf.spark.sql.codegen.wholeStage=true`` (Spark's default) or
``false`` (ours). One run directory (``tabular_classification.yaml``, 1 epoch,
``int8_dynamic``, no baseline variant) is built first and scored by both sides; the two
sides alternate, ``--repeat`` runs of each stage each.

    .venv/bin/python -m benchmarks.bench_codegen              # 300k x 40, 3 runs each
    .venv/bin/python -m benchmarks.bench_codegen --quick      # 20k rows, 1 run, no md
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.bench_preprocess import (
    arg_parser,
    checked_args,
    report,
    run_sparkforge,
    start,
    summary,
)

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Code generation"
KEY = "spark.conf.spark.sql.codegen.wholeStage"
# "old" is Spark's default, "new" sparkforge's: summary() reports old / new.
SIDES = {"old": "true", "new": "false"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = arg_parser(__doc__, 3, "")
    return checked_args(p, argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    started, load, table = start(args)
    lib = ROOT / "lib"
    walls: dict[str, dict[str, list[float]]] = {
        st: {"old": [], "new": []} for st in ("preprocess", "score")}
    with tempfile.TemporaryDirectory(prefix="bench-codegen-") as tmp_s:
        tmp = Path(tmp_s)
        cfg = str(ROOT / "conf" / "tabular_classification.yaml")
        base = ["--config", cfg, "--set", f"data.input={table}",
                "--set", "preprocess.max_quarantine_fraction=0.5",
                "--set", "train.epochs=1", "--set", "compress.variants=[int8_dynamic]",
                "--set", "evaluate.baseline=false"]
        run = tmp / "run"
        for stage in ("preprocess", "train", "compress"):
            run_sparkforge(lib, [stage, *base, "--set", f"output.dir={run}"],
                           tmp / f"build-{stage}.log", args.cores)
        for r in range(args.repeat):
            # Alternate which side goes first, so a load change hits both alike.
            order = ("old", "new") if r % 2 == 0 else ("new", "old")
            for side in order:
                conf = ["--set", f"{KEY}={SIDES[side]}"]
                w = run_sparkforge(lib, ["preprocess", *base, *conf, "--set",
                                         f"output.dir={tmp / f'pre-{side}'}"],
                                   tmp / f"pre-{side}-{r}.log", args.cores)
                walls["preprocess"][side].append(w)
                w2 = run_sparkforge(lib, ["score", *base, *conf, "--set", f"output.dir={run}",
                                          "--set", f"run.date=2026-01-{r + 1:02d}"],
                                    tmp / f"score-{side}-{r}.log", args.cores)
                walls["score"][side].append(w2)
                print(f"run {r + 1}/{args.repeat} wholeStage={SIDES[side]}: preprocess "
                      f"{w:.1f} s, score {w2:.1f} s", flush=True)
    lines = [SECTION, ""]
    ratios = {}
    for stage, times in walls.items():
        med, ratio, argv_s, machine_line = summary(times, started, load, argv)
        ratios[stage] = ratio
        if len(lines) == 2:
            lines += [
                machine_line,
                f"- data: `bench_preprocess`'s generated CSV, {args.rows:,} rows x "
                f"{args.cols} feature columns + the label; one run directory "
                "(`tabular_classification.yaml`, 1 epoch, `int8_dynamic`, no baseline "
                "variant) built first, scored by both sides",
                "- each run: `python -m sparkforge preprocess`, then `score` (a dated run "
                f"over the whole table), fresh processes on `local[{args.cores}]`, this "
                f"checkout's code with `--set {KEY}=true` (Spark's default) or `=false` "
                f"(sparkforge's); the sides alternate, {args.repeat} runs each", "",
                "```bash", f".venv/bin/python -m benchmarks.bench_codegen {argv_s}".rstrip(),
                "```", "",
                "| stage | wholeStage | median wall s | range s | runs |",
                "|---|---|---:|---:|---|"]
        for side, v in times.items():
            lines.append(f"| {stage} | {SIDES[side]} | {med[side]:.1f} | {min(v):.1f} - "
                         f"{max(v):.1f} | {', '.join(f'{x:.1f}' for x in v)} |")
    lines += [""] + [f"- {stage}: off is **{ratio:.2f}x** as fast as on (ratio of the "
                     "medians)" for stage, ratio in ratios.items()] + [""]
    flat = {f"{st}_{s}": v for st, by_side in walls.items() for s, v in by_side.items()}
    med_all = {k: statistics.median(v) for k, v in flat.items()}
    return report(args, SECTION, "\n".join(lines), flat, med_all, ratios["preprocess"])


if __name__ == "__main__":
    main()
