"""Scoring: Spark ``score_df`` against single-process onnxruntime, and ``mapInPandas``
against ``pyspark.ml.functions.predict_batch_udf`` (issue 6).

    .venv/bin/python -m benchmarks.bench_score [--quick] [--repeat 2] [--cores 2]

Two workloads, each scored three ways side by side in one run (the order rotates from
round to round so that load from other jobs on the machine falls on every side):

- **tabular, Parquet -> Parquet** (comparisons 1 and 3): the Adult MLP
  (``runs/bench_tabular``, selected variant) on its preprocessed rows repeated to
  ``--tabular-rows`` rows (``features`` float32[115]).
  - ``spark``: ``get_session(SparkConfig(master=f"local[{cores}]"))``, ``spark.read.parquet``,
    ``score_df`` (mapInPandas, 1 ORT thread per task) and a Parquet write.
  - ``raw``: one process: pyarrow reads the same file in 4096-row batches, the model
    inputs come straight from the Arrow list buffers (a reshape, no per-row copy), the
    library's ``predict`` (256-row ORT calls, ``intra_op_num_threads = cores``),
    ``softmax``, and a pyarrow ``ParquetWriter`` writes the same columns.
  - ``pbudf``: the same Spark read and write with ``predict_batch_udf`` (batch_size 256,
    ``input_tensor_shapes``, a ``make_predict_fn`` that builds the session once per worker).
- **MiniLM** (comparisons 2 and 3): the fine-tuned MiniLM (``runs/demo_text``, int8 by
  default) on its preprocessed rows repeated to ``--text-rows`` rows (64 tokens, padding
  trimmed per 256-row batch on every side).
  - ``spark`` and ``pbudf`` as above (Parquet in, Parquet out).
  - ``raw``: onnxruntime alone on the same rows already in memory as numpy arrays (the
    same 256-row batches, ``intra_op_num_threads = cores``): no read, no write.

Timed: wall clock of the Spark action, or of the raw loop; session start, the model
loads (a warm-up run of every side on a slice of the input) and the input build are not.
CPU seconds are those of this process and its descendants (the JVM and its Python
workers); "others" is the CPU that other processes used meanwhile (/proc/stat), in cores.

The predictions and probabilities of a sample of rows must be equal on every side. The
row counts per batch line up on every side (row groups hold a multiple of 256 rows), so
even dynamically quantized models, whose activation scales depend on the batch, give
the same numbers. Results go to the "Scoring" section of ``BENCHMARKS.md`` (replaced on
rerun, other sections kept).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable

    import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
SECTION = "## Scoring"
TEXT_RUN = ROOT / "runs" / "demo_text"
TABULAR_RUN = ROOT / "runs" / "bench_tabular"
TABULAR_HOW = (".venv/bin/sparkforge pipeline --config conf/demo_tabular.yaml "
               "--set output.dir=runs/bench_tabular")
GOAL_E2E = 1.3     # Spark / raw, tabular Parquet -> Parquet
GOAL_MINILM = 0.9  # Spark / raw onnxruntime on in-memory batches
BATCH = 256        # rows per onnxruntime call (score.batch_size default)
ARROW_BATCH = 4096  # spark.sql.execution.arrow.maxRecordsPerBatch (the session default)
SAMPLE_ROWS = 4000
SIDES = ("spark", "raw", "pbudf")
SIDE_NAMES = {"spark": "Spark `score_df` (mapInPandas)", "pbudf": "Spark `predict_batch_udf`"}


# --- machine and CPU accounting ----------------------------------------------------------

def machine_cpu() -> float:
    """CPU seconds the whole machine has been busy (all cores; /proc/stat), 0 elsewhere."""
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0
    return (sum(f[:8]) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def tree_cpu() -> float:
    """CPU seconds (user + system) used so far by this process and its descendants (the
    Spark JVM and its Python workers), reaped children included."""
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            f = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(d.name)] = int(f[1])
        ticks[int(d.name)] = sum(int(x) for x in f[11:15])  # utime stime cutime cstime
    me, total = os.getpid(), 0
    for pid, t in ticks.items():
        p = pid
        while p > 1 and p != me:
            p = parent.get(p, 0)
        if p == me:
            total += t
    return total / os.sysconf("SC_CLK_TCK")


class Timer:
    """Wall clock, CPU of this process tree and CPU of everything else on the machine."""

    def __enter__(self) -> Timer:
        self.m0, self.c0, self.t0 = machine_cpu(), tree_cpu(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.cpu = tree_cpu() - self.c0
        self.others = max(0.0, (machine_cpu() - self.m0 - self.cpu) / self.seconds)


def machine() -> dict[str, str]:
    cpu = mem = "unknown"
    try:
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = m.group(1).strip() if m else cpu
        m = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        mem = f"{int(m.group(1)) / 2**20:.1f} GiB" if m else mem
    except OSError:
        pass
    return {"nproc": str(os.cpu_count()), "cpu": cpu, "ram": mem,
            "python": platform.python_version()}


def versions() -> str:
    from importlib import metadata

    return ", ".join(f"{p} {metadata.version(p)}" for p in
                     ("pyspark", "onnxruntime", "pyarrow", "pandas", "numpy"))


# --- inputs ------------------------------------------------------------------------------

class Workload:
    """One model and its input file: what every side scores."""

    def __init__(self, name: str, run_dir: Path, variant: str, inputs: list[str],
                 rows: int, row_group: int, work: Path) -> None:
        from sparkforge.artifacts import read_json, sha256_file

        self.name, self.inputs, self.variant = name, inputs, variant
        selection = read_json(run_dir / "compressed" / "selection.json")
        if variant == "selected":
            self.variant = variant = selection["selected"]
        self.labels: list[str] = read_json(run_dir / "model" / "labels.json")
        # A private copy of the model: other jobs may rewrite the run's compressed/ folder.
        src = run_dir / selection["paths"][variant]
        self.model = work / f"{name}-{variant}.onnx"
        if not self.model.exists() or sha256_file(self.model) != sha256_file(src):
            shutil.copyfile(src, self.model)
        self.sha256 = sha256_file(self.model)
        self.rows = -(-rows // row_group) * row_group  # whole row groups: batches line up
        self.row_group = row_group
        self.path = work / f"{name}_{self.rows}.parquet"
        build_input(run_dir / "preprocessed", self.path, self.rows, row_group,
                    ["id", "label", "split", *inputs])
        import pyarrow.parquet as pq

        first = pq.ParquetFile(self.path).read_row_group(0)
        # Fixed tensor widths (``input_tensor_shapes`` of predict_batch_udf).
        self.widths = {n: len(first.column(n)[0]) for n in inputs}
        self.head = work / f"{name}_head.parquet"  # one row group: the warm-up input
        if not self.head.exists():
            pq.write_table(first, self.head, row_group_size=row_group)


def build_input(src: Path, path: Path, rows: int, row_group: int, columns: list[str]) -> None:
    """The preprocessed rows (all splits, in id order) repeated to ``rows`` rows; ``id``
    becomes the row number so that ids stay unique. Reused when it exists."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    if path.exists() and pq.ParquetFile(path).metadata.num_rows == rows:
        return
    if not src.exists():
        raise SystemExit(f"{src} is missing: run `{TABULAR_HOW}` (tabular) or "
                         "`make demo-text` (text) first")
    t0 = time.perf_counter()
    table = ds.dataset(src, partitioning="hive").to_table(columns=columns).sort_by("id")
    # Without Spark's schema metadata: Spark would read the source's schema from it.
    table = table.select(columns).combine_chunks().replace_schema_metadata(None)
    n = table.num_rows
    tmp = path.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, table.schema) as w:
        for start in range(0, rows, row_group):
            idx = np.arange(start, min(rows, start + row_group))
            part = table.take(pa.array(idx % n))
            part = part.set_column(0, "id", pa.array(idx.astype(str)))
            w.write_table(part, row_group_size=row_group)
    tmp.replace(path)
    print(f"input: {path} ({rows:,} rows, {path.stat().st_size / 2**20:.0f} MiB, "
          f"{time.perf_counter() - t0:.0f} s)", flush=True)


