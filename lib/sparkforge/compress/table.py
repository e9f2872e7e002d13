"""The compress stage's console table: one row per variant with its size, latency,
validation metric, parity and the gate's decision (``*`` marks the selected one)."""

from __future__ import annotations

from typing import Any


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
