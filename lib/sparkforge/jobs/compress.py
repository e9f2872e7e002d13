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
``baseline``        the scikit-learn linear model (``sparkforge.baseline``), built
                    unless ``evaluate.baseline`` is false
==================  =================================================================

Every variant is measured the same way: file size; 1-thread ONNX Runtime latency at
batch 1 and 1024 (p50); metrics on the gate rows computed in Spark from Spark scoring;
parity against the fp32 graph over the gate rows (max |probability difference|,
prediction agreement), from the same scores (fp32 and the baseline: against the torch
and the scikit-learn model they were exported from). A variant that cannot be built or
measured is recorded with its error and rejected, and the stage goes on. The gate
(``compress/gate.py``) then picks the variant scoring uses.

The gate rows are the validation rows of fold 1 (``data/prepare.py`` ``GATE_FOLD``);
training, pruning's fine-tune and distillation choose their epochs on fold 0, so no
variant is judged on the rows that chose it.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sparkforge.artifacts import (
    read_json,
    read_verified_json,
    sha256_file,
    update_manifest,
    verify_artifact,
    write_json_atomic,
)
from sparkforge.compress.gate import FP32, LINEAR, select_variant
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
    # Both checked against the sha256 train recorded: compress must not export (and the
    # gate must not bless) weights that changed after training.
    spec = read_verified_json(cfg.out, model_dir / "model.json")
    verify_artifact(cfg.out, model_dir / BEST_WEIGHTS)
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


def _rows_df(spark: SparkSession, cfg: Config, split: str, fold: int | None) -> DataFrame:
    from pyspark.sql import functions as F

    from sparkforge.data.prepare import FOLD

    df = _split_df(spark, cfg, split)
    return df if fold is None else df.filter(F.col(FOLD) == fold)


def score_split(spark: SparkSession, cfg: Config, path: Path, variant: str,
                split: str, fold: int | None = None) -> DataFrame:
    """``split`` (only its ``fold`` when given) scored in Spark by the ONNX file ``path``
    (not yet computed)."""
    from sparkforge.infer import score_df

    return score_df(_rows_df(spark, cfg, split, fold), model_path=str(path.resolve()),
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
                    split: str, fold: int | None = None) -> dict[str, Any]:
    """Score ``split`` in Spark with ``path`` and compute its metrics in Spark."""
    labels = read_json(cfg.out / "model" / "labels.json")
    return split_quality(score_split(spark, cfg, path, variant, split, fold), labels)


