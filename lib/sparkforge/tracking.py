"""MLflow tracking of a run directory (``tracking.mlflow: true``; the ``[mlflow]`` extra).

One MLflow run per pipeline run, one nested run per stage:

* ``preprocess`` opens the pipeline's run (the *parent*) and logs the resolved config as
  its params; the parent's id is kept in ``manifest.json`` (section ``tracking``), so a
  stage run later on its own (``sparkforge compress``, a notebook, a nightly ``score``)
  nests under the same parent.
* each stage's nested run logs the figures its job recorded in the manifest, after the
  stage passed (or its error, ``FAILED``): row counts; training's per-epoch history (the
  manifest's ``train.history``, ``step`` = epoch); each ONNX variant with its gate
  figures (``<variant>.gate_metric``, ``.file_bytes``, ``.latency_ms_b1024``, ...) and
  the ONNX files themselves; scoring counts and drift; the test metrics of every variant
  with ``metrics.json`` and ``report.html``.
* a dated ``score`` / ``evaluate`` (``run.date``, ``score.input``) logs to the training's
  parent as a nested run named ``score run_date=YYYY-MM-DD``.

Everything is read back from the run directory on the driver: the stages themselves know
nothing of MLflow, and logging happens with an explicit :class:`MlflowClient` rather than
MLflow's global "active run", which a notebook user may be using for runs of their own.
mlflow is imported lazily (it takes seconds); :class:`sparkforge.config.TrackingConfig`
refuses ``tracking.mlflow: true`` at config load when it is not installed.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkforge.config import MLFLOW_EXTRA, Config, MissingExtraError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

SECTION = "tracking"   # manifest.json section holding the parent run's id
LOCAL_STORE = "mlruns"  # under output.dir when tracking.uri is empty
STAGE_TAG = "sparkforge.stage"
RUN_DATE_TAG = "sparkforge.run_date"
PARENT_TAG = "mlflow.parentRunId"  # what MLflow's UI nests runs by
# The config sections each stage's nested run logs as its params.
STAGE_SECTIONS = {"preprocess": ("task", "data", "preprocess", "tokenizer"),
                  "train": ("train",), "compress": ("compress",), "score": ("score", "run"),
                  "evaluate": ("evaluate", "run")}
# MLflow limits: a param value's length, and entries per log_batch request.
_PARAM_MAX = 500
_BATCH = 100


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError as e:
        raise MissingExtraError(f"tracking.mlflow=True: MLflow is not installed; {MLFLOW_EXTRA}, "
                                "or set tracking.mlflow=false") from e
    return mlflow


def tracking_uri(cfg: Config) -> str:
    """``tracking.uri``, or a local store under ``output.dir``."""
    if cfg.tracking.uri:
        return cfg.tracking.uri
    return (cfg.out / LOCAL_STORE).resolve().as_uri()


def client(cfg: Config) -> MlflowClient:
    """A client on :func:`tracking_uri` (also for reading a run back)."""
    _mlflow()
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(cfg)
    if uri.startswith("file:") or "://" not in uri:
        # MLflow 3 refuses its file store unless this is set ("maintenance mode"); a local
        # file store needs no database package (mlflow-skinny has no SQLAlchemy), which is
        # why it is the default here. A sqlite:/// or http(s):// tracking.uri needs none.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=uri)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``{"train": {"epochs": 3}}`` -> ``("train.epochs", 3)``; lists stay values."""
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            yield from flatten(v, f"{key}.")
        else:
            yield key, v


def key(name: str) -> str:
    """A metric or param name MLflow accepts: column names and quarantine reasons end up
    in keys (``drift.psi.<column>``), and MLflow refuses a whole batch over one bad key."""
    return re.sub(r"[^\w\-. /:]", "_", name)[:250]


