"""A Spark Connect server on 127.0.0.1, for `make connect-up` / `make connect-down` and the
Connect tests.

    python -m scripts.connect up   [--port 15002] [--master local[2]] [--dir .connect]
    python -m scripts.connect down [--dir .connect]
    python -m scripts.connect status [--dir .connect]

``up`` runs the venv's pyspark ``bin/spark-submit --class ...SparkConnectServer`` (what
``sbin/start-connect-server.sh`` runs, without its daemon wrapper, so that the pid is the
JVM's and a failed start shows the log) and waits until the gRPC port accepts
connections. It writes ``<dir>/url`` (``sc://127.0.0.1:<port>``, for ``spark.remote`` or
``SPARK_REMOTE``), ``<dir>/pid`` and ``<dir>/state.json``; ``down`` stops exactly that pid.
The tests' session fixture (tests/connect/conftest.py) calls :func:`start` / :func:`stop`
on a temporary folder and a free port.

The server is the Spark driver: its Python workers run the pipeline's UDFs and training
ranks, so it gets ``PYTHONPATH=<checkout>/lib`` and ``PYSPARK_PYTHON`` = this interpreter,
as the standalone cluster's daemons do (scripts/cluster.py).
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
from dataclasses import asdict, dataclass
from pathlib import Path

from scripts.cluster import ROOT, _reap, _tail, _write, free_port

log = logging.getLogger(__name__)

DEFAULT_DIR = ROOT / ".connect"
DEFAULT_PORT = 15002  # Spark Connect's own default
SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
STATE = "state.json"


@dataclass
class Server:
    """A running Connect server, as recorded in ``<state_dir>/state.json``."""

    state_dir: str
    url: str
    port: int
    pid: int
    master: str
    log: str


def spark_submit() -> Path:
    """``pyspark/bin/spark-submit`` of the running interpreter's pyspark."""
    import pyspark

    path = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: is pyspark installed in {sys.prefix}?")
    return path


def _running(pid: int) -> bool:
    """``pid`` is our server: the spark-submit script, spark-class or the JVM all carry
    the server's class on their command line (a recycled pid does not)."""
    try:
        return pid > 0 and SERVER_CLASS.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def start(state_dir: str | Path = DEFAULT_DIR, *, port: int = DEFAULT_PORT,
          master: str = "local[2]", driver_memory: str = "2g",
          conf: dict[str, str] | None = None, timeout: float = 180) -> Server:
    """Start the server on 127.0.0.1:``port`` (0: a free one) with ``master`` as its
    master; return once the port accepts connections. Refuses to start over a live server
    recorded in ``state_dir``."""
    d = Path(state_dir).resolve()
    d.mkdir(parents=True, exist_ok=True)
    running = load(d)
    if running is not None:
        raise RuntimeError(f"a Connect server is already running from {d} ({running.url}); "
                           "stop it first (make connect-down)")
    port = port or free_port()
    if _accepts(port):
        raise RuntimeError(f"port {port} on 127.0.0.1 is taken; choose another with --port")
    props = {"spark.connect.grpc.binding.address": "127.0.0.1",
             "spark.connect.grpc.binding.port": str(port),
             "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
             "spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
             "spark.pyspark.python": sys.executable, **(conf or {})}
    args = [str(spark_submit()), "--class", SERVER_CLASS, "--name", "Spark Connect server",
            "--master", master, "--driver-memory", driver_memory]
    for k, v in props.items():
        args += ["--conf", f"{k}={v}"]
    pythonpath = os.pathsep.join(p for p in [str(ROOT / "lib"),
                                             os.environ.get("PYTHONPATH", "")] if p)
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
           "PYTHONPATH": pythonpath}
    # The server must not itself try to be a Connect client.
    env.pop("SPARK_REMOTE", None)
    env.pop("SPARK_CONNECT_MODE_ENABLED", None)
    logfile = d / "connect-server.log"
    with open(logfile, "ab") as out:
        # spark-submit ends in `exec spark-class` -> `exec java`: this pid is the JVM's. A
        # new session: the server outlives `make connect-up` and ignores the terminal's ^C.
        # cwd: the server, not the client, resolves a relative data.input or output.dir;
        # from the checkout they mean what they mean to a client run from there.
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                start_new_session=True)
    s = Server(state_dir=str(d), url=f"sc://127.0.0.1:{port}", port=port, pid=proc.pid,
               master=master, log=str(logfile))
    _save(s)  # from here on, stop(d) finds the pid even if the start fails
    try:
        deadline = time.monotonic() + timeout
        while not _accepts(port):
            if proc.poll() is not None:
                raise RuntimeError(f"the Connect server exited ({proc.returncode}) while "
                                   f"starting:\n{_tail(logfile)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Connect server did not listen on {port} in "
                                   f"{timeout:.0f}s; see {logfile}")
            time.sleep(0.5)
    except BaseException:
        stop(d)
        raise
    log.info("Spark Connect server %s (master %s, pid %d); log %s", s.url, master, s.pid,
             logfile)
    return s


def _save(s: Server) -> None:
    d = Path(s.state_dir)
    _write(d / STATE, json.dumps(asdict(s), indent=2))
    _write(d / "url", s.url + "\n")
    _write(d / "pid", f"{s.pid}\n")


def load(state_dir: str | Path = DEFAULT_DIR) -> Server | None:
    """The server recorded in ``state_dir`` if it still runs and listens, else None."""
    path = Path(state_dir) / STATE
    if not path.exists():
        return None
    s = Server(**json.loads(path.read_text()))
    return s if _running(s.pid) and _accepts(s.port) else None


def stop(state_dir: str | Path = DEFAULT_DIR, timeout: float = 30) -> int | None:
    """Stop exactly the pid in ``state_dir/pid``; returns it if it was running."""
    d = Path(state_dir)
    pid_file = d / "pid"
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text().split()[0])
    running = _running(pid)
    if running:
        os.kill(pid, signal.SIGTERM)
        if not _reap(pid, timeout) and _running(pid):
            log.warning("pid %d ignored SIGTERM for %.0fs; sending SIGKILL", pid, timeout)
            os.kill(pid, signal.SIGKILL)
            _reap(pid, 10)
    for name in ("pid", "url", STATE):
        (d / name).unlink(missing_ok=True)
    return pid if running else None


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(prog="python -m scripts.connect", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["up", "down", "status"])
    ap.add_argument("--dir", default=str(DEFAULT_DIR), help="state folder (default .connect)")
    ap.add_argument("--port", type=int, default=DEFAULT_PORT, help="gRPC port (0: a free one)")
    ap.add_argument("--master", default="local[2]",
                    help="the server's master: local[N], or spark://... of `make cluster-up`")
    ap.add_argument("--driver-memory", default="2g")
    args = ap.parse_args(argv)
    if args.action == "up":
        s = start(args.dir, port=args.port, master=args.master,
                  driver_memory=args.driver_memory)
        print(f"{s.url}  (pid {s.pid}, master {s.master}, log {s.log})")
        print(f"use it: SPARK_REMOTE=$(cat {Path(args.dir) / 'url'}) "
              "sparkforge <stage> --config ...")
        return 0
    if args.action == "down":
        pid = stop(args.dir)
        print(f"stopped pid {pid}" if pid else f"no running Connect server recorded in "
              f"{args.dir}")
        return 0
    running = load(args.dir)
    if running is None:
        print(f"no running Connect server recorded in {args.dir}")
        return 1
    print(json.dumps(asdict(running), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
