"""Pieces every benchmark shares: machine description, CPU counters (the whole machine,
this process tree), waiting for a quiet machine, and replacing one benchmark's own
section of BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import re
import time
from collections.abc import Callable
from pathlib import Path

HEADER = ("# Benchmarks\n\nSide-by-side ratio benchmarks (`benchmarks/`): each section is "
          "written by its benchmark and replaced when it is rerun.\n")


def machine_cpu() -> float:
    """CPU seconds the whole machine has been busy (all cores; /proc/stat), 0 elsewhere."""
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0
    return (sum(f[:8]) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def tree_ticks() -> dict[int, int]:
    """CPU ticks (user + system, reaped children included) of this process and each of its
    descendants (the Spark JVM and its Python workers), by pid."""
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            f = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(d.name)] = int(f[1])
        ticks[int(d.name)] = sum(int(x) for x in f[11:15])  # utime stime cutime cstime
    me, mine = os.getpid(), {}
    for pid, t in ticks.items():
        p = pid
        while p > 1 and p != me:
            p = parent.get(p, 0)
        if p == me:
            mine[pid] = t
    return mine


def tree_cpu() -> float:
    """CPU seconds used so far by this process and its descendants (see tree_ticks)."""
    return sum(tree_ticks().values()) / os.sysconf("SC_CLK_TCK")


def wait_quiet(max_wait: float, own_cpu: Callable[[], float] = tree_cpu,
               threshold: float = 0.2, window: float = 3.0) -> float:
    """Wait (at most ``max_wait`` s) until processes other than ours (``own_cpu``) use
    < ``threshold`` cores over ``window`` s; returns the seconds waited."""
    t0 = time.perf_counter()
    while True:
        m0, c0 = machine_cpu(), own_cpu()
        time.sleep(window)
        others = (machine_cpu() - m0 - (own_cpu() - c0)) / window
        waited = time.perf_counter() - t0
        if others < threshold or waited >= max_wait:
            return waited


def machine() -> dict[str, str]:
    cpu = mem = "unknown"
    try:
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = m.group(1).strip() if m else cpu
        m = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        mem = f"{int(m.group(1)) / 2**20:.1f} GiB" if m else mem
    except OSError:
        pass
    return {"nproc": str(os.cpu_count()), "cpu": cpu, "ram": mem,
            "python": platform.python_version()}


def write_section(md: Path, section: str, text: str) -> None:
    """Replace the ``section`` heading's part of ``md`` with ``text`` (or append it).

    The file is re-read right before writing: other benchmarks own the other sections."""
    body = md.read_text() if md.exists() else HEADER
    start = body.find(section + "\n")
    if start < 0:
        body = body.rstrip("\n") + "\n\n" + text
    else:
        after = start + len(section) + 1
        nxt = re.search(r"^## ", body[after:], re.M)
        rest = body[after + nxt.start():] if nxt else ""
        body = body[:start] + text.rstrip("\n") + "\n" + ("\n" + rest if rest else "")
    md.write_text(body)
