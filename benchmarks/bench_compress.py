"""Compressed variants against fp32: size, latency and accuracy, per run.

    .venv/bin/python -m benchmarks.bench_compress runs/demo_text runs/demo_tabular \\
        [--remeasure-latency] [--rounds 3] [--no-write]

Reads what the compress stage recorded in each run directory and writes the
"Compression" section of ``BENCHMARKS.md`` (replaced on rerun; other sections kept):

- ``compressed/selection.json``: per variant the file size, 1-thread ONNX Runtime
  latency at batch 1 and 1024 (p50), the validation-split metrics computed by the Spark
  evaluation code, parity against fp32 over the validation split and the gate's decision;
- ``metrics.json`` (when ``score`` and ``evaluate`` ran after ``compress``): every
  variant's test-split metrics;
- ``manifest.json``: the model and the config.

``--remeasure-latency`` times the variants' ONNX files again here, interleaved round by
round (fp32, v1, v2, ..., fp32, v1, ...), so that load from other jobs on a shared machine
falls on every variant alike; each figure is the median over rounds of the per-round
medians (batch 1: at least 30 calls per round; batch 1024: at least one call, more
while under half a second). The figures of a run come from the compress stage, e.g.:

    .venv/bin/sparkforge compress --config conf/demo_text.yaml --set \\
        'compress.variants=[int8_dynamic,int8_static,pruned,pruned_int8,distilled,distilled_int8,fp16]'
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import statistics
import sys
from pathlib import Path
from typing import Any

from benchmarks._common import write_section

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
SECTION = "## Compression: variants against fp32"
# Issue 5's goals for int8 on real data.
GOALS = {"size_ratio": 0.3, "latency_ratio_b1024": 0.55, "accuracy_drop": 0.01}
INT8 = ("int8_dynamic", "int8_static")
ORDER = ["fp32", "int8_dynamic", "int8_static", "fp16", "pruned", "pruned_int8", "distilled",
         "distilled_int8"]


def load_run(run: Path) -> dict[str, Any]:
    sel_path = run / "compressed" / "selection.json"
    if not sel_path.exists():
        raise SystemExit(f"{sel_path} not found: run `sparkforge compress` on {run} first")
    res: dict[str, Any] = {"run": run, "selection": json.loads(sel_path.read_text())}
    for name in ("metrics", "manifest"):
        p = run / f"{name}.json"
        res[name] = json.loads(p.read_text()) if p.exists() else {}
    return res


def remeasure_latency(res: dict[str, Any], rounds: int) -> None:
    """Time every measured variant again, interleaved; overwrite the latency figures."""
    from sparkforge.compress.measure import latency_ms
    from sparkforge.models import task_input_names
    from sparkforge.train.loader import read_split, trim_padding

    run, sel = res["run"], res["selection"]
    cfg = res["manifest"].get("config", {})
    text = cfg.get("task", "text_classification") == "text_classification"
    inputs = task_input_names(text=text)
    split = sel.get("gate_split", "val")
    rows = int(cfg.get("compress", {}).get("parity_rows", 256))
    data = read_split(run / "preprocessed" / f"split={split}", inputs)
    sample = trim_padding({k: v[:rows] for k, v in data.items()})
    n = len(next(iter(sample.values())))
    # The library's own latency loop (compress/measure.py: a fresh 1-thread session, a
    # warm-up call, the median of at least `least` calls within `budget` seconds),
    # interleaved over the variants and repeated `rounds` times.
    paths = {name: run / rel for name, rel in sel["paths"].items()}
    times: dict[str, dict[int, list[float]]] = {n: {1: [], 1024: []} for n in paths}
    load: list[float] = []
    for r in range(rounds):
        for name, path in paths.items():
            load.append(os.getloadavg()[0])
            for batch, (least, budget) in {1: (30, 0.3), 1024: (1, 0.5)}.items():
                times[name][batch].append(latency_ms(path, sample, batch, least,
                                                     budget_s=budget))
        print(f"{run.name}: round {r + 1}/{rounds} done", flush=True)
    figures = sel["variants"]
    for name, t in times.items():
        figures[name]["latency_ms_b1"] = statistics.median(t[1])
        figures[name]["latency_ms_b1024"] = statistics.median(t[1024])
    for name in times:
        figures[name]["latency_ratio_b1024"] = (figures[name]["latency_ms_b1024"]
                                                / figures["fp32"]["latency_ms_b1024"])
    res["remeasured"] = {"rounds": rounds, "rows": n,
                         "seq_len": int(sample["input_ids"].shape[1]) if text else None,
                         "load_avg_1m": [min(load), max(load)]}


def test_metrics(res: dict[str, Any]) -> None:
    """Every variant's test-split metrics, scored and computed in Spark by the pipeline's
    own functions (for runs whose metrics.json is missing or older than the variants).

    A fresh local session per variant: Python workers cache every ONNX session they
    load, and eight MiniLM sessions in one worker outgrow a shared 24 GB machine.
    """
    from sparkforge.artifacts import read_json
    from sparkforge.compress.measure import score_split, split_quality
    from sparkforge.config import SparkConfig, load_config
    from sparkforge.spark.session import get_session

    run = res["run"]
    conf = ROOT / "conf" / f"{run.name}.yaml"
    if not conf.exists():
        raise SystemExit(f"--test-metrics needs {conf} (the config that made {run})")
    cfg = load_config(conf, [f"output.dir={run}"])
    labels = read_json(run / "model" / "labels.json")
    variants = {}
    for name, rel in res["selection"]["paths"].items():
        spark = get_session(SparkConfig(master="local[2]", app_name="bench_compress"),
                            extra={"spark.ui.enabled": "false"})
        try:
            variants[name] = split_quality(score_split(spark, cfg, run / rel, name, "test"),
                                           labels)
        finally:
            spark.stop()
        print(f"{run.name}: test metrics of {name}: {variants[name].get('accuracy')}", flush=True)
    res["metrics"] = {"variants": variants, "source": "bench"}


def _f(v: Any, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) else "-"


def _ms(v: Any) -> str:
    """Milliseconds with three significant digits, never in exponent notation."""
    if not isinstance(v, (int, float)):
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}" if v >= 0.01 else f"{v:.4f}"


def _source_parameters(name: str, figures: dict[str, Any]) -> Any:
    """Parameters of the torch model a converted variant comes from (older selections
    record them only for fp32, pruned and distilled). The baseline has no torch source."""
    if name == "baseline":
        return None
    source = figures.get(name, {}).get("source") or (
        name.removesuffix("_int8") if name.endswith("_int8") and name not in INT8 else "fp32")
    return figures.get(source, {}).get("parameters")


def _params(n: Any) -> str:
    if not isinstance(n, int):
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def _title(res: dict[str, Any]) -> str:
    cfg = res["manifest"].get("config", {})
    model = res["manifest"].get("train", {}).get("model") or cfg.get("train", {}).get("model")
    data = cfg.get("data", {}).get("input", "?")
    return f"### {res['run'].name}: `{model}` on `{data}` ({cfg.get('task', '?')})"


def render_run(res: dict[str, Any]) -> list[str]:
    sel, metrics = res["selection"], res["metrics"].get("variants", {})
    figures = {n: sel["variants"][n] for n in
               sorted(sel["variants"], key=lambda n: (ORDER.index(n) if n in ORDER
                                                      else len(ORDER), n))}
    ref = figures["fp32"]
    split = sel.get("gate_split", "val")
    regression = f"{split}_accuracy" not in ref
    metric = "r2" if regression else "accuracy"
    ref_val = ref.get(f"{split}_{metric}")
    ref_test = metrics.get("fp32", {}).get(metric)
    lines = [_title(res), ""]
    m = re.search(r"(\d+ \w+ rows)", ref.get("parity_reference", ""))
    par_ref = m.group(1) if m else "sample rows"
    test_src = ("scored here from `preprocessed/split=test` by the pipeline's Spark scoring "
                "and metrics code" if res["metrics"].get("source") == "bench"
                else "from `metrics.json`")
    lines.append(f"Gate: `max_accuracy_drop={sel['max_accuracy_drop']}`, `select={sel['select']}`"
                 f", `max_latency_ratio={sel.get('max_latency_ratio', '-')}`; "
                 f"**selected: `{sel['selected']}`**. Validation metrics on the {split} split, "
                 f"test metrics {test_src}; parity against fp32 over the {split} split"
                 f" (fp32's own row: export parity against the torch model on {par_ref}).")
    lines.append("")
    small = ref["file_bytes"] < 10e6
    unit, scale = ("KB", 1e3) if small else ("MB", 1e6)
    head = ["variant", "params", f"size {unit}", "size x", "b1 ms", "b1024 ms", "b1024 x",
            f"{split} {metric}", "drop (pts)", f"{split} F1", f"{split} log loss",
            f"test {metric}", "test drop (pts)", "agree", "max abs dp", "build s", "gate"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, f in figures.items():
        mark = f"**{name}**" if name == sel["selected"] else name
        if "error" in f:
            lines.append(f"| {mark} | " + " | ".join(["-"] * (len(head) - 2))
                         + f" | {f['decision']} |")
            continue
        val, test = f.get(f"{split}_{metric}"), metrics.get(name, {}).get(metric)
        drop = (ref_val - val) * 100 if isinstance(val, float) and ref_val is not None else None
        tdrop = (ref_test - test) * 100 if isinstance(test, float) and ref_test is not None \
            else None
        params = f.get("parameters") or _source_parameters(name, figures)
        lines.append("| " + " | ".join([
            mark, _params(params), _f(f["file_bytes"] / scale, ".1f" if small else ".2f"),
            _f(f.get("size_ratio"), ".2f"),
            _ms(f["latency_ms_b1"]), _ms(f["latency_ms_b1024"]),
            _f(f.get("latency_ratio_b1024"), ".2f"), _f(val, ".4f"), _f(drop, "+.2f"),
            _f(f.get(f"{split}_f1_macro"), ".4f"), _f(f.get(f"{split}_log_loss"), ".4f"),
            _f(test, ".4f"), _f(tdrop, "+.2f"),
            _f(f.get("parity_agreement"), ".3f"),
            _f(f.get("parity_max_abs_prob_diff", f.get("parity_max_abs_pred_diff")), ".3f"),
            _f(f.get("build_s"), ".0f"), f["decision"]]) + " |")
    lines.append("")
    for name in INT8:
        f = figures.get(name)
        if not f or "error" in f or regression:
            continue
        drop = ref_val - f[f"{split}_{metric}"]
        checks = [("size", f["size_ratio"], GOALS["size_ratio"], "x"),
                  ("batch-1024 latency", f["latency_ratio_b1024"],
                   GOALS["latency_ratio_b1024"], "x"),
                  ("accuracy drop", drop * 100, GOALS["accuracy_drop"] * 100, " pts")]
        parts = [f"{what} {v:.2f}{unit} (goal <= {g:g}{unit}: "
                 f"{'met' if v <= g + 1e-9 else 'missed'})" for what, v, g, unit in checks]
        lines.append(f"- `{name}` against the int8 goals: " + "; ".join(parts) + ".")
    for name in ("pruned", "distilled"):
        f = figures.get(name)
        if f and "error" not in f and f.get("parameters") and ref.get("parameters"):
            detail = (f"{f.get('method', '')}; kept heads {f.get('layer_heads')}, FFN units "
                      f"{f.get('intermediate_sizes')}, vocabulary rows {f.get('vocab_rows')}"
                      if name == "pruned" and "layer_heads" in f
                      else f"hidden layers {f.get('hidden_dims')}" if name == "pruned"
                      else "student " + ", ".join(
                          f"{k}={v}" for k, v in (f.get("student_spec") or {}).items()
                          if k not in ("num_outputs", "dropout")))
            lines.append(f"- `{name}`: {f['parameters']:,} parameters vs fp32's "
                         f"{ref['parameters']:,} ({f['parameters'] / ref['parameters']:.2f}x); "
                         f"{detail}.")
    if res.get("remeasured"):
        r = res["remeasured"]
        lines.append(f"- Latencies re-measured by this script: {r['rounds']} interleaved rounds "
                     f"over {r['rows']} {split} rows tiled to the batch"
                     + (f", padded to {r['seq_len']} tokens" if r["seq_len"] else "")
                     + f"; 1-minute load average {r['load_avg_1m'][0]:.1f}-"
                     f"{r['load_avg_1m'][1]:.1f} during the rounds.")
    lines.append("")
    return lines


def render(results: list[dict[str, Any]], argv: list[str], scored_here: bool = False) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    lines = [SECTION, "",
             "Every variant the compress stage can build, against the fp32 export, on the "
             "demo runs. Regenerate this section from the runs' recorded figures with:", "",
             "```bash", " ".join([".venv/bin/python -m benchmarks.bench_compress", *argv]),
             "```", "",
             "after producing the figures with (the demo configs list fewer variants):", "",
             "```bash",
             *(f".venv/bin/sparkforge compress --config conf/{r['run'].name}.yaml --set "
               "'compress.variants=[int8_dynamic,int8_static,pruned,pruned_int8,distilled,"
               "distilled_int8,fp16]'" for r in results),
             *(() if scored_here else (
                 f".venv/bin/sparkforge score --config conf/{r['run'].name}.yaml && "
                 f".venv/bin/sparkforge evaluate --config conf/{r['run'].name}.yaml"
                 for r in results)),
             "```", "",
             f"- {dt.date.today().isoformat()}, {cpu}, {os.cpu_count()} cores shared with "
             "other jobs. Latency: ONNX Runtime CPU, 1 intra-op thread, p50; `x` columns are "
             "ratios to fp32, `drop` is fp32's accuracy minus the variant's in points "
             "(negative: the variant scored higher). The gate decides on the validation "
             "split; the test columns are each variant's test-split metrics (from "
             "`metrics.json`, or scored by this script with `--test-metrics`).",
             "- The MLP's latencies are fractions of a millisecond per 1024 rows, so its "
             "ratios move by several hundredths from run to run.",
             f"- Goals for int8 on real data (issue 5): size <= {GOALS['size_ratio']}x, "
             f"batch-1024 CPU latency <= {GOALS['latency_ratio_b1024']}x, accuracy drop <= "
             f"{GOALS['accuracy_drop'] * 100:g} point.",
             "- fp16 is meant for GPU scoring; its CPU figures here only show that it runs.",
             ""]
    for res in results:
        lines += render_run(res)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> str:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("runs", nargs="+", type=Path, help="run directories (output.dir)")
    ap.add_argument("--remeasure-latency", action="store_true",
                    help="time the variants again here, interleaved (see the module doc)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--test-metrics", action="store_true",
                    help="score the test split with every variant here (Spark) instead of "
                         "reading metrics.json")
    ap.add_argument("--no-write", action="store_true", help="print, do not touch BENCHMARKS.md")
    args = ap.parse_args(argv)
    results = [load_run(r) for r in args.runs]
    if args.test_metrics:
        for res in results:
            test_metrics(res)
    if args.remeasure_latency:
        for res in results:
            remeasure_latency(res, args.rounds)
    text = render(results, [str(r) for r in args.runs]
                  + (["--test-metrics"] if args.test_metrics else [])
                  + (["--remeasure-latency", f"--rounds {args.rounds}"]
                     if args.remeasure_latency else []), scored_here=args.test_metrics)
    print(text)
    if not args.no_write:
        write_section(BENCHMARKS_MD, SECTION, text)
        print(f"updated {BENCHMARKS_MD}")
    return text


if __name__ == "__main__":
    main()
