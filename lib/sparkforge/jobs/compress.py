"""Stage 3: model/ -> compressed/<variant>/model.onnx, measured and gated.

fp32 is exported first (and checked against torch). Each configured variant is then
built from it or from the trained torch model:

==================  =================================================================
``int8_dynamic``    ORT dynamic int8 of the fp32 graph
``int8_static``     ORT static int8 (QDQ, per-channel), calibrated on a Spark sample
                    of the train split
``fp16``            float16 weights and activations (for GPU scoring)
``pruned``          structured pruning of the torch model, a short fine-tune, export
``pruned_int8``     ``int8_dynamic`` of ``pruned``
``distilled``       a small student trained with TorchDistributor on soft labels
``distilled_int8``  ``int8_dynamic`` of ``distilled``
==================  =================================================================

Every variant is measured the same way: file size; 1-thread ONNX Runtime latency at
batch 1 and 1024 (p50); validation-split metrics computed in Spark from Spark scoring;
parity against the fp32 graph over the whole validation split (max |probability
difference|, prediction agreement), from the same scores. A variant that cannot be
built or measured is recorded with its error and rejected, and the stage goes on.
The gate (``compress/gate.py``) then picks the variant scoring uses.
"""

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
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

# Pruning ranks heads and FFN units on at most this many of the calibration rows: the
# backward passes dominate its cost and the ranking is stable well before.
PRUNE_SAMPLE_ROWS = 256


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


