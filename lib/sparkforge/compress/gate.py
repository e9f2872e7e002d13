"""The accuracy gate: choose the variant scoring uses from measured figures."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

BASELINE = "fp32"


def select_variant(figures: Mapping[str, Mapping[str, Any]], max_accuracy_drop: float,
                   select: str = "smallest", max_latency_ratio: float | None = None
                   ) -> tuple[str, dict[str, str]]:
    """Return (chosen variant, a reason per variant).

    ``figures[v]`` holds ``gate_metric`` (accuracy; R2 for regression), ``file_bytes``
    and ``latency_ms_b1024``, or ``error`` when the variant could not be built or
    measured (it is then rejected). A variant passes when its accuracy is at most
    ``max_accuracy_drop`` below fp32's and, when ``max_latency_ratio`` is given, its
    batch-1024 latency is at most that multiple of fp32's; among those the smallest
    (or fastest) wins; fp32 is chosen when none passes or none beats it on the criterion.
    """
    if BASELINE not in figures:
        raise ValueError("the fp32 variant must be measured: it is the reference")
    if select not in ("smallest", "fastest"):
        raise ValueError(f"compress.select={select!r}: use smallest or fastest")
    ref = float(figures[BASELINE]["gate_metric"])
    ref_latency = float(figures[BASELINE]["latency_ms_b1024"])
    key = "file_bytes" if select == "smallest" else "latency_ms_b1024"
    reasons: dict[str, str] = {BASELINE: "reference"}
    passing = []
    for name, f in figures.items():
        if name == BASELINE:
            continue
        if f.get("error"):
            reasons[name] = f"rejected: not measured ({f['error']})"
            continue
        drop = ref - float(f["gate_metric"])
        if drop > max_accuracy_drop + 1e-12:
            reasons[name] = f"rejected: accuracy drop {drop:+.4f} > {max_accuracy_drop}"
            continue
        ratio = float(f["latency_ms_b1024"]) / ref_latency if ref_latency > 0 else 1.0
        if max_latency_ratio is not None and ratio > max_latency_ratio:
            reasons[name] = (f"rejected: accuracy drop {drop:+.4f} passes, but batch-1024 "
                             f"latency is {ratio:.2f}x fp32's > {max_latency_ratio}")
            continue
        passing.append(name)
        reasons[name] = f"passes: accuracy drop {drop:+.4f} <= {max_accuracy_drop}"
    if not passing:
        return BASELINE, reasons
    best = min(passing, key=lambda n: (float(figures[n][key]), n))
    # A compressed variant must beat fp32 on the chosen criterion to be worth it.
    if float(figures[best][key]) >= float(figures[BASELINE][key]):
        reasons[best] += f"; but not {select.replace('est', 'er')} than fp32"
        return BASELINE, reasons
    reasons[best] += f"; {select}"
    for name in passing:
        if name != best:
            reasons[name] += f"; not the {select} ({best} is)"
    return best, reasons
