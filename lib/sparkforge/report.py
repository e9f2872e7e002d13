"""report.html: one self-contained page (PNGs embedded) from the run's JSON files."""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return '<img src="data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode() + '">'


def _confusion_png(m: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cm = np.array(m["confusion_matrix"])
    labels = m["labels"]
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(labels), 1 + 0.6 * len(labels)))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    return _png(fig)


def _history_png(history: list[dict[str, Any]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train loss")
    ax.plot(epochs, [float(h.get("val_loss", "nan")) for h in history], marker="o",
            label="val loss")
    ax.set_xlabel("epoch")
    ax.legend()
    return _png(fig)


def _curves_png(curves: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (["roc", "pr"] if curves.get("kind") == "binary" else []) + ["calibration"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.5))
    axes = [axes] if len(panels) == 1 else list(axes)
    for ax, name in zip(axes, panels, strict=True):
        pts = curves.get(name, [])
        if name == "roc":
            ax.plot([p["fpr"] for p in pts], [p["tpr"] for p in pts])
            ax.plot([0, 1], [0, 1], ls="--", c="grey")
            ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
        elif name == "pr":
            ax.plot([p["recall"] for p in pts], [p["precision"] for p in pts])
            ax.set(xlabel="recall", ylabel="precision", title="precision-recall")
        else:
            ax.plot([p["mean_score"] for p in pts], [p["observed"] for p in pts], marker="o")
            ax.plot([0, 1], [0, 1], ls="--", c="grey")
            what = "positive rate" if curves.get("kind") == "binary" else "accuracy"
            ax.set(xlabel="mean predicted score", ylabel=f"observed {what}",
                   title="calibration")
    fig.tight_layout()
    return _png(fig)


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c, ''))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(out: Path, task: str, metrics: dict[str, Any], manifest: dict[str, Any],
                 run: dict[str, Any] | None = None) -> Path:
    parts = [f"<h1>sparkforge run: {html.escape(str(out))}</h1><p>task: {html.escape(task)}</p>"]
    pre = manifest.get("preprocess", {})
    if pre:
        parts.append("<h2>Rows</h2>" + _table([{k: pre.get(k) for k in (
            "rows_in", "rows_kept", "rows_quarantined")}],
            ["rows_in", "rows_kept", "rows_quarantined"]))
        parts.append("<h3>Quarantine reasons</h3>" + _table(
            [{"reason": k, "rows": v} for k, v in pre.get("quarantine_reasons", {}).items()],
            ["reason", "rows"]))
        parts.append("<h3>Rows per split</h3>" + _table([pre.get("rows_per_split", {})],
                                                        ["train", "val", "test"]))
        if pre.get("label_distribution"):
            parts.append("<h3>Label distribution</h3>" + _table(
                [{"label": k, "rows": v} for k, v in sorted(pre["label_distribution"].items())],
                ["label", "rows"]))
        text_keys = ["token_length_p50", "token_length_p90", "token_length_p99",
                     "truncation_rate", "unknown_token_rate"]
        if any(k in pre for k in text_keys):
            parts.append("<h3>Tokens (train split)</h3>" + _table([pre], text_keys))
        if pre.get("null_rates"):
            parts.append("<h3>Null rate per column</h3>" + _table(
                [{"column": k, "null_rate": v} for k, v in pre["null_rates"].items()],
                ["column", "null_rate"]))
    rows = []
    for name, m in metrics["variants"].items():
        # The linear baseline is a variant, scored on the same test rows: named by its model.
        label = (f"baseline {metrics.get('baseline', {}).get('model', '')}".strip()
                 if name == "baseline" else name)
        rows.append({"variant": label + (" (selected)" if name == metrics["selected"] else ""),
                     **{k: v for k, v in m.items() if not isinstance(v, (list, dict))}})
    cols = sorted({k for r in rows for k in r if k not in ("variant", "model")})
    parts.append("<h2>Test metrics</h2>" + _table(rows, ["variant", *cols]))
    sel = metrics["variants"].get(metrics["selected"], {})
    if "confusion_matrix" in sel:
        parts.append("<h3>Confusion matrix (selected variant)</h3>" + _confusion_png(sel))
    if metrics.get("curves"):
        parts.append("<h3>Curves (selected variant, test split)</h3>"
                     + _curves_png(metrics["curves"]))
    if run:
        parts.append(f"<h2>Scoring run {html.escape(str(run.get('run_date')))}</h2>" + _table(
            [run], ["rows_in", "rows_scored", "rows_quarantined", "rows_skipped_already_scored",
                    "model_variant", "started_at", "finished_at"]))
        if run.get("quarantine_reasons"):
            parts.append("<h3>Scoring quarantine reasons</h3>" + _table(
                [{"reason": k, "rows": v} for k, v in run["quarantine_reasons"].items()],
                ["reason", "rows"]))
        drift = run.get("drift", {})
        if drift.get("psi"):
            parts.append(f"<h3>Drift (PSI; warning above {drift.get('threshold')})</h3>" + _table(
                [{"column": c, "psi": v, "drifted": c in drift.get("drifted", [])}
                 for c, v in sorted(drift["psi"].items())], ["column", "psi", "drifted"]))
    comp = manifest.get("compress", {}).get("variants", {})
    if comp:
        ccols = ["variant", "file_bytes", "size_ratio", "latency_ms_b1", "latency_ms_b1024",
                 "latency_ratio_b1024", "gate_metric", "gate_rows", "parity_max_abs_prob_diff",
                 "decision"]
        gate = manifest.get("compress", {}).get("gate_rows")
        parts.append("<h2>Compression</h2>" + (f"<p>judged on {html.escape(str(gate))}; "
                                               "the reference is the better of fp32 and the "
                                               "linear baseline</p>" if gate else "") + _table(
            [{"variant": k, **v} for k, v in comp.items()], ccols))
    thr = metrics.get("threshold")
    weights = manifest.get("train", {}).get("class_weights") or {}
    if thr or weights.get("applied"):
        items = []
        if weights.get("applied"):
            items.append(f"class weights ({weights.get('mode')}): "
                         f"{html.escape(str(weights.get('weights')))}")
        if thr:
            items.append(f"decision threshold ({html.escape(str(thr.get('metric')))}, chosen "
                         f"on {html.escape(str(thr.get('chosen_on')))}): "
                         f"{html.escape(str(thr.get('positive_label')))} when its probability "
                         f">= {thr.get('value')}; on the gate rows: "
                         f"{html.escape(json.dumps(thr.get('judged_on_metrics')))}")
        parts.append("<h2>Class imbalance</h2><ul>"
                     + "".join(f"<li>{i}</li>" for i in items) + "</ul>")
    history = manifest.get("train", {}).get("history", [])
    if history:
        parts.append("<h2>Training</h2>" + _history_png(history) + _table(
            history, ["epoch", "train_loss", "val_loss", "val_metric", "samples_per_s"]))
    parts.append("<h2>Manifest</h2><pre>" + html.escape(json.dumps(
        {k: v for k, v in manifest.items() if k != "artifacts"}, indent=1, default=str)[:20000])
        + "</pre>")
    style = ("<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}</style>")
    doc = f"<!doctype html><html><head><meta charset='utf-8'>{style}</head><body>" \
          + "\n".join(parts) + "</body></html>"
    path = out / "report.html"
    path.write_text(doc)
    return path

