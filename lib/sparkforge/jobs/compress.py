"""Stage 3: model/ -> compressed/<variant>/model.onnx, measured and gated.

fp32 is exported first (and checked against torch). Each configured variant is then
built from it or from the trained torch model:

==================  =================================================================
``int8_dynamic``    ORT dynamic int8 of the fp32 graph, activations quantized per row
                    (``sparkforge.compress.per_row``)
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

fp32, ``pruned`` and ``distilled`` are torch modules: each is also saved in its torch form
(``model.safetensors`` + ``model.json`` beside its ONNX file, for ``score.backend=torch``)
when a model spec rebuilds it exactly; ``compress/torch_form.py`` says which do and why.

Every variant is measured the same way: file size; 1-thread ONNX Runtime latency at
batch 1 and 1024 (p50); metrics on the gate rows computed in Spark from Spark scoring;
parity against the fp32 graph over the gate rows (max |probability difference|,
prediction agreement), from the same scores (fp32 and the baseline: against the torch
and the scikit-learn model they were exported from). A variant that cannot be built or
measured is recorded with its error and rejected, and the stage goes on (the measuring
functions: ``compress/measure.py``, which the benchmarks use too). The gate
(``compress/gate.py``) then picks the variant scoring uses; ``compress/table.py`` prints
the decision.

The gate rows are the validation rows of fold 1 (``data/prepare.py`` ``GATE_FOLD``);
training, pruning's fine-tune and distillation choose their epochs on fold 0, so no
variant is judged on the rows that chose it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sparkforge.artifacts import read_json, sha256_file, update_manifest, write_json_atomic
from sparkforge.compress.gate import FP32, LINEAR, select_variant

# The measurement helpers live in the library (benchmarks import them from there); the
# stage calls them through these names (tests shorten ``_latency_ms``'s loops here).
from sparkforge.compress.measure import (
    gate_rows,
    sample_split,
    score_split,
    split_parity,
    split_quality,
)
from sparkforge.compress.measure import latency_ms as _latency_ms
from sparkforge.compress.measure import model_inputs as _inputs
from sparkforge.compress.measure import split_df as _split_df
from sparkforge.compress.measure import target_column as _target
from sparkforge.compress.table import format_table
from sparkforge.config import Config
from sparkforge.models.trained import load_trained
from sparkforge.rundir import RunDir

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

# Pruning ranks heads and FFN units on at most this many of the calibration rows: the
# backward passes dominate its cost and the ranking is stable well before.
PRUNE_SAMPLE_ROWS = 256


def train_class_weights(cfg: Config) -> list[float] | None:
    """The class weights training used (manifest), so that pruning's fine-tune and
    distillation weigh the classes as the model they compress was trained to."""
    path = cfg.out / "manifest.json"
    train = read_json(path).get("train", {}) if path.exists() else {}
    weights = (train.get("class_weights") or {}).get("weights")
    return [float(w) for w in weights] if weights else None


class _Builder:
    """Builds variants on demand, each at most once (``pruned_int8`` reuses ``pruned``)."""

    def __init__(self, spark: SparkSession, cfg: Config, model: Any, spec: dict[str, Any],
                 fp32: Path, example: dict[str, np.ndarray],
                 parity_sample: dict[str, np.ndarray] | None = None) -> None:
        self.spark, self.cfg, self.model, self.spec = spark, cfg, model, spec
        self.fp32, self.example = fp32, example
        self.parity_sample = parity_sample if parity_sample is not None else example
        self.run = RunDir(cfg.out)
        self.info: dict[str, dict[str, Any]] = {}
        # variant -> its torch form's files, or why it has none (compress/torch_form.py)
        self.torch: dict[str, dict[str, Path] | str] = {}
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
            dst = self.run.variant(name)
            dst.parent.mkdir(parents=True, exist_ok=True)
            t0 = time.time()
            info = getattr(self, f"_build_{name}")(dst)
            self.info[name] = {**(info or {}), "build_s": round(time.time() - t0, 2)}
            self._built[name] = dst
        return self._built[name]

    def save_torch(self, name: str, model: Any, spec: dict[str, Any]) -> None:
        """Save ``model`` (variant ``name``) for ``score.backend=torch`` when it can be."""
        from sparkforge.compress.torch_form import NoTorchForm, save_torch_form

        try:
            self.torch[name] = save_torch_form(model, spec, self.run.variant(name).parent)
        except NoTorchForm as e:
            log.info("compress: %s has no torch form (%s); it scores on onnxruntime", name, e)
            self.torch[name] = str(e)

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
                seed=cfg.train.seed, class_weights=train_class_weights(cfg))
        export_onnx(model, self.spec, dst, self.example)
        self.save_torch("pruned", model, self.spec)
        return {**info, "parameters": info["parameters_after"]}

    def _train_token_ids(self) -> tuple[list[int], int]:
        """Distinct token ids of the train split (a Spark aggregation) and [UNK]'s id."""
        from pyspark.sql import functions as F
        from tokenizers import Tokenizer

        ids = (_split_df(self.spark, self.cfg, "train")
               .select(F.explode("input_ids").alias("t")).distinct().collect())
        tok = Tokenizer.from_file(str(self.run.tokenizer))
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
        cw = train_class_weights(cfg)  # the training's, for the labels' share of the loss
        base = spec_from_config(cfg, model=sspec, out_dir=str(work.resolve()),
                                class_weights=tuple(cw) if cw else None)
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
        self.save_torch("distilled", student, sspec)
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
        labels = read_json(self.run.labels)
        train = sample_split(self.spark, cfg, "train", cfg.evaluate.baseline_max_rows,
                             [*_inputs(cfg), _target(cfg)])
        fitted = baseline.fit_baseline(train, text=cfg.is_text, regression=cfg.is_regression,
                                       num_classes=len(labels), target=_target(cfg),
                                       class_weights=train_class_weights(cfg))
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
    labels = read_json(RunDir(cfg.out).labels)
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
    from sparkforge.compress.torch_form import torch_entries, torch_files
    from sparkforge.train.loader import read_head, trim_padding

    out = cfg.out
    run = RunDir(out)
    model, spec = load_trained(cfg)
    # The first parity_rows rows only: the driver's memory must not grow with the data
    # (reading the whole val split took 2.1 GiB at 5M rows, bench_scale).
    rows = cfg.compress.parity_rows
    val = read_head(run.split("val"), _inputs(cfg), rows)
    n_val = len(next(iter(val.values())))
    parity_split = "val" if n_val else "train"
    if n_val == 0:  # tiny inputs may leave val empty; parity then uses train rows
        val = read_head(run.split("train"), _inputs(cfg), rows)
    # Padding trimmed to the sample's longest row, as scoring trims each batch.
    sample = trim_padding(val)
    example = {k: v[:4] for k, v in sample.items()}
    n_sample = len(sample[_inputs(cfg)[0]])

    paths = {FP32: run.variant(FP32)}
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
    builder.save_torch(FP32, model, spec)
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
    torch_forms = torch_entries(out, measured, builder.torch)
    selection = {"selected": chosen, "max_accuracy_drop": cfg.compress.max_accuracy_drop,
                 "select": cfg.compress.select,
                 "max_latency_ratio": cfg.compress.max_latency_ratio,
                 "opset": export_meta.get("opset"), "gate_split": split, "gate_fold": fold,
                 "gate_rows": gate_desc, "variants": figures,
                 "paths": {n: str(p.relative_to(out)) for n, p in measured.items()},
                 "torch": torch_forms}
    if cfg.evaluate.threshold != "0.5":
        selection["threshold"] = choose_threshold(spark, cfg, chosen, paths[chosen],
                                                  (split, fold, gate_desc))
    write_json_atomic(run.selection, selection)
    update_manifest(out, "compress", selection,
                    [*measured.values(), *torch_files(out, torch_forms), run.selection])
    print(format_table(figures, chosen), flush=True)
    return selection


