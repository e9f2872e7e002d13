"""bench_score_stage's split of a run into its fixed part and the part the rows cost."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import pytest
from benchmarks import bench_score_stage as b


def test_head_table_keeps_the_header_and_the_first_rows(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    rows = [["a", "b"], *[[str(i), f"x{i}"] for i in range(50)]]
    with table.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    out = b.head_table(table, 7, tmp_path / "head.csv")
    with out.open(newline="") as fh:
        got = list(csv.reader(fh))
    assert got == rows[:8]  # the header and 7 rows


def test_fixed_lines_subtract_the_medians() -> None:
    walls = {"old": [60.0, 54.0, 56.0], "new": [31.0, 30.0, 33.0]}
    fixed = {"old": [25.0, 24.0, 26.0], "new": [17.0, 18.0, 16.0]}
    text = "\n".join(b.fixed_lines(walls, fixed, rows=300_000, fixed_rows=1_000))
    # Reference figures from the medians, computed here on their own.
    m_old, m_new = statistics.median(walls["old"]), statistics.median(walls["new"])
    f_old, f_new = statistics.median(fixed["old"]), statistics.median(fixed["new"])
    assert (m_old, m_new, f_old, f_new) == (56.0, 31.0, 25.0, 17.0)
    assert f"| old | {m_old:.1f} | {f_old:.1f} | {m_old - f_old:.1f} |" in text
    assert f"| new | {m_new:.1f} | {f_new:.1f} | {m_new - f_new:.1f} |" in text
    assert f"new is **{f_old / f_new:.2f}x** faster" in text                        # 1.47x
    assert f"(299,000 more rows): new is **{(m_old - f_old) / (m_new - f_new):.2f}x**" in text
    assert f"takes {m_old / 3:.1f} s; the new side's fixed part alone is 17.0 s" in text
    assert f"({f_new / (m_old / 3):.0%})" in text


@pytest.mark.parametrize("argv", [["--rows", "1000", "--fixed-rows", "1000"],
                                  ["--fixed-rows", "-1"]])
def test_fixed_rows_must_be_below_the_table(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as e:
        b.parse_args(argv)
    assert e.value.code == 2
