"""Pieces every benchmark shares: machine description, machine-wide CPU counter, and
replacing one benchmark's own section of BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import re
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