def numeric(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a (nested) manifest section, by dotted key (bools excluded)."""
    return {key(k): float(v) for k, v in flatten(tree, prefix)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def parent_run(cfg: Config, *, new: bool = False) -> str:
    """The pipeline run's MLflow id: the one recorded in the manifest, or a new one
    (``new``: preprocess starts a pipeline run; or none recorded for this store)."""
    from sparkforge.artifacts import MANIFEST, read_json, update_manifest

    c = client(cfg)
    uri = tracking_uri(cfg)
    path = cfg.out / MANIFEST
    rec = (read_json(path).get(SECTION) or {}) if path.is_file() else {}
    if not new and rec.get("uri") == uri and rec.get("run_id"):
        try:
            if c.get_run(rec["run_id"]).info.lifecycle_stage == "active":
                return str(rec["run_id"])
        except Exception as e:  # deleted from the store, or another store
            log.warning("MLflow run %s recorded in %s is gone (%s); starting another",
                        rec["run_id"], path, e)
    exp = c.get_experiment_by_name(cfg.tracking.experiment)
    exp_id = exp.experiment_id if exp is not None else c.create_experiment(
        cfg.tracking.experiment)
    run = c.create_run(exp_id, run_name=cfg.out.resolve().name,
                       tags={"sparkforge.output_dir": str(cfg.out.resolve())})
    _log_batch(c, run.info.run_id, params={
        key(k): str(v)[:_PARAM_MAX] for k, v in flatten(cfg.to_dict())})
    update_manifest(cfg.out, SECTION, {"uri": uri, "experiment_id": exp_id,
                                       "run_id": run.info.run_id,
                                       "experiment": cfg.tracking.experiment})
    log.info("MLflow run %s (experiment %r) at %s", run.info.run_id,
             cfg.tracking.experiment, uri)
    return str(run.info.run_id)


def _log_batch(c: MlflowClient, run_id: str, *, params: Mapping[str, str] | None = None,
               metrics: Mapping[str, float] | None = None,
               history: list[tuple[str, float, int]] | None = None) -> None:
    import time

    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    ps = [Param(k, v) for k, v in (params or {}).items()]
    ms = [Metric(k, v, now, 0) for k, v in (metrics or {}).items()]
    ms += [Metric(k, v, now, step) for k, v, step in history or []]
    for i in range(0, max(len(ps), len(ms)), _BATCH):
        c.log_batch(run_id, metrics=ms[i:i + _BATCH], params=ps[i:i + _BATCH])


def _section(cfg: Config, stage: str) -> tuple[str, dict[str, Any]]:
    from sparkforge.artifacts import MANIFEST, read_json
    from sparkforge.infer.runs import is_dated

    name = stage
    if stage in ("score", "evaluate") and is_dated(cfg):
        name = f"scheduled_{stage}"
    path = cfg.out / MANIFEST
    section = (read_json(path).get(name) or {}) if path.is_file() else {}
    return name, section if isinstance(section, dict) else {}


_Figures = tuple[dict[str, float], list[tuple[str, float, int]], list[tuple[Path, str]],
                 dict[str, str]]


def _stage_figures(cfg: Config, stage: str, section: dict[str, Any]) -> _Figures:
    """(metrics, per-step history, artifacts (file, folder in the run), tags) of a stage."""
    out = cfg.out
    metrics: dict[str, float] = {}
    history: list[tuple[str, float, int]] = []
    files: list[tuple[Path, str]] = []
    tags: dict[str, str] = {}
    if stage == "preprocess":
        metrics = {k: v for k, v in numeric(section).items()
                   if k.startswith(("rows_", "quarantine_reasons."))}
    elif stage == "train":
        # The history the train job recorded: one entry per epoch, logged with step=epoch.
        for entry in section.get("history", []):
            step = int(entry.get("epoch", len(history)))
            history += [(k, v, step) for k, v in numeric(entry).items() if k != "epoch"]
        metrics = {k: v for k, v in numeric(section).items()
                   if not k.startswith(("history", "param_numel_per_rank"))}
        tags = {f"train.{k}": str(section[k])[:_PARAM_MAX]
                for k in ("kept_reason", "stop_reason", "model") if section.get(k) is not None}
    elif stage == "compress":
        variants = section.get("variants", {})
        for name, rec in variants.items():
            metrics.update(numeric(rec, f"{name}."))
            if rec.get("decision"):
                tags[key(f"{name}.decision")] = str(rec["decision"])[:_PARAM_MAX]
        tags["selected"] = str(section.get("selected"))
        for name, rel in section.get("paths", {}).items():
            files.append((out / rel, f"onnx/{name}"))
        files.append((out / "compressed" / "selection.json", ""))
    elif stage == "score":
        metrics = {k: v for k, v in numeric(section).items()
                   if k.startswith(("rows_", "drift.psi."))}
        tags = {RUN_DATE_TAG: str(section.get("run_date", "")),
                "model_variant": str(section.get("model_variant", ""))}
    elif stage == "evaluate":
        from sparkforge.artifacts import read_json

        rel = section.get("metrics")
        if rel and (out / rel).is_file():
            metrics_json = read_json(out / rel)
            for name, rec in metrics_json.get("variants", {}).items():
                metrics.update({k: v for k, v in numeric(rec, f"{name}.").items()
                                if ".confusion_matrix" not in k})
            files += [(out / rel, ""), ((out / rel).with_name("report.html"), "")]
        tags = {RUN_DATE_TAG: str(section.get("run_date", "")),
                "selected": str(section.get("selected", ""))}
    return metrics, history, [(f, d) for f, d in files if f.is_file()], tags


def log_stage(cfg: Config, stage: str, error: str | None = None) -> str | None:
    """Log ``stage``'s outcome as a nested run of the pipeline's run; returns its id.

    Called by :func:`sparkforge.jobs.stage_fn` after each stage when ``tracking.mlflow``
    is on. A tracking failure is logged as a warning: the stage's own outputs are written
    and the run directory stays the record of truth."""
    if not cfg.tracking.mlflow:
        return None
    try:
        return _log_stage(cfg, stage, error)
    except MissingExtraError:
        raise
    except Exception as e:
        log.warning("MLflow tracking of stage %s failed (%s: %s); the run directory %s "
                    "holds the same figures", stage, type(e).__name__, e, cfg.out)
        return None


def _log_stage(cfg: Config, stage: str, error: str | None) -> str:
    from mlflow.entities import RunStatus

    c = client(cfg)
    # preprocess starts a pipeline run; a stage run alone nests under the recorded one.
    parent = parent_run(cfg, new=stage == "preprocess")
    exp_id = c.get_run(parent).info.experiment_id
    section_name, section = _section(cfg, stage)
    metrics, history, files, tags = _stage_figures(cfg, stage, section)
    name = stage
    if section_name.startswith("scheduled_") and section.get("run_date"):
        name = f"{stage} run_date={section['run_date']}"
    run = c.create_run(exp_id, run_name=name,
                       tags={PARENT_TAG: parent, STAGE_TAG: stage, **tags})
    run_id = run.info.run_id
    # The settings this stage ran with, on its own run: stages run as separate commands
    # or notebooks may differ from the parent's (e.g. train.epochs set for training only),
    # and MLflow params cannot be changed once logged.
    conf = cfg.to_dict()
    params = {key(k): str(v)[:_PARAM_MAX] for section in STAGE_SECTIONS[stage]
              for k, v in flatten({section: conf[section]})}
    _log_batch(c, run_id, params=params, metrics=metrics, history=history)
    for path, folder in files:
        c.log_artifact(run_id, str(path), folder or None)
    if error is not None:
        c.set_tag(run_id, "error", error[:_PARAM_MAX])
        c.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        c.set_terminated(parent, RunStatus.to_string(RunStatus.FAILED))
        return str(run_id)
    c.set_terminated(run_id)
    if stage == "evaluate" and not section_name.startswith("scheduled_"):
        # The pipeline's headline figures on the parent: the selected variant's test metrics.
        selected = str(section.get("selected", ""))
        _log_batch(c, parent, metrics={
            f"test.{k.split('.', 1)[1]}": v for k, v in metrics.items()
            if k.startswith(f"{selected}.")})
    # A pipeline's stages may come as separate commands: the parent is marked finished
    # after each passed stage (MLflow keeps accepting logs to a finished run).
    c.set_terminated(parent)
    log.info("MLflow: stage %s logged as run %s under %s", stage, run_id, parent)
    return str(run_id)