def _latency_ms(path: Path, feeds: dict[str, np.ndarray], batch: int, repeats: int,
                budget_s: float = 1.0, max_repeats: int = 200) -> float:
    """p50 onnxruntime latency, 1 thread, for ``batch`` rows tiled from ``feeds``.

    At least ``repeats`` runs, more (up to ``max_repeats``) until ``budget_s`` is spent:
    a fast model gets enough runs for a stable median, a slow one is not run for long.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    n = len(next(iter(feeds.values())))
    idx = np.arange(batch) % n
    part = {k: np.ascontiguousarray(v[idx]) for k, v in feeds.items()}
    sess.run(["logits"], {k: v[:8] for k, v in part.items()})  # warm-up: allocations, kernels
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start < budget_s
                                   and len(times) < max_repeats):
        t0 = time.perf_counter()
        sess.run(["logits"], part)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _inputs(cfg: Config) -> list[str]:
    return ["input_ids", "attention_mask"] if cfg.is_text else ["features"]


def _target(cfg: Config) -> str:
    return "label" if cfg.is_regression else "label_index"


def _split_df(spark: SparkSession, cfg: Config, split: str) -> DataFrame:
    from pyspark.sql import functions as F

    return spark.read.parquet(str(cfg.out / "preprocessed")).filter(F.col("split") == split)


def score_split(spark: SparkSession, cfg: Config, path: Path, variant: str,
                split: str) -> DataFrame:
    """``split`` scored in Spark by the ONNX file ``path`` (not yet computed)."""
    from sparkforge.infer import score_df

    return score_df(_split_df(spark, cfg, split), model_path=str(path.resolve()),
                    sha256=sha256_file(path), inputs=_inputs(cfg),
                    labels=read_json(cfg.out / "model" / "labels.json"), variant=variant,
                    batch_size=cfg.score.batch_size)


def split_quality(scored: DataFrame, labels: list[str]) -> dict[str, Any]:
    """Metrics of scored rows, computed in Spark; ``gate_metric`` is accuracy (R2)."""
    from sparkforge.metrics import classification_metrics, regression_metrics

    if not labels:
        m = regression_metrics(scored)
        m["gate_metric"] = m["r2"]
        return m
    m = classification_metrics(scored, labels)
    m["gate_metric"] = m["accuracy"]
    return m


def variant_quality(spark: SparkSession, cfg: Config, path: Path, variant: str,
                    split: str) -> dict[str, Any]:
    """Score ``split`` in Spark with ``path`` and compute its metrics in Spark."""
    labels = read_json(cfg.out / "model" / "labels.json")
    return split_quality(score_split(spark, cfg, path, variant, split), labels)


def split_parity(scored: DataFrame, reference: DataFrame, regression: bool) -> dict[str, Any]:
    """Agreement of two scorings of the same rows, joined by id and aggregated in Spark.

    Classification: ``max_abs_prob_diff`` (over rows and classes) and ``agreement``
    (same predicted label); regression: ``max_abs_pred_diff`` and ``mean_abs_pred_diff``.
    """
    from pyspark.sql import functions as F

    a = scored.select("id", F.col("prediction").alias("p"), F.col("probability").alias("q"))
    b = reference.select("id", F.col("prediction").alias("rp"),
                         F.col("probability").alias("rq"))
    joined = a.join(b, "id")
    if regression:
        diff = F.abs(F.col("p") - F.col("rp"))
        row = joined.agg(F.max(diff).alias("mx"), F.avg(diff).alias("mean"),
                         F.count(F.lit(1)).alias("n")).first()
        assert row is not None
        return {"max_abs_pred_diff": float(row["mx"] or 0.0),
                "mean_abs_pred_diff": float(row["mean"] or 0.0), "rows": int(row["n"])}
    max_diff = F.expr("aggregate(zip_with(q, rq, (x, y) -> abs(x - y)), 0D, "
                      "(acc, v) -> greatest(acc, v))")
    row = joined.agg(F.max(max_diff).alias("mx"),
                     F.avg((F.col("p") == F.col("rp")).cast("double")).alias("agree"),
                     F.count(F.lit(1)).alias("n")).first()
    assert row is not None
    return {"max_abs_prob_diff": float(row["mx"] or 0.0),
            "agreement": float(row["agree"] if row["agree"] is not None else 1.0),
            "rows": int(row["n"])}


def sample_split(spark: SparkSession, cfg: Config, split: str, rows: int,
                 columns: list[str]) -> dict[str, np.ndarray]:
    """A seeded Spark sample of about ``rows`` rows of ``split`` (bounded; to the driver)."""
    df = _split_df(spark, cfg, split).select(*columns)
    n = df.count()
    if n == 0:
        return {c: np.zeros((0,)) for c in columns}
    fraction = min(1.0, 1.2 * rows / n)
    pdf: Any = df.sample(fraction=fraction, seed=cfg.train.seed).limit(rows).toPandas()
    out: dict[str, np.ndarray] = {}
    for c in columns:
        if c in ("input_ids", "attention_mask"):
            out[c] = np.stack(pdf[c].to_numpy()).astype(np.int64)
        elif c == "features":
            out[c] = np.stack(pdf[c].to_numpy()).astype(np.float32)
        else:
            out[c] = pdf[c].to_numpy()
    log.info("Sampled %d of %d %s rows for calibration", len(pdf), n, split)
    return out


class _Builder:
    """Builds variants on demand, each at most once (``pruned_int8`` reuses ``pruned``)."""

    def __init__(self, spark: SparkSession, cfg: Config, model: Any, spec: dict[str, Any],
                 fp32: Path, example: dict[str, np.ndarray]) -> None:
        self.spark, self.cfg, self.model, self.spec = spark, cfg, model, spec
        self.fp32, self.example = fp32, example
        self.cdir = cfg.out / "compressed"
        self.info: dict[str, dict[str, Any]] = {}
        self._built: dict[str, Path] = {}
        self._calibration: dict[str, np.ndarray] | None = None

    def calibration(self) -> dict[str, np.ndarray]:
        if self._calibration is None:
            cols = [*_inputs(self.cfg), _target(self.cfg)]
            self._calibration = sample_split(self.spark, self.cfg, "train",
                                             self.cfg.compress.calibration_rows, cols)
        return self._calibration

    def build(self, name: str) -> Path:
        if name not in self._built:
            dst = self.cdir / name / "model.onnx"
            dst.parent.mkdir(parents=True, exist_ok=True)
            t0 = time.time()
            info = getattr(self, f"_build_{name}")(dst)
            self.info[name] = {**(info or {}), "build_s": round(time.time() - t0, 2)}
            self._built[name] = dst
        return self._built[name]

    def _parameters(self, source: str) -> int | None:
        """Parameter count of the torch model a converted variant comes from."""
        if source == BASELINE:
            from sparkforge.compress.prune import count_parameters

            return count_parameters(self.model)
        n = self.info.get(source, {}).get("parameters")
        return int(n) if n is not None else None

    def _int8_of(self, src: Path, dst: Path) -> dict[str, Any]:
        from sparkforge.compress.quantize import quantize_int8_dynamic

        quantize_int8_dynamic(src, dst)
        return {"source": src.parent.name, "parameters": self._parameters(src.parent.name)}

    def _build_int8_dynamic(self, dst: Path) -> dict[str, Any]:
        return self._int8_of(self.fp32, dst)

    def _build_int8_static(self, dst: Path) -> dict[str, Any]:
        from sparkforge.compress.quantize import quantize_int8_static

        sample = {k: v for k, v in self.calibration().items() if k in _inputs(self.cfg)}
        quantize_int8_static(self.fp32, dst, sample, method=self.cfg.compress.calibration_method)
        return {"calibration_rows": len(next(iter(sample.values()))),
                "calibration_method": self.cfg.compress.calibration_method,
                "source": BASELINE, "parameters": self._parameters(BASELINE)}

    def _build_fp16(self, dst: Path) -> dict[str, Any]:
        from sparkforge.compress.quantize import convert_fp16

        convert_fp16(self.fp32, dst)
        return {"source": BASELINE, "parameters": self._parameters(BASELINE)}

    def _build_pruned(self, dst: Path) -> dict[str, Any]:
        import copy

        from sparkforge.compress.finetune import finetune
        from sparkforge.compress.onnx_export import export_onnx
        from sparkforge.compress.prune import prune_model
        from sparkforge.train.loader import read_split

        cfg, c = self.cfg, self.cfg.compress
        model = copy.deepcopy(self.model)
        kept, unk = None, 100
        if cfg.is_text and c.prune_vocab:
            kept, unk = self._train_token_ids()
        calib = self.calibration()
        rows = min(PRUNE_SAMPLE_ROWS, len(calib[_target(cfg)]))
        info = prune_model(model, self.spec, c.prune_fraction,
                           sample={k: v[:rows] for k, v in calib.items()},
                           kept_token_ids=kept, unk_id=unk)
        if c.finetune_epochs > 0:
            pre, cols = cfg.out / "preprocessed", [*_inputs(cfg), _target(cfg)]
            train = read_split(pre / "split=train", cols)
            val = read_split(pre / "split=val", cols)
            info["finetune"] = finetune(
                model, train, val, inputs=_inputs(cfg), target=_target(cfg),
                regression=cfg.is_regression, epochs=c.finetune_epochs,
                lr=c.finetune_lr or cfg.train.lr,
                batch_size=cfg.train.batch_size * cfg.train.num_processes,
                max_steps=c.finetune_max_steps, weight_decay=cfg.train.weight_decay,
                warmup_ratio=cfg.train.warmup_ratio, grad_clip=cfg.train.grad_clip,
                seed=cfg.train.seed)
        export_onnx(model, self.spec, dst, self.example)
        return {**info, "parameters": info["parameters_after"]}

    def _train_token_ids(self) -> tuple[list[int], int]:
        """Distinct token ids of the train split (a Spark aggregation) and [UNK]'s id."""
        from pyspark.sql import functions as F
        from tokenizers import Tokenizer

        ids = (_split_df(self.spark, self.cfg, "train")
               .select(F.explode("input_ids").alias("t")).distinct().collect())
        tok = Tokenizer.from_file(str(self.cfg.out / "model" / "tokenizer.json"))
        unk = tok.token_to_id("[UNK]")
        return [int(r["t"]) for r in ids], 100 if unk is None else int(unk)

    def _build_pruned_int8(self, dst: Path) -> dict[str, Any]:
        return self._int8_of(self.build("pruned"), dst)

    def _build_distilled(self, dst: Path) -> dict[str, Any]:
        from pyspark.ml.torch.distributor import TorchDistributor

        from sparkforge.compress.distill import (
            STUDENT_WEIGHTS,
            distill_fn,
            student_spec,
            write_soft_labels,
        )
        from sparkforge.compress.onnx_export import export_onnx
        from sparkforge.compress.prune import count_parameters
        from sparkforge.jobs.train import _use_gpu, check_resources
        from sparkforge.models import build_model, load_weights

        cfg, c, t = self.cfg, self.cfg.compress, self.cfg.train
        work = dst.parent
        vocab = None
        if cfg.is_text and "vocab_size" not in self.spec:
            from tokenizers import Tokenizer

            vocab = Tokenizer.from_file(str(cfg.out / "model" / "tokenizer.json")
                                        ).get_vocab_size()
        sspec = student_spec(self.spec, c.student_hidden_dim, vocab)
        soft = work / "soft_labels"
        t0 = time.time()
        write_soft_labels(_split_df(self.spark, cfg, "train"), soft,
                          model_path=str(self.fp32.resolve()), sha256=sha256_file(self.fp32),
                          inputs=_inputs(cfg), target=_target(cfg),
                          batch_size=cfg.score.batch_size)
        soft_s = time.time() - t0
        use_gpu = _use_gpu(self.spark, cfg)
        threads = check_resources(self.spark, cfg, use_gpu)
        weights = work / STUDENT_WEIGHTS
        params = {
            "soft_labels": str(soft.resolve()),
            "val_dir": str((cfg.out / "preprocessed" / "split=val").resolve()),
            "out_path": str(weights.resolve()), "student_spec": sspec,
            "inputs": _inputs(cfg), "target": _target(cfg), "regression": cfg.is_regression,
            "epochs": c.distill_epochs, "lr": c.distill_lr, "batch_size": t.batch_size,
            "alpha": c.distill_alpha, "temperature": c.distill_temperature,
            "patience": t.early_stopping_patience, "seed": t.seed, "threads": threads,
            "use_cuda": use_gpu,
        }
        log.info("Distilling %s into %s with TorchDistributor (%d process(es), local_mode=%s)",
                 self.spec["name"], sspec, t.num_processes, t.local_mode)
        result = TorchDistributor(num_processes=t.num_processes, local_mode=t.local_mode,
                                  use_gpu=use_gpu).run(distill_fn, params)
        if not weights.exists():
            raise RuntimeError(f"distillation finished but wrote no {weights}")
        student = load_weights(build_model(sspec), weights).eval()
        export_onnx(student, sspec, dst, self.example)
        write_json_atomic(work / "student.json", sspec)
        return {"student_spec": sspec, "parameters": count_parameters(student),
                "parameters_teacher": count_parameters(self.model), "soft_labels_s": soft_s,
                "history": result.get("history") if isinstance(result, dict) else None}

    def _build_distilled_int8(self, dst: Path) -> dict[str, Any]:
        return self._int8_of(self.build("distilled"), dst)


