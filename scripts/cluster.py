"""A Spark standalone cluster on 127.0.0.1 (a master and N workers) for tests and demos.

    python -m scripts.cluster up   [--workers 2] [--cores 1] [--memory 1g] [--dir .cluster]
    python -m scripts.cluster down [--dir .cluster]
    python -m scripts.cluster status [--dir .cluster]

``up`` starts the daemons with the venv's pyspark (pip's pyspark ships ``spark-class`` but
not ``start-master.sh``), waits until every worker has registered with the master (its
JSON status page) and writes ``<dir>/master-url``, ``<dir>/pids`` (``name pid`` per line)
and ``<dir>/state.json``. ``down`` stops exactly the pids listed there. The tests' session
fixture (tests/cluster/conftest.py) calls :func:`start` / :func:`stop` on a temporary
folder, or reuses a cluster ``make cluster-up`` left running.

Every daemon gets ``PYTHONPATH=<checkout>/lib`` so the executors' Python workers import
this checkout's ``sparkforge``, and ``SPARK_LOCAL_IP=127.0.0.1`` so nothing binds to an
external address.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = ROOT / ".cluster"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
STATE = "state.json"


def free_port() -> int:
    """A port free on 127.0.0.1 now (another process may take it before the daemon binds;
    :func:`start` then fails with the daemon's log)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spark_class() -> Path:
    """``pyspark/bin/spark-class`` of the running interpreter's pyspark."""
    import pyspark

    path = Path(pyspark.__file__).parent / "bin" / "spark-class"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: is pyspark installed in {sys.prefix}?")
    return path


def _alive(pid: int) -> bool:
    """``pid`` runs and is one of Spark's daemons (not a recycled pid)."""
    if pid <= 0:
        return False
    for _ in range(20):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        if cmdline:
            return b"org.apache.spark.deploy." in cmdline
        # Empty: the process is between fork and exec (spark-class ends in `exec java`),
        # or a zombie. Look again before calling it dead: reading it once mid-exec made a
        # healthy master look "exited while starting".
        time.sleep(0.05)
    return False


@dataclass
class Worker:
    name: str
    pid: int
    port: int
    webui_port: int
    work_dir: str
    log: str


@dataclass
class Cluster:
    """A running cluster, as recorded in ``<state_dir>/state.json``."""

    state_dir: str
    master_url: str
    master_pid: int
    master_webui_port: int
    cores: int
    memory: str
    pythonpath: str
    workers: list[Worker] = field(default_factory=list)

    # -- status ------------------------------------------------------------------------
    def status(self, timeout: float = 5) -> dict[str, Any]:
        """The master's JSON status page (workers, their state, running apps)."""
        url = f"http://127.0.0.1:{self.master_webui_port}/json/"
        with urllib.request.urlopen(url, timeout=timeout) as r:
            doc: dict[str, Any] = json.load(r)
        return doc

    def registered(self) -> set[str]:
        """Names of our workers the master lists as ALIVE."""
        try:
            doc = self.status()
        except (OSError, urllib.error.URLError, ValueError):
            return set()
        ports = {w["port"]: w.get("state") for w in doc.get("workers", [])}
        return {w.name for w in self.workers if ports.get(w.port) == "ALIVE"}

    def worker(self, name: str) -> Worker:
        for w in self.workers:
            if w.name == name:
                return w
        raise KeyError(f"no worker {name!r}; workers: {[w.name for w in self.workers]}")

    def worker_of(self, path: str | Path) -> Worker | None:
        """The worker whose work dir holds ``path`` (an executor's or its task's cwd)."""
        p = str(Path(path).resolve())
        for w in self.workers:
            if p.startswith(str(Path(w.work_dir).resolve()) + os.sep):
                return w
        return None

    # -- faults --------------------------------------------------------------------------
    def kill_worker(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to a worker's JVM and wait until it is gone. Its executors notice
        the lost worker and exit on their own (Spark's WorkerWatcher)."""
        w = self.worker(name)
        if _alive(w.pid):
            os.kill(w.pid, sig)
        _reap(w.pid, 30)

    def ensure_workers(self, timeout: float = 120) -> list[str]:
        """Restart any worker whose JVM is gone; returns the names restarted."""
        dead = [w.name for w in self.workers if not _alive(w.pid)]
        for name in dead:
            self._launch_worker(self.worker(name))
        if dead:
            self._save()
            self._wait_registered(timeout)
        return dead

    # -- internals -----------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        return {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
                "PYTHONPATH": self.pythonpath,
                # the daemons' own heap (the executors' is spark.executor.memory)
                "SPARK_DAEMON_MEMORY": os.environ.get("SPARK_DAEMON_MEMORY", "512m")}

    def _launch_worker(self, w: Worker) -> None:
        w.port, w.webui_port = free_port(), free_port()
        Path(w.work_dir).mkdir(parents=True, exist_ok=True)
        w.pid = _spawn([WORKER_CLASS, self.master_url, "--host", "127.0.0.1", "--port",
                        str(w.port), "--webui-port", str(w.webui_port), "--cores",
                        str(self.cores), "--memory", self.memory, "--work-dir", w.work_dir],
                       Path(w.log), self._env())

    def _wait_registered(self, timeout: float) -> None:
        want = {w.name for w in self.workers}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.registered() == want:
                return
            for name, pid, logf in [("master", self.master_pid,
                                     str(Path(self.state_dir) / "master.log"))] + [
                    (w.name, w.pid, w.log) for w in self.workers]:
                if not _alive(pid):
                    raise RuntimeError(f"{name} (pid {pid}) exited while starting:\n"
                                       f"{_tail(Path(logf))}")
            time.sleep(0.5)
        raise TimeoutError(f"only {sorted(self.registered())} of {sorted(want)} registered "
                           f"with {self.master_url} after {timeout:.0f}s; see the logs in "
                           f"{self.state_dir}")

    def _save(self) -> None:
        d = Path(self.state_dir)
        _write(d / STATE, json.dumps(asdict(self), indent=2))
        _write(d / "master-url", self.master_url + "\n")
        _write(d / "pids", "".join(f"{n} {p}\n" for n, p in
                                   [("master", self.master_pid)] +
                                   [(w.name, w.pid) for w in self.workers]))


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def _spawn(args: list[str], logfile: Path, env: dict[str, str]) -> int:
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "ab") as out:
        # spark-class ends in `exec java ...`, so this pid is the JVM's. A new session: the
        # daemons outlive `make cluster-up` and ignore the terminal's Ctrl-C.
        proc = subprocess.Popen([str(spark_class()), *args], stdout=out,
                                stderr=subprocess.STDOUT, env=env, cwd=logfile.parent,
                                start_new_session=True)
    return proc.pid


def _reap(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` is gone (reaping it if it is our child); True if it went."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return True
        except ChildProcessError:  # not our child: watch /proc instead
            if not _alive(pid):
                return True
        time.sleep(0.1)
    return not _alive(pid)


def start(state_dir: str | Path = DEFAULT_DIR, *, workers: int = 2, cores: int = 1,
          memory: str = "1g", timeout: float = 180) -> Cluster:
    """Start a master and ``workers`` workers on 127.0.0.1; return once all registered.

    Refuses to start over a live cluster recorded in ``state_dir``."""
    d = Path(state_dir).resolve()
    d.mkdir(parents=True, exist_ok=True)
    running = load(d)
    if running is not None:
        raise RuntimeError(f"a cluster is already running from {d} ({running.master_url}); "
                           "stop it first (make cluster-down)")
    pythonpath = os.pathsep.join(p for p in [str(ROOT / "lib"),
                                             os.environ.get("PYTHONPATH", "")] if p)
    port, webui = free_port(), free_port()
    c = Cluster(state_dir=str(d), master_url=f"spark://127.0.0.1:{port}", master_pid=0,
                master_webui_port=webui, cores=cores, memory=memory, pythonpath=pythonpath)
    c.master_pid = _spawn([MASTER_CLASS, "--host", "127.0.0.1", "--port", str(port),
                           "--webui-port", str(webui)], d / "master.log", c._env())
    c.workers = [Worker(name=f"worker-{i}", pid=0, port=0, webui_port=0,
                        work_dir=str(d / f"worker-{i}"), log=str(d / f"worker-{i}.log"))
                 for i in range(1, workers + 1)]
    c._save()  # from here on, stop(d) finds the master's pid even if the start fails
    try:
        _wait_master(c, timeout)
        for w in c.workers:
            c._launch_worker(w)
        c._save()
        c._wait_registered(timeout)
    except BaseException:
        stop(d)
        raise
    log.info("cluster %s: %d worker(s) x %d core(s), %s each; state in %s", c.master_url,
             workers, cores, memory, d)
    return c


def _wait_master(c: Cluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            c.status(timeout=2)
            return
        except (OSError, urllib.error.URLError, ValueError):
            if not _alive(c.master_pid):
                raise RuntimeError("the master exited while starting:\n"
                                   f"{_tail(Path(c.state_dir) / 'master.log')}") from None
            time.sleep(0.5)
    raise TimeoutError(f"the master's status page did not answer in {timeout:.0f}s; see "
                       f"{Path(c.state_dir) / 'master.log'}")


def load(state_dir: str | Path = DEFAULT_DIR) -> Cluster | None:
    """The cluster recorded in ``state_dir`` if its master still answers, else None."""
    path = Path(state_dir) / STATE
    if not path.exists():
        return None
    doc = json.loads(path.read_text())
    c = Cluster(**{**doc, "workers": [Worker(**w) for w in doc["workers"]]})
    if not _alive(c.master_pid):
        return None
    try:
        c.status()
    except (OSError, urllib.error.URLError, ValueError):
        return None
    return c


def stop(state_dir: str | Path = DEFAULT_DIR, timeout: float = 30) -> list[int]:
    """Stop exactly the daemons listed in ``state_dir/pids`` (workers first); returns the
    pids that were still running. A worker stopped this way stops its executors."""
    d = Path(state_dir)
    pids_file = d / "pids"
    if not pids_file.exists():
        return []
    entries = [line.split() for line in pids_file.read_text().splitlines() if line.strip()]
    ordered = [int(p) for n, p in entries if n != "master"] + \
              [int(p) for n, p in entries if n == "master"]
    stopped = [p for p in ordered if _alive(p)]
    for pid in stopped:
        os.kill(pid, signal.SIGTERM)
    for pid in stopped:
        if not _reap(pid, timeout) and _alive(pid):
            log.warning("pid %d ignored SIGTERM for %.0fs; sending SIGKILL", pid, timeout)
            os.kill(pid, signal.SIGKILL)
            _reap(pid, 10)
    for name in ("pids", "master-url", STATE):
        (d / name).unlink(missing_ok=True)
    return stopped


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(prog="python -m scripts.cluster", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["up", "down", "status"])
    ap.add_argument("--dir", default=str(DEFAULT_DIR), help="state folder (default .cluster)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cores", type=int, default=1, help="cores per worker")
    ap.add_argument("--memory", default="1g", help="memory per worker (>= the executors' "
                    "spark.executor.memory, 1g by default)")
    args = ap.parse_args(argv)
    if args.action == "up":
        c = start(args.dir, workers=args.workers, cores=args.cores, memory=args.memory)
        print(f"{c.master_url}  (master pid {c.master_pid}, workers "
              f"{', '.join(f'{w.name} pid {w.pid}' for w in c.workers)}; "
              f"status http://127.0.0.1:{c.master_webui_port}/)")
        print(f"use it: SPARKFORGE_MASTER=$(cat {Path(args.dir) / 'master-url'}) "
              "sparkforge <stage> --config ...")
        return 0
    if args.action == "down":
        pids = stop(args.dir)
        print(f"stopped {len(pids)} process(es): {pids}" if pids else
              f"no running cluster recorded in {args.dir}")
        return 0
    running = load(args.dir)
    if running is None:
        print(f"no running cluster recorded in {args.dir}")
        return 1
    print(json.dumps({"master_url": running.master_url,
                      "registered": sorted(running.registered()),
                      "workers": [asdict(w) for w in running.workers]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
