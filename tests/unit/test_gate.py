"""The accuracy gate on crafted figures."""

from __future__ import annotations

import pytest

from sparkforge.compress.gate import select_variant


def fig(acc: float, size: int, lat: float) -> dict[str, float]:
    return {"gate_metric": acc, "file_bytes": size, "latency_ms_b1024": lat}


def test_picks_smallest_passing_variant() -> None:
    figures = {"fp32": fig(0.90, 100, 10.0), "int8_dynamic": fig(0.895, 25, 6.0),
               "pruned": fig(0.85, 10, 3.0)}
    chosen, why = select_variant(figures, 0.01, "smallest")
    assert chosen == "int8_dynamic"
    assert why["pruned"].startswith("rejected")


def test_fastest_criterion() -> None:
    figures = {"fp32": fig(0.90, 100, 10.0), "a": fig(0.90, 20, 8.0), "b": fig(0.90, 30, 4.0)}
    assert select_variant(figures, 0.01, "fastest")[0] == "b"
    assert select_variant(figures, 0.01, "smallest")[0] == "a"


def test_falls_back_to_fp32_and_records_why() -> None:
    figures = {"fp32": fig(0.90, 100, 10.0), "int8_dynamic": fig(0.87, 25, 6.0)}
    chosen, why = select_variant(figures, 0.01, "smallest")
    assert chosen == "fp32"
    assert "drop +0.0300 > 0.01" in why["int8_dynamic"]


def test_requires_fp32_reference() -> None:
    with pytest.raises(ValueError, match="fp32"):
        select_variant({"int8_dynamic": fig(0.9, 1, 1)}, 0.01)
