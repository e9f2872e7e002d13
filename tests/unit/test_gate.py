"""The accuracy gate on crafted figures: the boundary, NaN, the linear baseline, fallbacks.

Every expectation is written out by hand from the rule (a variant passes when its metric
is at most max_accuracy_drop below the better of fp32 and the baseline).
"""

from __future__ import annotations

import math

import pytest

from sparkforge.compress.gate import select_variant


def fig(acc: float, size: int, lat: float) -> dict[str, float]:
    return {"gate_metric": acc, "file_bytes": size, "latency_ms_b1024": lat}


def test_picks_smallest_passing_variant() -> None:
    figures = {"fp32": fig(0.90, 100, 10.0), "int8_dynamic": fig(0.895, 25, 6.0),
               "pruned": fig(0.85, 10, 3.0)}
    chosen, why = select_variant(figures, 0.01, "smallest")
    assert chosen == "int8_dynamic"
    assert why["pruned"] == "rejected: accuracy drop +0.0500 > 0.01"


def test_fastest_criterion() -> None:
    figures = {"fp32": fig(0.90, 100, 10.0), "a": fig(0.90, 20, 8.0), "b": fig(0.90, 30, 4.0)}
    assert select_variant(figures, 0.01, "fastest")[0] == "b"
    assert select_variant(figures, 0.01, "smallest")[0] == "a"


@pytest.mark.parametrize(("acc", "passes"), [
    (0.89, True),      # a drop of exactly the limit (0.90 - 0.89 is 0.010000000000000009)
    (0.8899, False),   # 0.0101: just above
    (0.8895, False),   # 0.0105
    (0.88, False),     # twice the limit
])
def test_drop_at_the_limit_passes_and_just_above_fails(acc: float, passes: bool) -> None:
    figures = {"fp32": fig(0.90, 100, 10.0), "int8_dynamic": fig(acc, 25, 6.0)}
    chosen, why = select_variant(figures, 0.01, "smallest")
    assert chosen == ("int8_dynamic" if passes else "fp32")
    assert why["int8_dynamic"].startswith("passes" if passes else "rejected: accuracy drop")


def test_limit_scales_with_max_accuracy_drop() -> None:
    figures = {"fp32": fig(0.90, 100, 10.0), "int8_dynamic": fig(0.87, 25, 6.0)}
    assert select_variant(figures, 0.03, "smallest")[0] == "int8_dynamic"
    assert select_variant(figures, 0.029, "smallest")[0] == "fp32"
    assert select_variant(figures, 0.0, "smallest")[0] == "fp32"
    same = {"fp32": fig(0.90, 100, 10.0), "int8_dynamic": fig(0.90, 25, 6.0)}
    assert select_variant(same, 0.0, "smallest")[0] == "int8_dynamic"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, None, "n/a"])
def test_non_finite_metric_is_rejected_with_a_reason(bad: object) -> None:
    figures = {"fp32": fig(0.90, 100, 10.0),
               "int8_dynamic": {"gate_metric": bad, "file_bytes": 25, "latency_ms_b1024": 6.0}}
    chosen, why = select_variant(figures, 0.01, "smallest")
    assert chosen == "fp32"
    assert why["int8_dynamic"] == f"rejected: validation metric is {bad!r}, not a number"


def test_falls_back_to_fp32_and_records_why() -> None:
    figures = {"fp32": fig(0.90, 100, 10.0), "int8_dynamic": fig(0.87, 25, 6.0)}
    chosen, why = select_variant(figures, 0.01, "smallest")
    assert chosen == "fp32"
    assert why == {"fp32": "reference; smallest",
                   "int8_dynamic": "rejected: accuracy drop +0.0300 > 0.01"}


def test_a_variant_no_smaller_than_fp32_loses_the_tie() -> None:
    figures = {"fp32": fig(0.90, 100, 10.0), "fp16": fig(0.90, 100, 9.0)}
    chosen, why = select_variant(figures, 0.01, "smallest")
    assert chosen == "fp32"
    assert why["fp16"] == "passes: accuracy drop +0.0000 <= 0.01; not the smallest (fp32 is)"


