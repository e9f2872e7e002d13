"""The gate with the variants of issue 5: failures, slow variants, reasons for every row."""

from __future__ import annotations

from sparkforge.compress.gate import select_variant
from sparkforge.jobs.compress import format_table


def fig(acc: float, size: int, lat: float) -> dict[str, float]:
    return {"gate_metric": acc, "file_bytes": size, "latency_ms_b1024": lat}


def test_unmeasurable_variant_is_rejected_with_its_error() -> None:
    figures = {"fp32": fig(0.90, 100, 10.0), "int8_dynamic": fig(0.899, 25, 5.0),
               "fp16": {"error": "measurement failed: no fp16 kernel", "file_bytes": 50}}
    chosen, why = select_variant(figures, 0.01, "smallest")
    assert chosen == "int8_dynamic"
    assert why["fp16"] == "rejected: not measured (measurement failed: no fp16 kernel)"


def test_slower_than_fp32_is_rejected_by_latency_ratio() -> None:
    figures = {"fp32": fig(0.90, 100, 10.0), "fp16": fig(0.90, 50, 30.0),
               "pruned": fig(0.895, 60, 6.0)}
    chosen, why = select_variant(figures, 0.01, "smallest", max_latency_ratio=1.25)
    assert chosen == "pruned"
    assert "3.00x fp32's > 1.25" in why["fp16"]
    assert why["pruned"].endswith("; smallest")
    # Without the latency limit the smaller fp16 wins.
    assert select_variant(figures, 0.01, "smallest")[0] == "fp16"


def test_every_passing_loser_says_who_won() -> None:
    figures = {"fp32": fig(0.90, 100, 10.0), "int8_dynamic": fig(0.90, 25, 6.0),
               "pruned_int8": fig(0.899, 12, 3.0), "distilled": fig(0.80, 5, 1.0)}
    chosen, why = select_variant(figures, 0.01, "fastest", max_latency_ratio=1.25)
    assert chosen == "pruned_int8"
    assert why["int8_dynamic"].endswith("not the fastest (pruned_int8 is)")
    assert why["distilled"] == "rejected: accuracy drop +0.1000 > 0.01"


def test_falls_back_to_fp32_when_nothing_passes_and_records_why() -> None:
    figures = {"fp32": fig(0.90, 100, 10.0), "distilled": fig(0.85, 5, 1.0),
               "fp16": {"error": "build failed: boom"}}
    chosen, why = select_variant(figures, 0.01, "smallest", max_latency_ratio=1.25)
    assert chosen == "fp32"
    assert why == {"fp32": "reference; smallest",
                   "distilled": "rejected: accuracy drop +0.0500 > 0.01",
                   "fp16": "rejected: not measured (build failed: boom)"}


def test_table_has_a_row_per_variant_and_marks_the_choice() -> None:
    ok = {**fig(0.9, 1_000_000, 10.0), "latency_ms_b1": 1.0, "size_ratio": 1.0,
          "latency_ratio_b1024": 1.0, "parity_max_abs_prob_diff": 1e-7,
          "parity_agreement": 1.0, "decision": "reference"}
    small = {**ok, "file_bytes": 250_000, "size_ratio": 0.25, "decision": "passes; smallest"}
    failed = {"error": "x", "file_bytes": 0, "decision": "rejected: not measured (x)"}
    table = format_table({"fp32": ok, "int8_dynamic": small, "fp16": failed}, "int8_dynamic")
    lines = table.splitlines()
    assert lines[0].startswith("variant")
    assert lines[1].startswith(" fp32")
    assert lines[2].startswith("*int8_dynamic")
    assert "0.25" in lines[2]
    assert lines[3].startswith(" fp16")
    assert lines[3].endswith("rejected: not measured (x)")