def gate_rows(spark: SparkSession, cfg: Config) -> tuple[str, int | None, str]:
    """(split, fold, description) of the rows the gate judges on: validation fold 1.

    Preprocessed data from before the fold column is judged on the whole validation
    split (with a warning: training chose its epoch on those rows too); an empty fold
    falls back to the whole split, an empty split to train (tiny inputs).
    """
    from sparkforge.data.prepare import FOLD, GATE_FOLD

    val = _split_df(spark, cfg, "val")
    if FOLD not in val.columns:
        log.warning("compress: preprocessed/ has no %r column (written by an older version); "
                    "the gate judges on the whole validation split, which also chose the "
                    "training epoch: rerun `sparkforge preprocess` to separate them", FOLD)
        return "val", None, "val split (no fold column)"
    counts = {r[FOLD]: r["count"] for r in val.groupBy(FOLD).count().collect()}
    if counts.get(GATE_FOLD, 0):
        return "val", GATE_FOLD, f"val fold {GATE_FOLD} ({counts[GATE_FOLD]} rows)"
    if sum(counts.values()):
        log.warning("compress: validation fold %d is empty; the gate judges on the whole "
                    "validation split", GATE_FOLD)
        return "val", None, f"val split ({sum(counts.values())} rows; fold {GATE_FOLD} empty)"
    n = _split_df(spark, cfg, "train").count()
    log.warning("compress: the validation split is empty; the gate judges on train rows")
    return "train", None, f"train split ({n} rows; val empty)"


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
                 fp32: Path, example: dict[str, np.ndarray],
                 parity_sample: dict[str, np.ndarray] | None = None) -> None:
        self.spark, self.cfg, self.model, self.spec = spark, cfg, model, spec
        self.fp32, self.example = fp32, example
        self.parity_sample = parity_sample if parity_sample is not None else example
        self.cdir = cfg.out / "compressed"
        self.info: dict[str, dict[str, Any]] = {}
        self._built: dict[str, Path] = {}
        self._calibration: dict[str, np.ndarray] | None = None
        self.baseline_parity: dict[str, Any] = {}

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
        if source == FP32:
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
                "source": FP32, "parameters": self._parameters(FP32)}

    def _build_fp16(self, dst: Path) -> dict[str, Any]:
        from sparkforge.compress.quantize import convert_fp16

        convert_fp16(self.fp32, dst)
        return {"source": FP32, "parameters": self._parameters(FP32)}

    def _build_pruned(self, dst: Path) -> dict[str, Any]:
        import copy

        from sparkforge.compress.finetune import finetune, fold_rows
        from sparkforge.compress.onnx_export import export_onnx
        from sparkforge.compress.prune import prune_model
        from sparkforge.data.prepare import SELECT_FOLD
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
            # Fold 0 chooses the fine-tune's epoch; fold 1 is the gate's.
            val = fold_rows(pre / "split=val", cols, SELECT_FOLD)
            info["finetune_val_rows"] = len(val[_target(cfg)])
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
        from sparkforge.compress.distill import (
            STUDENT_WEIGHTS,
            distill_spec,
            student_spec,
            write_soft_labels,
        )
        from sparkforge.compress.onnx_export import export_onnx
        from sparkforge.compress.prune import count_parameters
        from sparkforge.models import build_model, load_weights
        from sparkforge.train import checkpoint
        from sparkforge.train.launch import launch, resources
        from sparkforge.train.loop import CHECKPOINT_DIR
        from sparkforge.train.spec import spec_from_config

        cfg, c, t = self.cfg, self.cfg.compress, self.cfg.train
        work = dst.parent
        res = resources(self.spark, cfg)  # fails fast, before the soft labels are written
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
        base = spec_from_config(cfg, model=sspec, out_dir=str(work.resolve()))
        spec = distill_spec(base, soft_labels=soft,
                            val_dir=cfg.out / "preprocessed" / "split=val", out_dir=work,
                            student=sspec, epochs=c.distill_epochs, lr=c.distill_lr,
                            alpha=c.distill_alpha, temperature=c.distill_temperature)
        # A fresh student: a relaunch (train.max_restarts) resumes this run's checkpoint.
        checkpoint.clear(work / CHECKPOINT_DIR)
        weights = work / STUDENT_WEIGHTS
        weights.unlink(missing_ok=True)
        log.info("Distilling %s into %s", self.spec["name"], sspec)
        result, restarts = launch(self.spark, cfg, spec, res=res, max_restarts=t.max_restarts)
        checkpoint.clear(work / CHECKPOINT_DIR)  # the student's weights are all that is kept
        if not weights.exists():
            raise RuntimeError(f"distillation finished but wrote no {weights}")
        student = load_weights(build_model(sspec), weights).eval()
        export_onnx(student, sspec, dst, self.example)
        write_json_atomic(work / "student.json", sspec)
        return {"student_spec": sspec, "parameters": count_parameters(student),
                "parameters_teacher": count_parameters(self.model), "soft_labels_s": soft_s,
                "history": result.get("history"), "val_rows": result.get("val_rows"),
                "kept_epoch": result.get("kept_epoch"), "restarts": restarts}

    def _build_distilled_int8(self, dst: Path) -> dict[str, Any]:
        return self._int8_of(self.build("distilled"), dst)

    def _build_baseline(self, dst: Path) -> dict[str, Any]:
        """The scikit-learn linear model on a bounded train sample, exported and checked
        against scikit-learn's own predictions on the parity rows."""
        from sparkforge import baseline

        cfg = self.cfg
        labels = read_json(cfg.out / "model" / "labels.json")
        train = sample_split(self.spark, cfg, "train", cfg.evaluate.baseline_max_rows,
                             [*_inputs(cfg), _target(cfg)])
        fitted = baseline.fit_baseline(train, text=cfg.is_text, regression=cfg.is_regression,
                                       num_classes=len(labels), target=_target(cfg))
        meta = baseline.export_baseline(fitted, dst)
        self.baseline_parity = baseline.check_parity(fitted, dst, self.parity_sample)
        return {**fitted.info, "opset": meta["opset"]}