def choose_threshold(spark: SparkSession, cfg: Config, variant: str, path: Path,
                     gate: tuple[str, int | None, str]) -> dict[str, Any] | None:
    """``evaluate.threshold`` for the selected variant: chosen on val fold 0 (the rows
    that chose the epochs, not the gate's), its effect also recorded on the gate rows."""
    from sparkforge.data.prepare import FOLD, SELECT_FOLD
    from sparkforge.metrics.threshold import threshold_record

    labels = read_json(cfg.out / "model" / "labels.json")
    val = _split_df(spark, cfg, "val")
    if len(labels) != 2 or FOLD not in val.columns:
        log.warning("evaluate.threshold=%s is for binary tasks with validation folds (%d "
                    "labels); predictions stay the most probable label", cfg.evaluate.threshold,
                    len(labels))
        return None
    select = score_split(spark, cfg, path, variant, "val", SELECT_FOLD).persist()
    judge = score_split(spark, cfg, path, variant, gate[0], gate[1])
    try:
        rec = threshold_record(select, judge, labels, cfg.evaluate.threshold, variant,
                               f"val fold {SELECT_FOLD}", gate[2])
    finally:
        select.unpersist()
    if not rec["rows"]:
        log.warning("evaluate.threshold: validation fold %d is empty; predictions stay the "
                    "most probable label", SELECT_FOLD)
        return None
    log.info("evaluate.threshold=%s: %s predicts %s at probability >= %.4f (%s on %s: %s)",
             rec["metric"], variant, rec["positive_label"], rec["value"], rec["metric"],
             rec["chosen_on"], rec["chosen_on_metrics"])
    return rec


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
