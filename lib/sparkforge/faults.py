"""Named fault-injection points, for the fault tests (off unless ``SPARKFORGE_FAULTS`` is set).

Production code calls :func:`fault_point` at the few places where a crash matters for
correctness (between staging and publishing a score run, for example). It does
nothing unless the environment variable names that point::

    SPARKFORGE_FAULTS="score.before_publish=kill"          # SIGKILL this process there
    SPARKFORGE_FAULTS="score.before_publish=sleep:30"      # pause there (a test kills it)
    SPARKFORGE_FAULTS="score.before_publish=raise"         # raise InjectedFault
    SPARKFORGE_FAULTS="score_parquet.task_written=raise-once:/tmp/fired"
        # raise in the first process to get there (it creates the file), not after: a
        # Spark task's first attempt fails and its retry goes through

Several points are separated by commas. Keeping the hook in the environment (not in
function signatures) leaves the production API free of test parameters.
"""

from __future__ import annotations

import logging
import os
import signal
import time

log = logging.getLogger(__name__)

ENV = "SPARKFORGE_FAULTS"


class InjectedFault(RuntimeError):
    """Raised at a fault point whose action is ``raise``."""


def _actions() -> dict[str, str]:
    spec = os.environ.get(ENV, "")
    out: dict[str, str] = {}
    for item in spec.split(","):
        name, sep, action = item.strip().partition("=")
        if name and sep:
            out[name.strip()] = action.strip()
    return out


def fault_point(name: str) -> None:
    """Crash, pause or raise here when ``SPARKFORGE_FAULTS`` names ``name``; else nothing."""
    action = _actions().get(name)
    if not action:
        return
    log.warning("fault point %s: %s (%s)", name, action, ENV)
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action.startswith("sleep:"):
        time.sleep(float(action.split(":", 1)[1]))
    elif action == "raise":
        raise InjectedFault(f"injected fault at {name}")
    elif action.startswith("raise-once:"):
        try:  # O_EXCL: of several processes that get here, exactly one creates the file
            os.close(os.open(action.split(":", 1)[1], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        raise InjectedFault(f"injected fault at {name} (once)")
    else:
        raise ValueError(f"{ENV}: unknown action {action!r} for {name}; use kill, sleep:S, "
                         "raise or raise-once:PATH")