def _measure(spark: SparkSession, cfg: Config, name: str, path: Path, split: str,
             ref_scored: DataFrame, sample: dict[str, np.ndarray],
             export_parity: dict[str, Any]) -> dict[str, Any]:
    """One variant's figures: size, latency, ``split`` metrics and parity (in Spark)."""
    t0 = time.time()
    labels = read_json(cfg.out / "model" / "labels.json")
    if name == BASELINE:
        q, par = split_quality(ref_scored, labels), export_parity
    else:
        scored = score_split(spark, cfg, path, name, split).persist()
        try:
            q = split_quality(scored, labels)
            par = split_parity(scored, ref_scored, cfg.is_regression)
        finally:
            scored.unpersist()
        par["reference"] = f"fp32 onnx, {split} split ({par.pop('rows')} rows)"
    return {
        "file_bytes": path.stat().st_size, "sha256": sha256_file(path),
        "latency_ms_b1": _latency_ms(path, sample, 1, 30),
        "latency_ms_b1024": _latency_ms(path, sample, 1024, 3, budget_s=2.0),
        **{f"parity_{k}": v for k, v in par.items()},
        **{f"{split}_{k}": v for k, v in q.items()
           if k in ("accuracy", "f1_macro", "log_loss", "rmse", "r2")},
        "gate_metric": q["gate_metric"],
        "measure_s": round(time.time() - t0, 2),
    }


