"""Spark ``tokenize_df`` against raw ``tokenizers`` ``encode_batch`` on the same texts.

    .venv/bin/python -m benchmarks.bench_tokenize --rows 1000000 [--cores 2] [--repeat 5]

Both sides read the same Parquet (the demo corpus repeated to ``--rows`` rows, a row
counter appended so that rows differ; written once, not timed), NFKC-normalize the text,
encode it with the pretrained tokenizer (max length 64) and write text, ids and masks to
Parquet. Timed: wall clock from reading to the written output, nothing else (Spark
session start, tokenizer load and a warm-up run are outside the timer on both sides).

- Spark: ``get_session(SparkConfig(master=f"local[{cores}]"))``, ``tokenize_df`` and a
  Parquet write (the work the preprocess job does; ``--sink noop`` drops the write on
  both sides).
- Raw: one fresh process, ``RAYON_NUM_THREADS=cores`` set before ``tokenizers`` is
  imported, pyarrow reads the Parquet in batches, the encoder per batch, a
  ``ParquetWriter`` writes the same columns.

The sides alternate (Spark, raw, Spark, raw, ...) so that load from other jobs on the
machine falls on both; each run records the CPU seconds it used and the cores other
processes used meanwhile, and ``--max-wait S`` waits (up to S seconds) for a quiet machine
before each run. The raw side runs the encoder ``tokenize_df`` uses (``--raw-encoder
sparkforge``, the default: the same per-text work on both sides, so the ratio is Spark's
own overhead); ``--raw-encoder encode_batch`` runs plain ``encode_batch``. The ids,
masks and text of a sample of rows must be equal on both sides. Results go to the
"Tokenization" section of ``BENCHMARKS.md`` (replaced on rerun; ``--no-md`` to leave it).
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
import unicodedata
from pathlib import Path
from typing import Any

from benchmarks._common import machine, machine_cpu, tree_cpu, wait_quiet, write_section

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "data" / "rotten_tomatoes.csv"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
SECTION = "## Tokenization: Spark `tokenize_df` vs raw `tokenizers`"
GOAL = 0.8
MAX_LENGTH = 64
ROW_GROUP_ROWS = 32_768
SAMPLE_ROWS = 5_000
TUNING = (
    "Tuning (`tokenize_df`, and this benchmark's defaults): `tokenize_df` runs an Arrow "
    "UDF (no pandas); a tokenizer "
    "that pads on the right to a fixed length is encoded unpadded with `encode_batch_fast` "
    "and padded in numpy (the same ids and masks for about a quarter less CPU per text than "
    "padded `encode_batch` turned into lists); one Rayon thread per Python worker (two "
    "workers with tokenizers' default pool would run 4 threads on 2 cores); 4 input "
    "partitions per core (`spark.sql.files.maxPartitionBytes`); a warm-up run of the whole "
    "job on one row group (starts the workers, parses the tokenizer, JIT-compiles the JVM "
    "side).")
# How the headline's goal reads for each raw side.
ENCODER_NOTE = {
    "encode_batch": "against plain `encode_batch` (not the same encoder: Spark's is cheaper)",
    "sparkforge": "with the same encoder on both sides",
}
RAW_ENCODERS = {
    "encode_batch": "`tok.encode_batch(texts)` with the saved tokenizer (padding to 64 "
                    "included), ids and masks via `Encoding.ids` / `.attention_mask`",
    "sparkforge": "the encoder `tokenize_df` runs in each Spark worker "
                  "(`sparkforge.tokenize._BatchEncoder`)",
}


# --- input -------------------------------------------------------------------------------

def build_input(path: Path, rows: int) -> Path:
    """The demo corpus repeated to ``rows`` rows; reused when a file with as many rows exists."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if path.exists() and pq.ParquetFile(path).metadata.num_rows == rows:
        return path
    if not CORPUS.exists():
        raise FileNotFoundError(f"{CORPUS} is missing: run `.venv/bin/sparkforge demo-data "
                                "--out data` first")
    corpus = pacsv.read_csv(CORPUS, parse_options=pacsv.ParseOptions(newlines_in_values=True))
    texts = [t or "" for t in corpus.column("text").to_pylist()]
    labels = corpus.column("label").to_pylist()
    n = len(texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    schema = pa.schema([("id", pa.int64()), ("text", pa.string()), ("label", pa.string())])
    with pq.ParquetWriter(tmp, schema) as w:
        for start in range(0, rows, ROW_GROUP_ROWS):
            idx = range(start, min(rows, start + ROW_GROUP_ROWS))
            w.write_table(pa.table({
                "id": pa.array(idx, pa.int64()),
                "text": [f"{texts[i % n]} {i}" for i in idx],
                "label": [labels[i % n] for i in idx],
            }, schema=schema), row_group_size=ROW_GROUP_ROWS)
    tmp.replace(path)
    return path


# --- raw side (runs in its own process) ----------------------------------------------------

def raw_run(inp: Path, tokenizer_file: Path, out: Path | None, batch_rows: int,
            encoder: str = "encode_batch") -> dict[str, Any]:
    """Read, normalize, encode and write in this process; returns the timing.

    ``encoder``: "encode_batch" (the tokenizer as saved, padding included) or
    "sparkforge" (the encoder ``tokenize_df`` runs in each Python worker).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_file.read_text())
    tok.encode_batch(["warm up the thread pool"] * 256)
    ints = pa.list_(pa.int32())

    def plain(texts: list[str]) -> tuple[Any, Any]:
        encs = tok.encode_batch(texts)
        return (pa.array([e.ids for e in encs], ints),
                pa.array([e.attention_mask for e in encs], ints))

    encode = plain
    if encoder == "sparkforge":
        from sparkforge.tokenize import _BatchEncoder

        encode = _BatchEncoder(tok)
    pf = pq.ParquetFile(inp)
    schema = pa.schema([("id", pa.int64()), ("label", pa.string()), ("text", pa.string()),
                        ("input_ids", ints), ("attention_mask", ints)])
    rows = 0
    m0, c0, t0 = machine_cpu(), time.process_time(), time.perf_counter()
    writer = pq.ParquetWriter(out, schema) if out is not None else None
    for batch in pf.iter_batches(batch_size=batch_rows, columns=["id", "text", "label"]):
        texts = [unicodedata.normalize("NFKC", s or "").strip()
                 for s in batch.column("text").to_pylist()]
        ids, mask = encode(texts)
        rows += len(texts)
        if writer is not None:
            writer.write_batch(pa.record_batch(
                [batch.column("id"), batch.column("label"), pa.array(texts, pa.string()),
                 ids, mask], schema=schema))
    if writer is not None:
        writer.close()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"rows": rows, "seconds": seconds, "cpu": cpu,
            "others": max(0.0, (machine_cpu() - m0 - cpu) / seconds)}


def run_raw_process(inp: Path, tokenizer_file: Path, out: Path | None, cores: int,
                    batch_rows: int, encoder: str = "encode_batch") -> dict[str, Any]:
    env = dict(os.environ, RAYON_NUM_THREADS=str(cores), RAYON_RS_NUM_THREADS=str(cores),
               TOKENIZERS_PARALLELISM="true")
    # As a module from the repo root: the script imports benchmarks._common.
    cmd = [sys.executable, "-m", "benchmarks.bench_tokenize", "--raw-worker", "--input", str(inp),
           "--tokenizer-file", str(tokenizer_file), "--raw-batch", str(batch_rows),
           "--raw-encoder", encoder]
    if out is not None:
        cmd += ["--raw-out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"raw side failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# --- Spark side ----------------------------------------------------------------------------

def spark_session(cores: int, batch_rows: int, partitions: int, input_bytes: int,
                  worker_threads: int) -> Any:
    from sparkforge.config import SparkConfig
    from sparkforge.spark.session import get_session

    split = max(1 << 20, -(-input_bytes // partitions))  # bytes per input partition
    extra = {
        "spark.ui.enabled": "false",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(batch_rows),
        "spark.sql.files.maxPartitionBytes": str(split),
        "spark.sql.files.openCostInBytes": "0",
    }
    if worker_threads > 0:  # the Rayon pool of each Python worker (0: tokenizers' default)
        for var in ("RAYON_NUM_THREADS", "RAYON_RS_NUM_THREADS"):
            extra[f"spark.executorEnv.{var}"] = str(worker_threads)
    return get_session(SparkConfig(master=f"local[{cores}]", app_name="bench-tokenize"),
                       extra=extra)


def spark_warm_up(spark: Any, inp: Path, doc: str, work: Path, sink: bool) -> None:
    """The whole job on the input's first row group (not timed): starts one Python worker
    per core, parses the tokenizer in each and lets the JVM compile the hot paths."""
    import pyarrow.parquet as pq

    head = work / "warm_up_input.parquet"
    pq.write_table(pq.ParquetFile(inp).read_row_group(0), head)
    spark_run(spark, head, doc, work / "warm_up_out" if sink else None)
    shutil.rmtree(work / "warm_up_out", ignore_errors=True)


def spark_run(spark: Any, inp: Path, doc: str, out: Path | None) -> dict[str, Any]:
    from sparkforge.tokenize import tokenize_df

    df = tokenize_df(spark.read.parquet(str(inp)), doc, text_col="text")
    m0, c0, t0 = machine_cpu(), tree_cpu(), time.perf_counter()
    if out is None:
        df.write.format("noop").mode("overwrite").save()
    else:
        df.write.mode("overwrite").parquet(str(out))
    seconds = time.perf_counter() - t0
    cpu = tree_cpu() - c0
    others = max(0.0, (machine_cpu() - m0 - cpu) / seconds)
    parts = spark.read.parquet(str(inp)).rdd.getNumPartitions()
    return {"seconds": seconds, "cpu": cpu, "others": others, "partitions": parts}


# --- checks and report ---------------------------------------------------------------------

def parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    files = [path] if path.is_file() else sorted(path.glob("*.parquet"))
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def check_equal(spark_out: Path, raw_out: Path, rows: int) -> int:
    """Ids, masks and normalized text of a sample of rows are equal on both sides."""
    import numpy as np
    import pyarrow.parquet as pq

    rng = np.random.default_rng(42)
    sample = sorted({*range(min(rows, 1000)),
                     *rng.choice(rows, size=min(rows, SAMPLE_ROWS), replace=False).tolist()})
    cols = ["id", "text", "input_ids", "attention_mask"]
    got = []
    for p in (spark_out, raw_out):
        t = pq.read_table(p, columns=cols, filters=[("id", "in", sample)]).to_pylist()
        got.append(sorted(t, key=lambda r: r["id"]))
    s, r = got
    if not len(s) == len(r) == len(sample):
        raise AssertionError(f"sampled {len(sample)} ids, found {len(s)} (Spark) and "
                             f"{len(r)} (raw)")
    for a, b in zip(s, r, strict=True):
        if a != b or len(a["input_ids"]) != MAX_LENGTH:
            raise AssertionError(f"row {a['id']}: Spark {a} != raw {b}")
    return len(sample)


def check_slice(spark: Any, inp: Path, doc: str, tok_file: Path, cores: int,
                work: Path) -> int:
    """With ``--sink noop``: tokenize the first rows on both sides and compare."""
    import pyarrow.parquet as pq

    rows = min(SAMPLE_ROWS, pq.ParquetFile(inp).metadata.num_rows)
    head = work / "check_input.parquet"
    pq.write_table(pq.ParquetFile(inp).read_row_group(0).slice(0, rows), head)
    spark_run(spark, head, doc, work / "check_spark")
    run_raw_process(head, tok_file, work / "check_raw.parquet", cores, 8192)
    n = check_equal(work / "check_spark", work / "check_raw.parquet", rows)
    shutil.rmtree(work / "check_spark", ignore_errors=True)
    return n


def versions() -> str:
    from importlib import metadata

    return ", ".join(f"{p} {metadata.version(p)}" for p in ("pyspark", "tokenizers", "pyarrow"))


def threads(n: int) -> str:
    if n <= 0:
        return "tokenizers' default Rayon pool in each Python worker"
    return f"`spark.executorEnv.RAYON_NUM_THREADS={n}` (Rayon threads per Python worker)"


def spread(xs: list[float]) -> str:
    return f"{min(xs):,.0f}-{max(xs):,.0f}"


def render(res: dict[str, Any]) -> str:
    runs = res["runs"]
    sp = [r["spark_rate"] for r in runs]
    rw = [r["raw_rate"] for r in runs]
    pairs = [a / b for a, b in zip(sp, rw, strict=True)]
    ratio = statistics.median(sp) / statistics.median(rw)
    spark_us = statistics.median(r["spark_cpu"] for r in runs) / res["rows"] * 1e6
    raw_us = statistics.median(r["raw_cpu"] for r in runs) / res["rows"] * 1e6
    ok = "met" if ratio >= GOAL else "NOT met"
    m = res["machine"]
    lines = [
        SECTION, "",
        f"Goal: Spark >= {GOAL}x the raw rate, {ENCODER_NOTE[res['raw_encoder']]}. "
        f"**Result: {ratio:.2f}x (goal {ok}); by CPU seconds per text "
        f"{raw_us / spark_us:.2f}x.**", "",
        "```bash", res["command"], "```", "",
        f"- {res['date']}, N = {res['rows']:,} texts (the demo corpus repeated, a row counter "
        f"appended), max length {MAX_LENGTH}; output: {res['sink']}",
        f"- machine: nproc {m['nproc']}, {m['cpu']}, {m['ram']} RAM, Python {m['python']}, "
        f"{res['versions']}",
        f"- Spark: `local[{res['cores']}]`, {res['partitions']} input partitions, "
        f"`spark.sql.execution.arrow.maxRecordsPerBatch={res['batch_rows']}`, "
        f"{threads(res['worker_threads'])}; timed: the "
        "write action (session start and a warm-up run on one row group excluded)",
        f"- raw: one process, `RAYON_NUM_THREADS={res['cores']}` set before `tokenizers` is "
        f"imported, {RAW_ENCODERS[res['raw_encoder']]} on {res['raw_batch']:,}-row batches "
        "read with pyarrow; timed: read to closed output",
        f"- ids, masks and normalized text equal on both sides for {res['checked']:,} "
        "sampled rows",
        "",
        "| run | Spark texts/s | raw texts/s | ratio | Spark CPU s | raw CPU s "
        "| others' cores (Spark / raw run) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for i, (r, q) in enumerate(zip(runs, pairs, strict=True), 1):
        lines.append(f"| {i} | {r['spark_rate']:,.0f} | {r['raw_rate']:,.0f} | {q:.2f} | "
                     f"{r['spark_cpu']:.0f} | {r['raw_cpu']:.0f} | "
                     f"{r['spark_others']:.2f} / {r['raw_others']:.2f} |")
    lines += [
        f"| median | {statistics.median(sp):,.0f} | {statistics.median(rw):,.0f} | "
        f"{ratio:.2f} | | | |",
        "",
        f"Spread over {len(runs)} runs: Spark {spread(sp)}, raw {spread(rw)} texts/s; per-run "
        f"ratio {min(pairs):.2f}-{max(pairs):.2f}. \"others' cores\": CPU used by other "
        "processes on the machine during the timed part (/proc/stat), in cores.",
        "",
        f"CPU per text (median): Spark {spark_us:.0f} µs (JVM and Python workers), raw "
        f"{raw_us:.0f} µs; raw/Spark {raw_us / spark_us:.2f}: the wall-clock ratio when both "
        "sides get the same CPU share (a loaded machine). On an idle one Spark gains from its "
        "workers running fully in parallel, where the raw process has serial steps (reading "
        "ids out of the encodings, the Parquet write).",
    ]
    lines += ["", TUNING]
    if res.get("notes"):
        lines += ["", *res["notes"]]
    return "\n".join(lines) + "\n"


# --- main ----------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="texts (default 1,000,000)")
    p.add_argument("--cores", type=int, default=2, help="cores for each side (default 2)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per side (default 5)")
    p.add_argument("--sink", choices=["parquet", "noop"], default="parquet",
                   help="write the output to Parquet (default) or drop it on both sides")
    p.add_argument("--batch-rows", type=int, default=4096,
                   help="Spark spark.sql.execution.arrow.maxRecordsPerBatch (default 4096)")
    p.add_argument("--partitions", type=int, default=0,
                   help="input partitions (default 4 x cores)")
    p.add_argument("--worker-threads", type=int, default=1,
                   help="Rayon threads per Spark Python worker (0: tokenizers' default)")
    p.add_argument("--raw-batch", type=int, default=8192, help="raw encode_batch size")
    p.add_argument("--raw-encoder", choices=["encode_batch", "sparkforge"],
                   default="sparkforge",
                   help="raw side: the encoder tokenize_df runs in each Spark worker "
                        "(default: the same per-text work on both sides, the headline) or "
                        "the saved tokenizer's plain encode_batch")
    p.add_argument("--workdir", type=Path,
                   default=Path(tempfile.gettempdir()) / "sparkforge-bench-tokenize")
    p.add_argument("--max-wait", type=float, default=0.0,
                   help="before each timed run wait up to this many seconds for other "
                        "processes to use < 0.2 cores (default 0: do not wait)")
    p.add_argument("--no-md", action="store_true", help="do not update BENCHMARKS.md")
    p.add_argument("--note", action="append", default=[], help="a line for BENCHMARKS.md")
    # internal: the raw side's own process
    p.add_argument("--raw-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--tokenizer-file", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--raw-out", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    if args.raw_worker:
        print(json.dumps(raw_run(args.input, args.tokenizer_file, args.raw_out,
                                 args.raw_batch, args.raw_encoder)))
        return None
    if args.rows < 1 or args.cores < 1 or args.repeat < 1:
        raise SystemExit("--rows, --cores and --repeat must be >= 1")
    from sparkforge.tokenize import load_pretrained

    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    inp = build_input(work / f"input_{args.rows}.parquet", args.rows)
    print(f"input: {inp} ({args.rows:,} rows, {inp.stat().st_size / 2**20:.1f} MiB, "
          f"{time.perf_counter() - t0:.0f} s)", flush=True)
    doc = load_pretrained(MAX_LENGTH).to_str()
    tok_file = work / "tokenizer.json"
    tok_file.write_text(doc)
    partitions = args.partitions or 4 * args.cores
    spark = spark_session(args.cores, args.batch_rows, partitions, inp.stat().st_size,
                          args.worker_threads)
    sink = args.sink == "parquet"
    spark_warm_up(spark, inp, doc, work, sink)
    spark_out, raw_out = work / "out_spark", work / "out_raw.parquet"
    runs: list[dict[str, float]] = []
    parts = 0
    for i in range(1, args.repeat + 1):
        waited = wait_quiet(args.max_wait) if args.max_wait > 0 else 0.0
        s = spark_run(spark, inp, doc, spark_out if sink else None)
        parts = int(s["partitions"])
        if args.max_wait > 0:
            waited += wait_quiet(args.max_wait)
        r = run_raw_process(inp, tok_file, raw_out if sink else None, args.cores,
                            args.raw_batch, args.raw_encoder)
        if r["rows"] != args.rows:
            raise AssertionError(f"raw side read {r['rows']} rows, expected {args.rows}")
        run = {"spark_rate": args.rows / s["seconds"], "raw_rate": args.rows / r["seconds"],
               "spark_cpu": s["cpu"], "raw_cpu": r["cpu"], "spark_others": s["others"],
               "raw_others": r["others"]}
        runs.append(run)
        print(f"run {i}: Spark {run['spark_rate']:,.0f} texts/s ({s['seconds']:.1f} s, "
              f"{s['cpu']:.0f} CPU s, others {s['others']:.2f} cores), raw "
              f"{run['raw_rate']:,.0f} texts/s ({r['seconds']:.1f} s, {r['cpu']:.0f} CPU s, "
              f"others {r['others']:.2f} cores), ratio "
              f"{run['spark_rate'] / run['raw_rate']:.2f} (waited {waited:.0f} s for a quiet "
              "machine)", flush=True)
    if sink:
        n_spark = parquet_rows(spark_out)
        if n_spark != args.rows:
            raise AssertionError(f"Spark wrote {n_spark} rows, expected {args.rows}")
        checked = check_equal(spark_out, raw_out, args.rows)
    else:  # nothing written: check a slice computed again on both sides
        checked = check_slice(spark, inp, doc, tok_file, args.cores, work)
    spark.stop()
    res: dict[str, Any] = {
        "command": " ".join([".venv/bin/python -m benchmarks.bench_tokenize",
                             *(argv if argv is not None else sys.argv[1:])]),
        "date": dt.date.today().isoformat(), "rows": args.rows, "cores": args.cores,
        "sink": "Parquet on both sides (snappy)" if sink else "none (Spark noop writer)",
        "machine": machine(), "versions": versions(), "partitions": parts,
        "batch_rows": args.batch_rows, "worker_threads": args.worker_threads,
        "raw_batch": args.raw_batch, "raw_encoder": args.raw_encoder, "checked": checked,
        "runs": runs, "notes": args.note,
    }
    sp = [r["spark_rate"] for r in runs]
    rw = [r["raw_rate"] for r in runs]
    ratio = statistics.median(sp) / statistics.median(rw)
    print(f"Spark {statistics.median(sp):,.0f} texts/s (runs {spread(sp)}), raw "
          f"{statistics.median(rw):,.0f} texts/s (runs {spread(rw)}), ratio {ratio:.2f} "
          f"(goal >= {GOAL})")
    (work / "results.json").write_text(json.dumps(res, indent=1))
    if not args.no_md:
        write_section(BENCHMARKS_MD, SECTION, render(res))
        print(f"updated {BENCHMARKS_MD}")
    return res


if __name__ == "__main__":
    main()