# --- the single-process side ---------------------------------------------------------------

def arrow_inputs(batch: pa.RecordBatch, names: list[str]) -> dict[str, np.ndarray]:
    """Fixed-width list columns of an Arrow batch -> model inputs: a reshape of the values
    buffer (no per-row copy); padding trimmed as ``model_inputs`` does."""
    feeds: dict[str, np.ndarray] = {}
    n = batch.num_rows
    for name in names:
        values = batch.column(name).flatten().to_numpy()
        dtype = np.float32 if name == "features" else np.int64
        feeds[name] = values.reshape(n, values.size // max(n, 1)).astype(dtype, copy=False)
    if "attention_mask" in feeds:
        longest = max(int(feeds["attention_mask"].sum(axis=1).max()), 1)
        for k in ("input_ids", "attention_mask"):
            feeds[k] = np.ascontiguousarray(feeds[k][:, :longest])
    return feeds


def scored_batch(batch: pa.RecordBatch, probs: np.ndarray, labels: list[str],
                 variant: str) -> pa.RecordBatch:
    """``score_df``'s output columns for one batch, built with Arrow compute."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n, k = probs.shape
    offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
    return pa.record_batch({
        "id": batch.column("id"), "label": batch.column("label"),
        "prediction": pc.take(pa.array(labels), pa.array(probs.argmax(axis=1))),
        "probability": pa.ListArray.from_arrays(offsets, pa.array(probs.ravel())),
        "split": batch.column("split"),
        "model_variant": pc.take(pa.array([variant]), pa.array(np.zeros(n, np.int32))),
    })


def raw_session(w: Workload, cores: int) -> Any:
    from sparkforge.infer import onnx_session

    return onnx_session(str(w.model), w.sha256, threads=cores)


def raw_pipeline(w: Workload, cores: int, inp: Path, out: Path) -> dict[str, float]:
    """Parquet -> onnxruntime -> Parquet in this process."""
    import pyarrow.parquet as pq

    from sparkforge.infer import predict, softmax

    sess = raw_session(w, cores)
    rows = 0
    with Timer() as t:
        pf = pq.ParquetFile(inp)
        writer = None
        for batch in pf.iter_batches(batch_size=ARROW_BATCH,
                                     columns=["id", "label", "split", *w.inputs]):
            probs = softmax(predict(sess, arrow_inputs(batch, w.inputs), BATCH)
                            .astype(np.float64))
            res = scored_batch(batch, probs, w.labels, w.variant)
            if writer is None:
                writer = pq.ParquetWriter(out, res.schema)
            writer.write_batch(res)
            rows += batch.num_rows
        if writer is not None:
            writer.close()
    if rows != pq.ParquetFile(inp).metadata.num_rows:
        raise AssertionError(f"raw side scored {rows} rows of {inp}")
    return {"seconds": t.seconds, "cpu": t.cpu, "others": t.others}


def load_feeds(w: Workload, inp: Path) -> list[dict[str, np.ndarray]]:
    """The input's model tensors in memory, in 256-row batches (padding trimmed)."""
    import pyarrow.parquet as pq

    out = []
    for batch in pq.ParquetFile(inp).iter_batches(batch_size=BATCH, columns=w.inputs):
        out.append(arrow_inputs(batch, w.inputs))
    return out


def raw_memory(w: Workload, cores: int, feeds: list[dict[str, np.ndarray]]
               ) -> tuple[dict[str, float], np.ndarray]:
    """onnxruntime alone on in-memory batches (plus the softmax)."""
    from sparkforge.infer import softmax

    sess = raw_session(w, cores)
    outs = []
    with Timer() as t:
        for f in feeds:
            outs.append(softmax(sess.run(["logits"], f)[0].astype(np.float64)))
    return {"seconds": t.seconds, "cpu": t.cpu, "others": t.others}, np.concatenate(outs)


# --- the Spark sides ---------------------------------------------------------------------

def spark_session(cores: int) -> Any:
    from sparkforge.config import SparkConfig
    from sparkforge.spark.session import get_session

    extra = {"spark.ui.enabled": "false",
             "spark.sql.execution.arrow.maxRecordsPerBatch": str(ARROW_BATCH),
             "spark.sql.files.openCostInBytes": "0"}
    return get_session(SparkConfig(master=f"local[{cores}]", app_name="bench-score"),
                       extra=extra)


def read_input(spark: Any, inp: Path, partitions: int) -> Any:
    """The input as ``partitions`` partitions of whole row groups."""
    split = max(1 << 16, -(-inp.stat().st_size // partitions))
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(split))
    return spark.read.parquet(str(inp))


def spark_score_df(spark: Any, w: Workload, df: Any) -> Any:
    from sparkforge.infer import score_df

    return score_df(df, model_path=str(w.model), sha256=w.sha256, inputs=w.inputs,
                    labels=w.labels, variant=w.variant, batch_size=BATCH, threads=1)


def make_pbudf(w: Workload) -> Any:
    """``predict_batch_udf`` on the same model: returns struct<prediction, probability>."""
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import types as T

    model, sha, labels, names = str(w.model), w.sha256, list(w.labels), list(w.inputs)

    def make_predict_fn() -> Callable[..., dict[str, np.ndarray]]:
        # Runs once per Python worker (pyspark's ModelCache keeps the returned function).
        import onnxruntime as ort

        from sparkforge.artifacts import sha256_file
        from sparkforge.infer import softmax

        if sha256_file(Path(model)) != sha:
            raise RuntimeError(f"{model} changed since the benchmark started")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        label_arr = np.array(labels, dtype=object)

        def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            if "attention_mask" in feeds:  # trim padding as score_df does
                longest = max(int(feeds["attention_mask"].sum(axis=1).max()), 1)
                feeds = {k: np.ascontiguousarray(v[:, :longest]) for k, v in feeds.items()}
            p = softmax(sess.run(["logits"], feeds)[0].astype(np.float64))
            return {"prediction": label_arr[p.argmax(axis=1)], "probability": p}

        if names == ["features"]:
            def predict_tabular(features: np.ndarray) -> dict[str, np.ndarray]:
                return run({"features": features.astype(np.float32, copy=False)})
            return predict_tabular

        def predict_text(input_ids: np.ndarray, attention_mask: np.ndarray
                         ) -> dict[str, np.ndarray]:
            return run({"input_ids": input_ids.astype(np.int64, copy=False),
                        "attention_mask": attention_mask.astype(np.int64, copy=False)})
        return predict_text

    return predict_batch_udf(
        make_predict_fn,
        return_type=T.StructType([T.StructField("prediction", T.StringType()),
                                  T.StructField("probability", T.ArrayType(T.DoubleType()))]),
        batch_size=BATCH, input_tensor_shapes=[[w.widths[n]] for n in names])


def spark_pbudf(udf: Any, w: Workload, df: Any) -> Any:
    from pyspark.sql import functions as F

    return (df.select("id", "label", udf(*w.inputs).alias("s"), "split")
            .select("id", "label", "s.prediction", "s.probability", "split",
                    F.lit(w.variant).alias("model_variant")))


def spark_run(spark: Any, plan: Callable[[Any], Any], inp: Path, out: Path,
              partitions: int) -> dict[str, float]:
    df = plan(read_input(spark, inp, partitions))
    with Timer() as t:
        df.write.mode("overwrite").parquet(str(out))
    return {"seconds": t.seconds, "cpu": t.cpu, "others": t.others}


# --- checks ------------------------------------------------------------------------------

def sample_ids(rows: int) -> list[int]:
    rng = np.random.default_rng(42)
    return sorted({*range(min(rows, 500)),
                   *rng.choice(rows, size=min(rows, SAMPLE_ROWS), replace=False).tolist()})


def read_scores(path: Path, ids: list[int]) -> dict[int, tuple[str, np.ndarray]]:
    import pyarrow.dataset as ds

    want = [str(i) for i in ids]
    t = ds.dataset(path).to_table(columns=["id", "prediction", "probability"],
                                  filter=ds.field("id").isin(want))
    return {int(i): (p, np.asarray(q)) for i, p, q in
            zip(t.column("id").to_pylist(), t.column("prediction").to_pylist(),
                t.column("probability").to_pylist(), strict=True)}


def compare(name: str, ref: dict[int, tuple[str, np.ndarray]],
            got: dict[int, tuple[str, np.ndarray]]) -> float:
    """Same predictions on every sampled row; returns the largest probability difference."""
    if ref.keys() != got.keys():
        raise AssertionError(f"{name}: {len(ref)} vs {len(got)} sampled rows")
    worst = 0.0
    for i, (pred, prob) in ref.items():
        p2, q2 = got[i]
        if pred != p2:
            raise AssertionError(f"{name}: row {i} predicted {pred!r} vs {p2!r} "
                                 f"(probabilities {prob} vs {q2})")
        worst = max(worst, float(np.abs(prob - q2).max()))
    if worst > 1e-5:
        raise AssertionError(f"{name}: probabilities differ by up to {worst:.2e}")
    return worst


def from_memory(probs: np.ndarray, labels: list[str], ids: list[int]
                ) -> dict[int, tuple[str, np.ndarray]]:
    return {i: (labels[int(probs[i].argmax())], probs[i]) for i in ids}


# --- report ------------------------------------------------------------------------------

def spread(xs: list[float]) -> str:
    return f"{min(xs):,.0f}-{max(xs):,.0f}"


def med(xs: list[float]) -> float:
    return float(statistics.median(xs))


def render(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [SECTION, "", "```bash", res["command"], "```", "",
             f"- {res['date']}; machine: nproc {m['nproc']}, {m['cpu']}, {m['ram']} RAM, "
             f"Python {m['python']}; {res['versions']}",
             f"- **Other engineers' jobs shared this machine while it ran**: the \"others\" "
             "column is the CPU that processes outside this benchmark used during each timed "
             "run (/proc/stat), in cores out of "
             f"{m['nproc']}. Each side ran {res['repeat']} times, alternating with the others "
             "(the order rotates per round); figures are medians with the range over runs.",
             f"- Spark: `get_session(SparkConfig(master=\"local[{res['cores']}]\"))`, "
             f"{res['partitions']} input partitions of whole row groups, Arrow batches of "
             f"{ARROW_BATCH:,} rows, {BATCH} rows per onnxruntime call, 1 ORT thread per task; "
             f"raw: one process, `intra_op_num_threads={res['cores']}`, the same 4,096-row "
             f"batches and {BATCH}-row calls. Timed: the Spark write action or the raw loop; "
             "session start, model loads (a warm-up run of every side) and input build not.",
             ""]
    for wl in res["workloads"]:
        runs = wl["runs"]
        rate = {s: [r[s]["rate"] for r in runs] for s in SIDES}
        lines += [f"### {wl['title']}", "", wl["what"], "",
                  "| side | rows/s (median) | range | CPU s (median) | others' cores |",
                  "|---|---:|---:|---:|---:|"]
        for s in SIDES:
            others = ", ".join(f"{r[s]['others']:.2f}" for r in runs)
            lines.append(f"| {wl['side_names'][s]} | {med(rate[s]):,.0f} | {spread(rate[s])} "
                         f"| {med([r[s]['cpu'] for r in runs]):.0f} | {others} |")
        lines.append("")
        for label, num, den, goal in wl["ratios"]:
            per_run = [r[num]["rate"] / r[den]["rate"] for r in runs]
            ratio = med(rate[num]) / med(rate[den])
            verdict = "" if goal is None else (
                f" (goal >= {goal}: **{'met' if ratio >= goal else 'NOT met'}**)")
            lines.append(f"- {label}: **{ratio:.2f}x**{verdict}; per round "
                         f"{', '.join(f'{q:.2f}' for q in per_run)}")
        lines += [f"- equal on {wl['checked']:,} sampled rows: predictions identical on all "
                  f"sides, largest probability difference {wl['max_diff']:.1e}", ""]
    if res.get("notes"):
        lines += [*res["notes"], ""]
    return "\n".join(lines)


def write_section(md: Path, text: str) -> None:
    """Replace this benchmark's section of ``md`` (or append it); other sections are kept.
    The file is re-read right before writing: other benchmarks write their own sections."""
    body = md.read_text() if md.exists() else (
        "# Benchmarks\n\nSide-by-side ratio benchmarks (`benchmarks/`): each section is "
        "written by its benchmark and replaced when it is rerun.\n")
    start = body.find(SECTION + "\n")
    if start < 0:
        body = body.rstrip("\n") + "\n\n" + text
    else:
        nxt = re.search(r"^## ", body[start + len(SECTION) + 1:], re.M)
        end = start + len(SECTION) + 1 + nxt.start() if nxt else len(body)
        rest = body[end:]
        body = body[:start] + text.rstrip("\n") + "\n" + ("\n" + rest if rest else "")
    md.write_text(body)


# --- main --------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: small inputs, one round, BENCHMARKS.md untouched")
    p.add_argument("--tabular-rows", type=int, default=2_097_152,
                   help="tabular rows (default 2,097,152; rounded up to whole row groups)")
    p.add_argument("--text-rows", type=int, default=4096, help="MiniLM rows (default 4,096)")
    p.add_argument("--text-variant", default="int8_dynamic",
                   help="MiniLM variant from runs/demo_text (default int8_dynamic)")
    p.add_argument("--tabular-variant", default="selected",
                   help="tabular variant from runs/bench_tabular (default: the selected one)")
    p.add_argument("--cores", type=int, default=2, help="cores for each side (default 2)")
    p.add_argument("--repeat", type=int, default=2, help="rounds (default 2)")
    p.add_argument("--partitions", type=int, default=0, help="default 4 x cores")
    p.add_argument("--workdir", type=Path,
                   default=Path(tempfile.gettempdir()) / "sparkforge-bench-score")
    p.add_argument("--no-md", action="store_true", help="do not update BENCHMARKS.md")
    p.add_argument("--note", action="append", default=[], help="a line for BENCHMARKS.md")
    args = p.parse_args(argv)
    if args.quick:
        args.tabular_rows, args.text_rows, args.repeat = 65_536, 512, 1
        args.no_md = True
    if min(args.tabular_rows, args.text_rows, args.cores, args.repeat) < 1:
        p.error("--tabular-rows, --text-rows, --cores and --repeat must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    cores, partitions = args.cores, args.partitions or 4 * args.cores
    if not (TABULAR_RUN / "compressed" / "selection.json").exists():
        raise SystemExit(f"{TABULAR_RUN} has no trained model: run `{TABULAR_HOW}` first "
                         "(about 2 minutes)")
    tab = Workload("tabular", TABULAR_RUN, args.tabular_variant, ["features"],
                   args.tabular_rows, 32_768 if args.tabular_rows >= 262_144 else 4096, work)
    txt = Workload("text", TEXT_RUN, args.text_variant, ["input_ids", "attention_mask"],
                   args.text_rows, 512, work)
    spark = spark_session(cores)
    udfs = {w.name: make_pbudf(w) for w in (tab, txt)}
    plans: dict[str, dict[str, Callable[[Any], Any]]] = {
        w.name: {"spark": lambda df, w=w: spark_score_df(spark, w, df),
                 "pbudf": lambda df, w=w: spark_pbudf(udfs[w.name], w, df)}
        for w in (tab, txt)}
    feeds = load_feeds(txt, txt.path)

    # Warm-up (not timed): Python workers start and load each model once; the JVM
    # compiles the hot paths; the raw sessions load.
    t0 = time.perf_counter()
    for w in (tab, txt):
        for s in ("spark", "pbudf"):
            spark_run(spark, plans[w.name][s], w.head, work / f"warm_{w.name}_{s}", cores)
        raw_pipeline(w, cores, w.head, work / f"warm_{w.name}_raw.parquet")
    raw_memory(txt, cores, feeds[:2])
    print(f"warm-up: {time.perf_counter() - t0:.0f} s", flush=True)

    results: dict[str, list[dict[str, dict[str, float]]]] = {"tabular": [], "text": []}
    last_probs = np.zeros(0)
    for i in range(args.repeat):
        order = SIDES[i % 3:] + SIDES[:i % 3]
        for w in (tab, txt):
            run: dict[str, dict[str, float]] = {}
            for s in order:
                out = work / f"out_{w.name}_{s}"
                if s != "raw":
                    r = spark_run(spark, plans[w.name][s], w.path, out, partitions)
                elif w is tab:
                    r = raw_pipeline(w, cores, w.path, out.with_suffix(".parquet"))
                else:
                    r, last_probs = raw_memory(w, cores, feeds)
                r["rate"] = w.rows / r["seconds"]
                run[s] = r
            results[w.name].append(run)
            print(f"round {i + 1} {w.name}: " + ", ".join(
                f"{s} {run[s]['rate']:,.0f} rows/s ({run[s]['seconds']:.1f} s, "
                f"{run[s]['cpu']:.0f} CPU s, others {run[s]['others']:.2f})" for s in SIDES),
                flush=True)

    # Checks: the last round's outputs.
    checks = {}
    for w in (tab, txt):
        ids = sample_ids(w.rows)
        ref = read_scores(work / f"out_{w.name}_spark", ids)
        if len(ref) != len(ids):
            raise AssertionError(f"{w.name}: Spark output lacks sampled rows")
        raw = (read_scores(work / f"out_{w.name}_raw.parquet", ids) if w is tab
               else from_memory(last_probs, w.labels, ids))
        d1 = compare(f"{w.name} raw vs Spark", ref, raw)
        d2 = compare(f"{w.name} predict_batch_udf vs Spark", ref,
                     read_scores(work / f"out_{w.name}_pbudf", ids))
        checks[w.name] = (len(ids), max(d1, d2))
    spark.stop()
    res = report(args, argv, tab, txt, results, checks, partitions)
    if not args.no_md:
        write_section(BENCHMARKS_MD, render(res))
        print(f"updated {BENCHMARKS_MD}")
    return res


def report(args: argparse.Namespace, argv: list[str] | None, tab: Workload, txt: Workload,
           results: dict[str, list[dict[str, dict[str, float]]]],
           checks: dict[str, tuple[int, float]], partitions: int) -> dict[str, Any]:
    workloads = [
        {"title": f"Tabular, Parquet -> Parquet ({tab.rows:,} rows)",
         "what": (f"Adult MLP (`{tab.variant}`, `features` float32[115]), the preprocessed "
                  f"rows repeated to {tab.rows:,} rows ({tab.path.stat().st_size / 2**20:.0f} "
                  "MiB of Parquet); every side reads the file, scores and writes `id, label, "
                  "prediction, probability, split, model_variant` as snappy Parquet."),
         "side_names": {**SIDE_NAMES, "raw": "single process: pyarrow + onnxruntime"},
         "ratios": [("Spark / single process (comparison 1)", "spark", "raw", GOAL_E2E),
                    ("mapInPandas / predict_batch_udf (comparison 3)", "spark", "pbudf",
                     None)],
         "runs": results["tabular"], "checked": checks["tabular"][0],
         "max_diff": checks["tabular"][1]},
        {"title": f"MiniLM ({txt.rows:,} rows)",
         "what": (f"MiniLM fine-tuned on Rotten Tomatoes (`{txt.variant}`), the preprocessed "
                  f"rows repeated to {txt.rows:,} rows; Spark sides read Parquet and write "
                  "Parquet, the raw side runs onnxruntime on the same batches already in "
                  "memory."),
         "side_names": {**SIDE_NAMES, "raw": "raw onnxruntime, in-memory batches"},
         "ratios": [("Spark / raw onnxruntime (comparison 2)", "spark", "raw", GOAL_MINILM),
                    ("mapInPandas / predict_batch_udf (comparison 3)", "spark", "pbudf",
                     None)],
         "runs": results["text"], "checked": checks["text"][0],
         "max_diff": checks["text"][1]},
    ]
    for wl in workloads:
        rate = {s: [r[s]["rate"] for r in wl["runs"]] for s in SIDES}
        print(f"{wl['title']}: " + ", ".join(
            f"{s} {med(rate[s]):,.0f} rows/s ({spread(rate[s])})" for s in SIDES) + "; " +
            ", ".join(f"{a}/{b} {med(rate[a]) / med(rate[b]):.2f}"
                      for _, a, b, _ in wl["ratios"]))
    return {
        "command": " ".join([".venv/bin/python -m benchmarks.bench_score",
                             *(argv if argv is not None else sys.argv[1:])]),
        "date": dt.date.today().isoformat(), "machine": machine(), "versions": versions(),
        "cores": args.cores, "repeat": args.repeat, "partitions": partitions,
        "workloads": workloads, "notes": args.note,
    }


if __name__ == "__main__":
    out = main()
    print(json.dumps({w["title"]: w["checked"] for w in out["workloads"]}))
