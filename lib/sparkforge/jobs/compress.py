"""Stage 3: model/ -> compressed/<variant>/model.onnx, measured and gated."""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sparkforge.artifacts import read_json, sha256_file, update_manifest, write_json_atomic
from sparkforge.compress.gate import BASELINE, select_variant
from sparkforge.config import Config, ConfigError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def load_trained(cfg: Config) -> tuple[Any, dict[str, Any]]:
    from sparkforge.models import build_model, load_weights
    from sparkforge.train.loop import BEST_WEIGHTS

    model_dir = cfg.out / "model"
    if not (model_dir / "model.json").exists():
        raise ConfigError(f"output.dir={str(cfg.out)!r}: no trained model in {model_dir}; "
                          "run `sparkforge train` with this config first")
    spec = read_json(model_dir / "model.json")
    model = build_model(spec)
    load_weights(model, model_dir / BEST_WEIGHTS)
    model.eval()
    return model, spec


def _latency_ms(path: Path, feeds: dict[str, np.ndarray], batch: int, repeats: int) -> float:
    """p50 onnxruntime latency, 1 thread, for ``batch`` rows tiled from ``feeds``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    n = len(next(iter(feeds.values())))
    idx = np.arange(batch) % n
    part = {k: np.ascontiguousarray(v[idx]) for k, v in feeds.items()}
    sess.run(["logits"], {k: v[:8] for k, v in part.items()})  # warm-up: allocations, kernels
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(["logits"], part)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def variant_quality(spark: SparkSession, cfg: Config, path: Path, variant: str,
                    split: str) -> dict[str, Any]:
    """Score ``split`` in Spark with ``path`` and compute its metrics in Spark."""
    from pyspark.sql import functions as F

    from sparkforge.infer import score_df
    from sparkforge.metrics import classification_metrics, regression_metrics

    labels = read_json(cfg.out / "model" / "labels.json")
    df = spark.read.parquet(str(cfg.out / "preprocessed")).filter(F.col("split") == split)
    scored = score_df(df, model_path=str(path.resolve()), sha256=sha256_file(path),
                      inputs=_inputs(cfg), labels=labels, variant=variant,
                      batch_size=cfg.score.batch_size)
    if not labels:
        m = regression_metrics(scored)
        m["gate_metric"] = m["r2"]
        return m
    m = classification_metrics(scored, labels)
    m["gate_metric"] = m["accuracy"]
    return m


def _inputs(cfg: Config) -> list[str]:
    return ["input_ids", "attention_mask"] if cfg.is_text else ["features"]


def run_compress(spark: SparkSession, cfg: Config) -> dict[str, Any]:
    from sparkforge.compress.onnx_export import check_parity, export_onnx
    from sparkforge.compress.quantize import quantize_int8_dynamic
    from sparkforge.train.loader import read_split, trim_padding

    out = cfg.out
    cdir = out / "compressed"
    model, spec = load_trained(cfg)
    val = read_split(out / "preprocessed" / "split=val", _inputs(cfg))
    n_val = len(next(iter(val.values())))
    if n_val == 0:  # tiny inputs may leave val empty; parity then uses train rows
        val = read_split(out / "preprocessed" / "split=train", _inputs(cfg))
        n_val = len(next(iter(val.values())))
    # Padding trimmed to the sample's longest row, as scoring trims each batch.
    sample = trim_padding({k: v[: cfg.compress.parity_rows] for k, v in val.items()})

    paths = {BASELINE: cdir / BASELINE / "model.onnx"}
    export_meta = export_onnx(model, spec, paths[BASELINE], {k: v[:4] for k, v in sample.items()})
    for v in cfg.compress.variants:
        paths[v] = cdir / v / "model.onnx"
        paths[v].parent.mkdir(parents=True, exist_ok=True)
        if v == "int8_dynamic":
            quantize_int8_dynamic(paths[BASELINE], paths[v])

    figures: dict[str, dict[str, Any]] = {}
    for name, path in paths.items():
        parity = check_parity(model, path, sample)
        # Classifiers compare probabilities; a regressor's output is its prediction.
        what = "max_abs_logit_diff" if cfg.is_regression else "max_abs_prob_diff"
        if name == BASELINE and parity[what] > cfg.compress.parity_atol:
            raise RuntimeError(
                f"ONNX export parity failed: {what} = {parity[what]:.2e} > "
                f"compress.parity_atol={cfg.compress.parity_atol}; the exported graph "
                "computes something else than the torch model")
        q = variant_quality(spark, cfg, path, name, "val" if n_val else "train")
        figures[name] = {
            "file_bytes": path.stat().st_size, "sha256": sha256_file(path),
            "latency_ms_b1": _latency_ms(path, sample, 1, 30),
            "latency_ms_b1024": _latency_ms(path, sample, 1024, 3),
            **{f"parity_{k}": v for k, v in parity.items()},
            **{f"val_{k}": v for k, v in q.items() if k in (
                "accuracy", "f1_macro", "log_loss", "rmse", "r2")},
            "gate_metric": q["gate_metric"],
        }
    chosen, reasons = select_variant(figures, cfg.compress.max_accuracy_drop, cfg.compress.select)
    ref = figures[BASELINE]
    for name, f in figures.items():
        f["size_ratio"] = f["file_bytes"] / ref["file_bytes"]
        f["latency_ratio_b1024"] = f["latency_ms_b1024"] / ref["latency_ms_b1024"]
        f["decision"] = reasons[name]
    selection = {"selected": chosen, "max_accuracy_drop": cfg.compress.max_accuracy_drop,
                 "select": cfg.compress.select, "opset": export_meta.get("opset"),
                 "variants": figures,
                 "paths": {n: str(p.relative_to(out)) for n, p in paths.items()}}
    write_json_atomic(cdir / "selection.json", selection)
    update_manifest(out, "compress", selection, list(paths.values()))
    print(format_table(figures, chosen), flush=True)
    return selection


def format_table(figures: dict[str, dict[str, Any]], chosen: str) -> str:
    rows = ["variant          size_MB  size_x  lat_b1_ms  lat_b1024_ms  lat_x  val_metric  "
            "max|dp|  decision"]
    for name, f in figures.items():
        mark = "*" if name == chosen else " "
        rows.append(f"{mark}{name:<15} {f['file_bytes'] / 1e6:7.2f}  {f['size_ratio']:6.2f}  "
                    f"{f['latency_ms_b1']:9.2f}  {f['latency_ms_b1024']:12.1f}  "
                    f"{f['latency_ratio_b1024']:5.2f}  {f['gate_metric']:10.4f}  "
                    f"{f['parity_max_abs_prob_diff']:7.1e}  {f['decision']}")
    return "\n".join(rows)