def _error(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip()
    return text if len(text) <= 300 else text[:297] + "..."


def run_compress(spark: SparkSession, cfg: Config) -> dict[str, Any]:
    from sparkforge.compress.onnx_export import check_parity, export_onnx
    from sparkforge.compress.prune import count_parameters
    from sparkforge.train.loader import read_split, trim_padding

    out = cfg.out
    cdir = out / "compressed"
    model, spec = load_trained(cfg)
    val = read_split(out / "preprocessed" / "split=val", _inputs(cfg))
    n_val = len(next(iter(val.values())))
    split = "val" if n_val else "train"
    if n_val == 0:  # tiny inputs may leave val empty; parity then uses train rows
        val = read_split(out / "preprocessed" / "split=train", _inputs(cfg))
    # Padding trimmed to the sample's longest row, as scoring trims each batch.
    sample = trim_padding({k: v[: cfg.compress.parity_rows] for k, v in val.items()})
    example = {k: v[:4] for k, v in sample.items()}

    paths = {BASELINE: cdir / BASELINE / "model.onnx"}
    export_meta = export_onnx(model, spec, paths[BASELINE], example)
    # Export parity: the fp32 graph against the torch model on sample rows.
    parity = check_parity(model, paths[BASELINE], sample)
    # Regression outputs are in the target's units: judge them relative to their scale.
    what = "max_rel_logit_diff" if cfg.is_regression else "max_abs_prob_diff"
    if parity[what] > cfg.compress.parity_atol:
        raise RuntimeError(
            f"ONNX export parity failed: {what} = {parity[what]:.2e} > "
            f"compress.parity_atol={cfg.compress.parity_atol}; the exported graph "
            "computes something else than the torch model")

    builder = _Builder(spark, cfg, model, spec, paths[BASELINE], example)
    figures: dict[str, dict[str, Any]] = {}
    for v in cfg.compress.variants:
        try:
            paths[v] = builder.build(v)
        except Exception as e:
            log.exception("compress: building variant %s failed; it is rejected", v)
            figures[v] = {"error": f"build failed: {_error(e)}"}

    ref_scored = score_split(spark, cfg, paths[BASELINE], BASELINE, split).persist()
    export_parity: dict[str, Any] = (
        {"max_abs_pred_diff": parity["max_abs_logit_diff"]} if cfg.is_regression
        else dict(parity))
    export_parity["reference"] = f"torch model, {len(sample[_inputs(cfg)[0]])} {split} rows"
    try:
        for name, path in list(paths.items()):
            try:
                figures[name] = {**_measure(spark, cfg, name, path, split, ref_scored, sample,
                                            export_parity), **builder.info.get(name, {})}
            except Exception as e:
                if name == BASELINE:
                    raise
                log.exception("compress: measuring variant %s failed; it is rejected", name)
                figures[name] = {"error": f"measurement failed: {_error(e)}",
                                 "file_bytes": path.stat().st_size}
    finally:
        ref_scored.unpersist()
    figures[BASELINE]["parameters"] = count_parameters(model)
    # Keep fp32 first and the configured order after it.
    figures = {n: figures[n] for n in [BASELINE, *cfg.compress.variants] if n in figures}
    chosen, reasons = select_variant(figures, cfg.compress.max_accuracy_drop,
                                     cfg.compress.select, cfg.compress.max_latency_ratio)
    ref = figures[BASELINE]
    for name, f in figures.items():
        if "error" not in f:
            f["size_ratio"] = f["file_bytes"] / ref["file_bytes"]
            f["latency_ratio_b1"] = f["latency_ms_b1"] / ref["latency_ms_b1"]
            f["latency_ratio_b1024"] = f["latency_ms_b1024"] / ref["latency_ms_b1024"]
            f["gate_metric_drop"] = ref["gate_metric"] - f["gate_metric"]
        f["decision"] = reasons[name]
    measured = {n: p for n, p in paths.items() if "error" not in figures[n]}
    selection = {"selected": chosen, "max_accuracy_drop": cfg.compress.max_accuracy_drop,
                 "select": cfg.compress.select,
                 "max_latency_ratio": cfg.compress.max_latency_ratio,
                 "opset": export_meta.get("opset"), "gate_split": split,
                 "variants": figures,
                 "paths": {n: str(p.relative_to(out)) for n, p in measured.items()}}
    write_json_atomic(cdir / "selection.json", selection)
    update_manifest(out, "compress", selection, list(measured.values()))
    print(format_table(figures, chosen), flush=True)
    return selection


def _num(v: float) -> str:
    """Three significant digits, without exponent notation for large values."""
    return f"{v:.0f}" if v >= 1000 else f"{v:.3g}"


def _ratio(v: float) -> str:
    return f"{v:.2f}" if v >= 0.01 else "<0.01"


def format_table(figures: dict[str, dict[str, Any]], chosen: str) -> str:
    """The decision as the compress stage prints it: one row per variant, * = selected."""
    rows = ["variant          size_MB  size_x  lat_b1_ms  lat_b1024_ms  lat_x  val_metric  "
            "max|dp|  agree   decision"]
    for name, f in figures.items():
        mark = "*" if name == chosen else " "
        if "error" in f:
            rows.append(f"{mark}{name:<15} {f.get('file_bytes', 0) / 1e6:7.3g}  "
                        f"{'-':>6}  {'-':>9}  {'-':>12}  {'-':>5}  {'-':>10}  {'-':>7}  "
                        f"{'-':>5}   {f['decision']}")
            continue
        dp = f.get("parity_max_abs_prob_diff", f.get("parity_max_abs_pred_diff", float("nan")))
        agree = f.get("parity_agreement", float("nan"))
        rows.append(f"{mark}{name:<15} {f['file_bytes'] / 1e6:7.3g}  {f['size_ratio']:6.2f}  "
                    f"{_num(f['latency_ms_b1']):>9}  {_num(f['latency_ms_b1024']):>12}  "
                    f"{_ratio(f['latency_ratio_b1024']):>5}  {f['gate_metric']:10.4f}  "
                    f"{dp:7.1e}  {agree:5.3f}   {f['decision']}")
    return "\n".join(rows)
