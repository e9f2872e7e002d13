"""A pyspark daemon whose Python tasks wait at a gate the test controls (fault tests only).

Spark starts it on the executors in place of ``pyspark.daemon`` when a run sets
``spark.python.daemon.module=gated_daemon`` (with this folder on
``spark.executorEnv.PYTHONPATH``). Every Python task first writes
``$SPARKFORGE_TEST_GATE/started-<pid>-<n>.json`` (its pid and its working directory,
which is the executor's folder under one worker's work dir), then waits until the test
writes ``release-<same name>`` or ``open``. The test so knows which worker runs a task
at the moment it kills that worker, instead of racing a sub-second task.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

import pyspark.daemon as _daemon

GATE_ENV = "SPARKFORGE_TEST_GATE"
# A gate nobody opens must not hang a run forever.
MAX_WAIT_S = 300.0
_count = itertools.count()


def wait_at_gate() -> None:
    gate = os.environ.get(GATE_ENV)
    if not gate:
        return
    d = Path(gate)
    if (d / "open").exists():
        return
    name = f"started-{os.getpid()}-{next(_count)}.json"
    tmp = d / f".{name}.tmp"
    tmp.write_text(json.dumps({"pid": os.getpid(), "cwd": str(Path.cwd()), "t": time.time()}))
    tmp.replace(d / name)
    deadline = time.monotonic() + MAX_WAIT_S
    while time.monotonic() < deadline:
        if (d / "open").exists() or (d / f"release-{name}").exists():
            return
        time.sleep(0.02)


_real_worker = _daemon.worker


def worker(sock: Any, authenticated: bool) -> int:
    """Runs in the forked child: gate every task of this (possibly reused) worker."""
    import pyspark.worker as w

    if not getattr(w, "_gated", False):
        real_main = w.main

        def main(infile: Any, outfile: Any) -> None:
            wait_at_gate()
            real_main(infile, outfile)

        w.main = main  # type: ignore[assignment]
        w._gated = True  # type: ignore[attr-defined]
    return int(_real_worker(sock, authenticated))


_daemon.worker = worker

if __name__ == "__main__":
    _daemon.manager()
