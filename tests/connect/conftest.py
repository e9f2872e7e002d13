"""A Spark Connect server for the session, started and stopped by scripts/connect.py (the
code behind ``make connect-up`` / ``make connect-down``) on a free port of 127.0.0.1, with
master local[2]. Tests that do not ask for it start nothing.

The Connect client runs in a subprocess (the CLI with SPARK_REMOTE): pyspark switches a
whole process to Connect mode once a Connect session exists there, which would break the
classic ``spark`` fixture other tests in this pytest process use.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from scripts import connect as cs


@pytest.fixture(scope="session")
def connect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cs.Server]:
    server = cs.start(tmp_path_factory.mktemp("connect"), port=0, master="local[2]")
    try:
        yield server
    finally:
        cs.stop(server.state_dir)