def _measure(spark: SparkSession, cfg: Config, name: str, path: Path, rows: tuple[str, int | None],
             ref_scored: DataFrame, sample: dict[str, np.ndarray],
             own_parity: dict[str, Any] | None) -> dict[str, Any]:
    """One variant's figures: size, latency, metrics on the gate ``rows`` (split, fold)
    and parity (in Spark; ``own_parity``: against the model it was exported from)."""
    t0 = time.time()
    split, fold = rows
    labels = read_json(cfg.out / "model" / "labels.json")
    if name == FP32:
        q = split_quality(ref_scored, labels)
    else:
        scored = score_split(spark, cfg, path, name, split, fold).persist()
        try:
            q = split_quality(scored, labels)
            if own_parity is None:
                own_parity = split_parity(scored, ref_scored, cfg.is_regression)
                own_parity["reference"] = (f"fp32 onnx, gate rows "
                                            f"({own_parity.pop('rows')} rows)")
        finally:
            scored.unpersist()
    assert own_parity is not None
    return {
        "file_bytes": path.stat().st_size, "sha256": sha256_file(path),
        "latency_ms_b1": _latency_ms(path, sample, 1, 30),
        "latency_ms_b1024": _latency_ms(path, sample, 1024, 3, budget_s=2.0),
        **{f"parity_{k}": v for k, v in own_parity.items()},
        **{f"{split}_{k}": v for k, v in q.items()
           if k in ("accuracy", "f1_macro", "log_loss", "rmse", "r2")},
        "gate_metric": q["gate_metric"], "gate_rows": q["n_rows"],
        "measure_s": round(time.time() - t0, 2),
    }