def test_baseline_better_than_fp32_is_the_reference_and_wins() -> None:
    # The neural model is 0.05 below the linear one: neither it nor its int8 may be published.
    figures = {"fp32": fig(0.70, 100, 10.0), "int8_dynamic": fig(0.70, 25, 6.0),
               "baseline": fig(0.75, 400, 2.0)}
    chosen, why = select_variant(figures, 0.01, "smallest")
    assert chosen == "baseline"
    assert why == {
        "fp32": "rejected: accuracy drop +0.0500 > 0.01 (vs baseline)",
        "int8_dynamic": "rejected: accuracy drop +0.0500 > 0.01 (vs baseline)",
        "baseline": "reference: 0.7500 beats fp32's on validation; smallest"}


def test_neural_variant_within_the_limit_of_a_better_baseline_passes() -> None:
    figures = {"fp32": fig(0.745, 100, 10.0), "int8_dynamic": fig(0.742, 25, 6.0),
               "baseline": fig(0.75, 400, 2.0)}
    chosen, why = select_variant(figures, 0.01, "smallest")
    assert chosen == "int8_dynamic"
    assert why["int8_dynamic"] == "passes: accuracy drop +0.0080 <= 0.01 (vs baseline); smallest"
    assert why["baseline"].startswith("reference: 0.7500")
    assert why["fp32"] == "passes: accuracy drop +0.0050 <= 0.01 (vs baseline); " \
                          "not the smallest (int8_dynamic is)"


def test_baseline_not_better_than_fp32_is_never_published() -> None:
    figures = {"fp32": fig(0.90, 100, 10.0), "int8_dynamic": fig(0.899, 25, 6.0),
               "baseline": fig(0.85, 5, 1.0)}
    chosen, why = select_variant(figures, 0.01, "smallest")
    assert chosen == "int8_dynamic"
    assert why["baseline"] == "rejected: accuracy drop +0.0500 > 0.01"
    # Within the limit and smaller, but not better than fp32: the linear model is a
    # fallback, never published for its size over a model that scores better.
    figures["baseline"] = fig(0.895, 5, 1.0)
    chosen, why = select_variant(figures, 0.01, "smallest")
    assert chosen == "int8_dynamic"
    assert why["baseline"].startswith("not published: fp32 scores better")


def test_a_tie_with_the_baseline_makes_it_the_reference() -> None:
    """Equal validation scores give no evidence for the network: the linear model is the
    reference, and the smaller of the two is published."""
    figures = {"fp32": fig(0.80, 100, 10.0), "baseline": fig(0.80, 400, 2.0)}
    chosen, why = select_variant(figures, 0.01, "smallest")
    assert chosen == "fp32"
    assert why["baseline"] == ("reference: 0.8000 ties with fp32's on validation; "
                               "not the smallest (fp32 is)")
    assert why["fp32"] == "passes: accuracy drop +0.0000 <= 0.01 (vs baseline); smallest"
    figures["baseline"] = fig(0.80, 5, 1.0)
    assert select_variant(figures, 0.01, "smallest")[0] == "baseline"


def test_failed_or_nan_baseline_leaves_fp32_the_reference() -> None:
    for base in ({"error": "build failed: one class"}, fig(math.nan, 5, 1.0)):
        figures = {"fp32": fig(0.70, 100, 10.0), "int8_dynamic": fig(0.695, 25, 6.0),
                   "baseline": base}
        chosen, why = select_variant(figures, 0.01, "smallest")
        assert chosen == "int8_dynamic"
        assert why["baseline"].startswith("rejected: ")
        assert why["int8_dynamic"] == "passes: accuracy drop +0.0050 <= 0.01; smallest"


def test_nan_fp32_keeps_fp32_and_says_why() -> None:
    figures = {"fp32": fig(math.nan, 100, 10.0), "int8_dynamic": fig(0.9, 25, 6.0)}
    chosen, why = select_variant(figures, 0.01, "smallest")
    assert chosen == "fp32"
    assert "no finite validation metric" in why["fp32"]
    assert why["int8_dynamic"].startswith("rejected")


def test_nan_fp32_with_a_finite_baseline_publishes_the_baseline() -> None:
    figures = {"fp32": fig(math.nan, 100, 10.0), "baseline": fig(0.8, 400, 2.0)}
    chosen, why = select_variant(figures, 0.01, "smallest")
    assert chosen == "baseline"
    assert why["fp32"] == "rejected: validation metric is nan, not a number"


def test_requires_fp32_reference() -> None:
    with pytest.raises(ValueError, match="fp32"):
        select_variant({"int8_dynamic": fig(0.9, 1, 1)}, 0.01)
