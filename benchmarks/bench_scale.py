"""Scale: preprocess, one capped training epoch and score at growing row counts.

For each size in ``--rows`` (default 1M, 5M, 20M): ``sparkforge generate`` writes a
synthetic tabular table (Parquet, 6 numeric + 4 categorical columns, cached between
runs), then the stages run as fresh ``python -m sparkforge`` processes, as a user runs
them: ``preprocess``, ``train`` (one epoch, ``--train-steps`` steps: training time is
per step, not per row), ``compress`` (fp32 only) and ``score`` (a dated run over the
whole table). A sampler reads /proc every 0.25 s and keeps, per stage, the peak resident
memory of the driver (the CLI process), the JVM and the Python workers (each the peak of
the sum over that kind's processes), and the stage's wall time.

The section reports every figure and the ratios time(largest)/time(smallest) and peak
memory(largest)/peak memory(smallest) for preprocess and score: with rows x20, time
should grow at most x21 (linear) and memory not at all (Arrow batches bounded, nothing
collected, caches released).

    .venv/bin/python -m benchmarks.bench_scale                        # 1M, 5M, 20M
    .venv/bin/python -m benchmarks.bench_scale --rows 200000 --no-md  # a smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks._common import machine, write_section

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
SECTION = "## Scale"
STAGES = ("preprocess", "train", "compress", "score")
KINDS = ("driver", "jvm", "python_workers")
RUN_DATE = "2026-01-01"
# Rows per generated file (one Parquet row group each) at every size: the sizes then
# differ in the number of files, not in what one task reads at a time. (With the
# generator's default of a file per million rows, 1M rows made 500k-row row groups and
# 20M made 1M-row ones: twice the Parquet read buffers per task at 20M.)
ROWS_PER_FILE = 500_000


def _proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, resident kB, command line) for every process readable."""
    out: dict[int, tuple[int, int, str]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            rss = 0
            for line in (d / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                    break
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        out[int(d.name)] = (ppid, rss, cmd)
    return out


def _kind(pid: int, root: int, cmd: str) -> str:
    if pid == root:
        return "driver"
    if "java" in cmd.split(" ", 1)[0]:
        return "jvm"
    if "pyspark" in cmd or "python" in cmd:
        return "python_workers"  # pyspark.daemon / worker processes, torchrun ranks
    return "other"


class PeakMemory:
    """Samples the process tree under ``root`` and keeps each kind's peak summed RSS."""

    def __init__(self, root: int, every_s: float = 0.25) -> None:
        self.root, self.every_s = root, every_s
        self.peak_kb = dict.fromkeys(KINDS, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            table = _proc_table()
            sums = dict.fromkeys(KINDS, 0)
            for pid, (_, rss, cmd) in table.items():
                p = pid
                while p > 1 and p != self.root:
                    p = table.get(p, (0, 0, ""))[0]
                if p == self.root:
                    kind = _kind(pid, self.root, cmd)
                    if kind in sums:
                        sums[kind] += rss
            for k in KINDS:
                self.peak_kb[k] = max(self.peak_kb[k], sums[k])
            self._stop.wait(self.every_s)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def run_cli(args: list[str], log: Path, driver_memory: str = "") -> dict[str, Any]:
    """One ``python -m sparkforge`` run: wall seconds and peak MiB per kind."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib"), "PYSPARK_PYTHON": sys.executable}
    if driver_memory:
        env["SPARKFORGE_DRIVER_MEMORY"] = driver_memory
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "sparkforge", *args], env=env,
                                stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
        with PeakMemory(proc.pid) as mem:
            rc = proc.wait()
    wall = time.perf_counter() - t0
    if rc != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-40:])
        raise SystemExit(f"sparkforge {args[0]} failed (exit {rc}):\n{tail}")
    return {"wall_s": wall, **{f"{k}_mib": v / 1024 for k, v in mem.peak_kb.items()}}


def stage_args(stage: str, table: Path, out: Path, cores: int, steps: int) -> list[str]:
    sets = {
        "data.input": str(table), "data.format": "parquet", "data.id_column": "id",
        "data.label_column": "label", "output.dir": str(out),
        "spark.master": f"local[{cores}]", "train.epochs": "1",
        "train.max_steps_per_epoch": str(steps), "compress.variants": "[]",
        "evaluate.baseline": "false", "run.date": RUN_DATE, "score.input": str(table),
    }
    argv = [stage, "--config", str(ROOT / "conf" / "tabular_classification.yaml")]
    for k, v in sets.items():
        argv += ["--set", f"{k}={v}"]
    return argv


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="1000000,5000000,20000000",
                   help="comma-separated sizes, smallest first (default 1M,5M,20M)")
    p.add_argument("--cores", type=int, default=2, help="local[N] (default 2)")
    p.add_argument("--train-steps", type=int, default=200,
                   help="training steps in the one epoch (default 200)")
    p.add_argument("--cache", type=Path,
                   default=Path(tempfile.gettempdir()) / "sparkforge-bench-scale",
                   help="folder for the generated tables and runs (tables are kept)")
    p.add_argument("--driver-memory", default="2g",
                   help="the local JVM's heap for every stage and size (default 2g): one "
                   "fixed heap, so that memory flat in the rows means the largest size "
                   "ran in the heap the smallest had (G1 grows a heap towards its cap)")
    p.add_argument("--no-md", action="store_true", help="print instead of updating "
                   "BENCHMARKS.md")
    args = p.parse_args(argv)
    try:
        args.sizes = [int(x) for x in args.rows.split(",")]
    except ValueError:
        p.error(f"--rows {args.rows!r}: use comma-separated integers, e.g. 1000000,5000000")
    if min(args.sizes) < 1 or args.cores < 1 or args.train_steps < 1:
        p.error("--rows, --cores and --train-steps must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import shutil

    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
    load = os.getloadavg()
    args.cache.mkdir(parents=True, exist_ok=True)
    results: dict[int, dict[str, Any]] = {}
    for n in args.sizes:
        files = -(-n // ROWS_PER_FILE)
        table = args.cache / f"tabular_{n}_{files}files"
        res: dict[str, Any] = {}
        if not (table / "_SUCCESS").exists():
            res["generate"] = run_cli(["generate", "--rows", str(n), "--task",
                                       "tabular_classification", "--out", str(table),
                                       "--partitions", str(files),
                                       "--master", f"local[{args.cores}]"],
                                      args.cache / f"generate-{n}.log", args.driver_memory)
        out = args.cache / f"run_{n}"
        shutil.rmtree(out, ignore_errors=True)
        for stage in STAGES:
            res[stage] = run_cli(stage_args(stage, table, out, args.cores, args.train_steps),
                                 args.cache / f"{stage}-{n}.log", args.driver_memory)
            print(f"{n:,} rows {stage}: {json.dumps(res[stage])}", flush=True)
        manifest = json.loads((out / "manifest.json").read_text())
        res["rows_scored"] = _find(manifest, "rows_scored")
        res["rows_quarantined"] = _find(manifest, "rows_quarantined")
        results[n] = res
        shutil.rmtree(out, ignore_errors=True)
    text = _section(args, results, started, load)
    if args.no_md:
        print(text)
    else:
        write_section(BENCHMARKS_MD, SECTION, text)
        print(f"wrote {SECTION} to {BENCHMARKS_MD}")
    return {"results": results}


def _find(d: Any, key: str) -> Any:
    """The first value of ``key`` anywhere in a nested manifest (the dated score run's)."""
    if isinstance(d, dict):
        if key in d:
            return d[key]
        for v in d.values():
            found = _find(v, key)
            if found is not None:
                return found
    return None


def _section(args: argparse.Namespace, results: dict[int, dict[str, Any]], started: str,
             load: tuple[float, float, float]) -> str:
    import pyspark

    m = machine()
    sizes = sorted(results)
    lines = [
        SECTION, "",
        f"- machine: nproc {m['nproc']}, {m['cpu']}, {m['ram']} RAM, Python {m['python']}, "
        f"pyspark {pyspark.__version__}; {started} UTC; load average at start "
        f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}",
        f"- command: `.venv/bin/python -m benchmarks.bench_scale --rows {args.rows} "
        f"--cores {args.cores} --train-steps {args.train_steps} --driver-memory "
        f"{args.driver_memory}`",
        "- data: `sparkforge generate --task tabular_classification` (Parquet; 6 numeric, "
        f"4 categorical columns, ~40% positive; files of {ROWS_PER_FILE:,} rows, one "
        "row group each, at every size); each stage a fresh `python -m sparkforge` "
        f"process on local[{args.cores}] (JVM start included) with a "
        f"{args.driver_memory} JVM heap at every size; train: 1 epoch of "
        f"{args.train_steps} steps; compress: fp32 only; score: a dated run over the "
        "whole table. Memory: peak resident set, summed over each kind's processes, "
        "sampled every 0.25 s.", "",
        "| rows | stage | wall s | driver MiB | JVM MiB | Python workers MiB |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for n in sizes:
        for stage in STAGES:
            r = results[n][stage]
            lines.append(f"| {n:,} | {stage} | {r['wall_s']:.1f} | {r['driver_mib']:.0f} | "
                         f"{r['jvm_mib']:.0f} | {r['python_workers_mib']:.0f} |")
    lo, hi = sizes[0], sizes[-1]
    if hi > lo:
        lines += ["", f"Ratios, {hi:,} rows against {lo:,} (rows x{hi / lo:.0f}):", ""]
        for stage in ("preprocess", "train", "score"):
            a, b = results[lo][stage], results[hi][stage]
            mem = "; ".join(f"{k.replace('_', ' ')} x{b[k + '_mib'] / max(a[k + '_mib'], 1):.2f}"
                            for k in KINDS)
            lines.append(f"- {stage}: time x{b['wall_s'] / a['wall_s']:.2f}; peak memory "
                         f"{mem}")
    lines += ["", "Rows scored / quarantined per size: " + "; ".join(
        f"{n:,}: {results[n]['rows_scored']:,} / {results[n]['rows_quarantined']:,}"
        for n in sizes) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
