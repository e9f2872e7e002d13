"""The driver-side planning of ``score_parquet`` (no Spark: pyarrow only) and the
``raise-once`` fault action its retry test uses."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sparkforge.faults import ENV, InjectedFault, fault_point
from sparkforge.infer.files import Piece, group_pieces, list_pieces


def _write(path: Path, ids: range, row_group: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": [str(i) for i in ids]}), path, row_group_size=row_group)


def test_every_row_group_is_listed_once_with_its_partition_values(tmp_path: Path) -> None:
    """Row groups counted by pyarrow's writer (10 rows in groups of 4: 4, 4, 2), the
    ``key=value`` directories unescaped as Spark writes them, Spark's hidden names
    skipped, the files in path order."""
    _write(tmp_path / "split=test" / "part-0.parquet", range(10), 4)
    _write(tmp_path / "split=a%2Fb" / "part-0.parquet", range(10, 13), 4)
    _write(tmp_path / "split=__HIVE_DEFAULT_PARTITION__" / "part-0.parquet", range(13, 14), 4)
    (tmp_path / "_SUCCESS").touch()
    (tmp_path / "split=test" / ".part-0.parquet.crc").write_bytes(b"x")
    _write(tmp_path / "_temporary" / "0" / "part-9.parquet", range(99), 50)
    pieces, schema, keys = list_pieces(str(tmp_path))
    assert schema.names == ["id"]
    assert keys == ["split"]
    assert [(Path(p.path).parent.name, p.row_group, p.rows, p.partition) for p in pieces] == [
        ("split=__HIVE_DEFAULT_PARTITION__", 0, 1, (("split", None),)),
        ("split=a%2Fb", 0, 3, (("split", "a/b"),)),
        ("split=test", 0, 4, (("split", "test"),)),
        ("split=test", 1, 4, (("split", "test"),)),
        ("split=test", 2, 2, (("split", "test"),)),
    ]
    one, _, _ = list_pieces(str(tmp_path / "split=test" / "part-0.parquet"))  # a single file
    assert [(p.row_group, p.rows, p.partition) for p in one] == [(0, 4, ()), (1, 4, ()),
                                                                 (2, 2, ())]


def test_groups_are_consecutive_and_balanced_by_rows() -> None:
    pieces = [Piece("f", i, rows, ()) for i, rows in enumerate([10, 10, 10, 10, 40, 5, 5])]
    groups = group_pieces(pieces, 3)
    assert [p for g in groups for p in g] == pieces  # every piece once, in order
    assert [sum(p.rows for p in g) for g in groups] == [30, 50, 10]
    assert len(group_pieces(pieces, 100)) == len(pieces)  # never more groups than pieces
    assert group_pieces(pieces, 1) == [pieces]
    # One row group larger than a task's share still leaves every task some work.
    big = [Piece("f", 0, 100, ()), Piece("f", 1, 1, ()), Piece("f", 2, 1, ())]
    assert group_pieces(big, 3) == [[big[0]], [big[1]], [big[2]]]
    assert group_pieces([], 4) == []


def test_raise_once_raises_in_the_first_caller_only(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "fired"
    monkeypatch.setenv(ENV, f"p=raise-once:{marker}")
    with pytest.raises(InjectedFault, match="injected fault at p"):
        fault_point("p")
    assert marker.exists()
    fault_point("p")  # the file is there: no fault
    fault_point("q")  # another point: nothing
