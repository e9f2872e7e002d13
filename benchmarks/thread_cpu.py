"""CPU seconds by process and thread while a command runs: where a run's CPU goes.

    .venv/bin/python -m benchmarks.thread_cpu [--interval 0.3] [--top 25] -- CMD ARGS...

Used for the score stage (BENCHMARKS.md, "Score stage"): on 2 cores a fresh driver JVM
spends a large share of its CPU in its JIT compiler threads, which no Spark metric shows.
While ``CMD`` runs, ``/proc`` is read every ``--interval`` seconds and each thread's last
reading (user + system time) is kept. Rows group what is alike: Java threads by name with
digits folded (``C2 CompilerThread0`` and ``...1`` are one row), other processes by their
command (``python -m pyspark.daemon`` and the workers it forks are one row). Rows of
processes outside ``CMD``'s tree (other load on the machine, kernel threads) are marked
``outside``: they took CPU from the run too. The machine's busy CPU seconds over the run
(``/proc/stat``, :func:`benchmarks._common.machine_cpu`) are printed beside its capacity
(cores x wall).

Linux only. A Java thread that starts and ends between two readings is missed (processes
are read whole, their ended threads included), so the rows are a lower bound.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from benchmarks._common import machine_cpu

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(path: Path) -> tuple[str, int, int] | None:
    """(name, parent pid, CPU ticks) from a /proc stat file, or None when it is gone."""
    try:
        s = path.read_text()
    except OSError:
        return None
    name = s[s.index("(") + 1:s.rindex(")")]
    f = s[s.rindex(")") + 2:].split()
    return name, int(f[1]), int(f[11]) + int(f[12])


def _label(pid: str, comm: str) -> str:
    """A process's row: its program and the module or script it runs."""
    try:
        argv = [a.decode(errors="replace")
                for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        argv = []
    if not argv:
        return f"[{comm}]"  # a kernel thread
    prog = Path(argv[0]).name
    if prog.startswith("python") and len(argv) > 1:
        rest = argv[1:]
        if "-m" in rest[:-1]:
            return f"{prog} -m {rest[rest.index('-m') + 1]}"
        return f"{prog} {next((a for a in rest if not a.startswith('-')), rest[0])}"
    return prog


def _fold(thread: str) -> str:
    """A Java thread's row: digits folded, but for the compiler's tier ("C1 ", "C2 ")."""
    head = thread[:3] if re.match(r"C[12] ", thread) else ""
    return head + re.sub(r"[0-9]+", "N", thread[len(head):])


def read_once(seen: dict[tuple[str, str | None], tuple[str, int]],
              tree: set[str], root: str) -> None:
    """One pass over /proc: updates ``seen`` ((pid, tid or None) -> (row, ticks)) and
    ``tree`` (pids descending from ``root``)."""
    parents: dict[str, str] = {}
    for entry in Path("/proc").iterdir():
        pid = entry.name
        if not pid.isdigit():
            continue
        st = _stat(Path(f"/proc/{pid}/stat"))
        if st is None:
            continue
        comm, ppid, ticks = st
        parents[pid] = str(ppid)
        if comm == "java":
            try:
                tids = [t.name for t in Path(f"/proc/{pid}/task").iterdir()]
            except OSError:
                continue
            for tid in tids:
                tst = _stat(Path(f"/proc/{pid}/task/{tid}/stat"))
                if tst is not None:
                    seen[(pid, tid)] = (f"java: {_fold(tst[0])}", tst[2])
        else:
            # A process keeps the row it was first seen with: an exited one not yet
            # reaped (a zombie) has its final times but no command line.
            known = seen.get((pid, None))
            row = known[0] if known and not known[0].startswith("[") else _label(pid, comm)
            seen[(pid, None)] = (row, ticks)
    for pid in parents:  # once in the tree, always in it (its parent may exit first)
        p, hops = pid, 0
        while p in parents and p not in tree and p != root and hops < 64:
            p, hops = parents[p], hops + 1
        if p == root or p in tree:
            tree.add(pid)


def summarize(seen: dict[tuple[str, str | None], tuple[str, int]], tree: set[str],
              base: dict[tuple[str, str | None], int]) -> dict[tuple[str, str], float]:
    """CPU seconds per (row, "run" or "outside"), counting only what was spent after the
    first reading (``base``)."""
    out: dict[tuple[str, str], float] = defaultdict(float)
    for key, (row, ticks) in seen.items():
        spent = ticks - base.get(key, 0)
        if spent > 0:
            out[(row, "run" if key[0] in tree else "outside")] += spent / TICK
    return dict(out)


def measure(cmd: list[str], interval: float) -> tuple[int, dict[tuple[str, str], float],
                                                          float, float]:
    """Runs ``cmd``; returns (its exit code, CPU seconds per row, wall s, the machine's busy
    CPU s). Raises OSError when ``cmd`` cannot be started."""
    seen: dict[tuple[str, str | None], tuple[str, int]] = {}
    tree: set[str] = set()
    read_once(seen, tree, "-")
    base = {k: t for k, (_, t) in seen.items()}
    busy0 = machine_cpu()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    root = str(proc.pid)
    tree.add(root)
    while True:
        # Read before looking for the exit, which does not reap it: an exited process
        # keeps its final times until it is reaped (proc.wait below).
        read_once(seen, tree, root)
        if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            break
        time.sleep(interval)
    proc.wait()
    wall = time.perf_counter() - t0
    return proc.returncode, summarize(seen, tree, base), wall, machine_cpu() - busy0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--interval", type=float, default=0.3, help="seconds between readings")
    p.add_argument("--top", type=int, default=25, help="rows to print")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = p.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        p.error("give the command to measure after --")
    if args.interval <= 0:
        p.error(f"--interval {args.interval}: give the seconds between readings, above 0 "
                "(say 0.3)")
    if args.top < 1:
        p.error(f"--top {args.top}: give how many rows to print, 1 or more (say 25)")
    if not Path("/proc/stat").exists():
        p.error("this needs Linux's /proc")
    try:
        rc, rows, wall, busy = measure(cmd, args.interval)
    except OSError as e:
        p.error(f"cannot start {cmd[0]!r}: {e.strerror or e}; give a program on PATH or its "
                "path")
    total = sum(v for (_, where), v in rows.items() if where == "run")
    cores = os.cpu_count() or 1
    print(f"exit code {rc}; wall {wall:.1f} s; the command's processes {total:.1f} CPU s; "
          f"machine busy {busy:.1f} of {cores * wall:.1f} CPU s ({cores} CPUs)")
    for (row, where), v in sorted(rows.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"{v:8.1f}  {where:<7}  {row[:90]}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