def what_to_try(cfg: Config) -> str:
    """The settings worth changing when the neural model loses to the linear baseline."""
    t = cfg.train
    tips = [f"more train.epochs (now {t.epochs})", f"another train.lr (now {t.lr})"]
    if cfg.is_text:
        tips.append(f"train.model=minilm (now {cfg.model_name})" if cfg.model_name != "minilm"
                    else f"tokenizer.max_length above {cfg.tokenizer.max_length}")
    else:
        tips.append(f"a wider train.hidden_dim (now {t.hidden_dim})")
    return ", ".join(tips)


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
    parity_split = "val" if n_val else "train"
    if n_val == 0:  # tiny inputs may leave val empty; parity then uses train rows
        val = read_split(out / "preprocessed" / "split=train", _inputs(cfg))
    # Padding trimmed to the sample's longest row, as scoring trims each batch.
    sample = trim_padding({k: v[: cfg.compress.parity_rows] for k, v in val.items()})
    example = {k: v[:4] for k, v in sample.items()}
    n_sample = len(sample[_inputs(cfg)[0]])

    paths = {FP32: cdir / FP32 / "model.onnx"}
    export_meta = export_onnx(model, spec, paths[FP32], example)
    # Export parity: the fp32 graph against the torch model on sample rows.
    parity = check_parity(model, paths[FP32], sample)
    # Regression outputs are in the target's units: judge them relative to their scale.
    what = "max_rel_logit_diff" if cfg.is_regression else "max_abs_prob_diff"
    if parity[what] > cfg.compress.parity_atol:
        raise RuntimeError(
            f"ONNX export parity failed: {what} = {parity[what]:.2e} > "
            f"compress.parity_atol={cfg.compress.parity_atol}; the exported graph "
            "computes something else than the torch model")

    builder = _Builder(spark, cfg, model, spec, paths[FP32], example, sample)
    figures: dict[str, dict[str, Any]] = {}
    order = [FP32, *cfg.compress.variants, *([LINEAR] if cfg.evaluate.baseline else [])]
    for v in order[1:]:
        try:
            paths[v] = builder.build(v)
        except Exception as e:
            log.exception("compress: building variant %s failed; it is rejected", v)
            figures[v] = {"error": f"build failed: {_error(e)}"}

    split, fold, gate_desc = gate_rows(spark, cfg)
    ref_scored = score_split(spark, cfg, paths[FP32], FP32, split, fold).persist()
    export_parity: dict[str, Any] = (
        {"max_abs_pred_diff": parity["max_abs_logit_diff"]} if cfg.is_regression
        else dict(parity))
    export_parity["reference"] = f"torch model, {n_sample} {parity_split} rows"
    own: dict[str, dict[str, Any] | None] = {FP32: export_parity}
    if builder.baseline_parity:
        par = dict(builder.baseline_parity)
        par["reference"] = f"scikit-learn model, {par.pop('rows')} {parity_split} rows"
        own[LINEAR] = par
    try:
        for name, path in list(paths.items()):
            try:
                figures[name] = {**_measure(spark, cfg, name, path, (split, fold), ref_scored,
                                            sample, own.get(name)),
                                 **builder.info.get(name, {})}
            except Exception as e:
                if name == FP32:
                    raise
                log.exception("compress: measuring variant %s failed; it is rejected", name)
                figures[name] = {"error": f"measurement failed: {_error(e)}",
                                 "file_bytes": path.stat().st_size}
    finally:
        ref_scored.unpersist()
    figures[FP32]["parameters"] = count_parameters(model)
    # fp32 first, the configured order after it, the baseline last.
    figures = {n: figures[n] for n in order if n in figures}
    chosen, reasons = select_variant(figures, cfg.compress.max_accuracy_drop,
                                     cfg.compress.select, cfg.compress.max_latency_ratio)
    ref = figures[FP32]
    for name, f in figures.items():
        if "error" not in f:
            f["size_ratio"] = f["file_bytes"] / ref["file_bytes"]
            f["latency_ratio_b1"] = f["latency_ms_b1"] / ref["latency_ms_b1"]
            f["latency_ratio_b1024"] = f["latency_ms_b1024"] / ref["latency_ms_b1024"]
            f["gate_metric_drop"] = ref["gate_metric"] - f["gate_metric"]
        f["decision"] = reasons[name]
    _warn_if_linear_wins(cfg, figures, chosen)
    measured = {n: p for n, p in paths.items() if "error" not in figures[n]}
    selection = {"selected": chosen, "max_accuracy_drop": cfg.compress.max_accuracy_drop,
                 "select": cfg.compress.select,
                 "max_latency_ratio": cfg.compress.max_latency_ratio,
                 "opset": export_meta.get("opset"), "gate_split": split, "gate_fold": fold,
                 "gate_rows": gate_desc, "variants": figures,
                 "paths": {n: str(p.relative_to(out)) for n, p in measured.items()}}
    write_json_atomic(cdir / "selection.json", selection)
    update_manifest(out, "compress", selection,
                    [*measured.values(), cdir / "selection.json"])
    print(format_table(figures, chosen), flush=True)
    return selection


def _warn_if_linear_wins(cfg: Config, figures: dict[str, dict[str, Any]], chosen: str) -> None:
    """One log line when the neural model loses to the linear baseline on the gate rows."""
    base, fp32 = figures.get(LINEAR, {}), figures[FP32]
    if "error" in base or "gate_metric" not in base or "gate_metric" not in fp32:
        return
    b, f, c = base["gate_metric"], fp32["gate_metric"], figures[chosen]["gate_metric"]
    if not (f < b or c < b):  # NaN compares False: nothing to say
        return
    neural = chosen if chosen != LINEAR else FP32
    log.warning("compress: the neural model %s scores %.4f on validation, below the linear "
                "baseline %s's %.4f (%s is published); try %s", neural,
                figures[neural]["gate_metric"], base.get("model", LINEAR), b, chosen,
                what_to_try(cfg))


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
