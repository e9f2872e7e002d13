"""The accuracy gate: choose the variant scoring uses from measured figures."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

FP32 = "fp32"
# The scikit-learn linear model (``sparkforge.baseline``), an ordinary variant here.
LINEAR = "baseline"
# Float noise allowed on the drop comparison: 0.90 - 0.89 is 0.010000000000000009, and a
# drop of exactly ``max_accuracy_drop`` passes.
_EPS = 1e-12


def _metric(f: Mapping[str, Any]) -> float:
    """The figure's gate metric, NaN when absent, not a number or not finite."""
    try:
        v = float(f.get("gate_metric", math.nan))
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def select_variant(figures: Mapping[str, Mapping[str, Any]], max_accuracy_drop: float,
                   select: str = "smallest", max_latency_ratio: float | None = None
                   ) -> tuple[str, dict[str, str]]:
    """Return (chosen variant, a reason per variant).

    ``figures[v]`` holds ``gate_metric`` (accuracy; R2 for regression), ``file_bytes``
    and ``latency_ms_b1024``, or ``error`` when the variant could not be built or
    measured (it is then rejected, as is a variant whose metric is NaN or infinite).

    The reference is the better of fp32 and the linear ``baseline`` (when measured):
    a neural model worse than the linear model is never published, and the baseline is
    published only when it is that reference (at least as good as fp32; a tie goes to the
    simpler model). A variant passes
    when its metric is at most ``max_accuracy_drop`` below the reference's and, when
    ``max_latency_ratio`` is given, its batch-1024 latency is at most that multiple of
    fp32's. Among those the smallest (or fastest) wins, the reference on a tie; when
    none passes, the reference is kept (fp32 when it has no finite metric).
    """
    if FP32 not in figures:
        raise ValueError("the fp32 variant must be measured: it is the reference")
    if select not in ("smallest", "fastest"):
        raise ValueError(f"compress.select={select!r}: use smallest or fastest")
    key = "file_bytes" if select == "smallest" else "latency_ms_b1024"
    candidates = [n for n in (LINEAR, FP32)
                  if n in figures and not figures[n].get("error")
                  and not math.isnan(_metric(figures[n]))]
    reasons: dict[str, str] = {}
    if not candidates:
        for name, f in figures.items():
            reasons[name] = (f"rejected: not measured ({f['error']})" if f.get("error") else
                             f"rejected: validation metric is {f.get('gate_metric')!r}, "
                             "not a number")
        reasons[FP32] = ("kept: fp32 has no finite validation metric, so no variant can be "
                         "compared with it")
        return FP32, reasons
    # max() keeps the first of equals: on a tie the linear model is the reference (equal
    # validation scores give no evidence for the network; the simpler model is the safer
    # bet on new data).
    ref_name = max(candidates, key=lambda n: _metric(figures[n]))
    ref = _metric(figures[ref_name])
    ref_latency = float(figures[FP32].get("latency_ms_b1024") or 0.0)
    passing = []
    for name, f in figures.items():
        if f.get("error"):
            reasons[name] = f"rejected: not measured ({f['error']})"
            continue
        metric = _metric(f)
        if math.isnan(metric):
            reasons[name] = (f"rejected: validation metric is {f.get('gate_metric')!r}, "
                             "not a number")
            continue
        drop = ref - metric
        vs = "" if ref_name == FP32 else f" (vs {ref_name})"
        if name == ref_name:
            fp32_metric = _metric(figures[FP32])
            verb = "ties with" if metric == fp32_metric else "beats"
            accuracy = "reference" + ("" if ref_name == FP32 else
                                      f": {metric:.4f} {verb} fp32's on validation")
        elif drop > max_accuracy_drop + _EPS:
            reasons[name] = f"rejected: accuracy drop {drop:+.4f} > {max_accuracy_drop}{vs}"
            continue
        elif name == LINEAR:
            # The linear model is a floor, not a compression: it is published only when it
            # beats fp32, never merely for being smaller than a model that scores better.
            reasons[name] = (f"not published: fp32 scores better on validation "
                             f"({ref:.4f} vs {metric:.4f}); the baseline is a fallback")
            continue
        else:
            accuracy = f"accuracy drop {drop:+.4f} <= {max_accuracy_drop}{vs}"
        if name != FP32 and max_latency_ratio is not None and ref_latency > 0:
            ratio = float(f["latency_ms_b1024"]) / ref_latency
            if ratio > max_latency_ratio:
                reasons[name] = (f"rejected: {accuracy} passes, but batch-1024 latency is "
                                 f"{ratio:.2f}x fp32's > {max_latency_ratio}")
                continue
        passing.append(name)
        reasons[name] = accuracy if name == ref_name else f"passes: {accuracy}"
    if not passing:
        reasons[ref_name] += "; kept: no variant passes"
        return ref_name, reasons
    # Ties go to the reference, then to fp32: a variant must beat them to be worth it.
    best = min(passing, key=lambda n: (float(figures[n][key]), n != ref_name, n != FP32, n))
    for name in passing:
        reasons[name] += f"; {select}" if name == best else f"; not the {select} ({best} is)"
    return best, reasons
