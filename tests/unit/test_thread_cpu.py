"""benchmarks/thread_cpu.py: the CPU it attributes to a command, against the command's own
process time (what the process itself counted)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from benchmarks import thread_cpu

pytestmark = pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux /proc")

BUSY = """
import sys, time
t = time.process_time()
while time.process_time() - t < 1.0:
    pass
open(sys.argv[1], "w").write(repr(time.process_time()))
sys.exit(3)
"""


def test_a_commands_cpu_is_attributed_to_it_and_its_exit_code_kept(tmp_path: Path) -> None:
    script, own = tmp_path / "busy.py", tmp_path / "own.txt"
    script.write_text(BUSY)
    rc, rows, wall, busy = thread_cpu.measure([sys.executable, str(script), str(own)],
                                                 interval=0.7)
    assert rc == 3
    # Readings 0.7 s apart: the last one before the exit is up to 0.7 CPU s short; the
    # final times are read from the exited (not yet reaped) process.
    counted = float(own.read_text())  # the child's own figure, the reference
    mine = rows[(f"{Path(sys.executable).name} {script}", "run")]
    assert counted - 0.15 <= mine <= counted + 0.15, (mine, counted, rows)
    # The measuring process (this one) is not part of the run, and the run's rows hold
    # the child's CPU alone; the machine was busy at least as long.
    me = thread_cpu._label(str(os.getpid()), "python")
    assert rows[(me, "outside")] > 0, rows
    assert (me, "run") not in rows, rows
    assert sum(v for (_, where), v in rows.items() if where == "run") <= counted + 0.15
    assert busy >= mine - 0.05
    assert wall >= 1.0


def test_java_thread_names_fold_their_numbers_but_not_the_compiler_tier() -> None:
    assert thread_cpu._fold("C2 CompilerThre") == "C2 CompilerThre"
    assert thread_cpu._fold("C1 CompilerThre") == "C1 CompilerThre"
    assert thread_cpu._fold("GC Thread#12") == "GC Thread#N"
    assert thread_cpu._fold("Executor task launch worker for task 3.0") == \
        "Executor task launch worker for task N.N"


def test_rows_fold_thread_numbers_and_keep_outside_apart() -> None:
    t = thread_cpu.TICK
    seen = {("10", "11"): ("java: C2 CompilerThreN", 5 * t),
            ("10", "12"): ("java: C2 CompilerThreN", 3 * t),
            ("10", "13"): ("java: Executor task launch worker for task N", 2 * t),
            ("10", "14"): ("java: C1 CompilerThreN", 1 * t),
            ("20", None): ("[kdamond.N]", 4 * t)}
    base = {("10", "11"): 1 * t, ("20", None): 1 * t}  # spent before the run started
    rows = thread_cpu.summarize(seen, {"10"}, base)
    assert rows == {("java: C2 CompilerThreN", "run"): 7.0,
                    ("java: Executor task launch worker for task N", "run"): 2.0,
                    ("java: C1 CompilerThreN", "run"): 1.0,
                    ("[kdamond.N]", "outside"): 3.0}


@pytest.mark.parametrize(("argv", "says"), [
    (["--"], "give the command"),
    (["--interval", "0", "--", sys.executable, "-c", "pass"], "--interval 0.0"),
    (["--", "/no/such/program"], "cannot start '/no/such/program'"),
    (["--top", "0", "--", sys.executable, "-c", "pass"], "--top 0"),
])
def test_a_bad_command_line_is_a_usage_error(argv: list[str], says: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        thread_cpu.main(argv)
    assert e.value.code == 2
    assert says in capsys.readouterr().err
