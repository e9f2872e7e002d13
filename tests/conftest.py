"""One session-scoped SparkSession for the whole test run (built by the one factory)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    from sparkforge.config import SparkConfig
    from sparkforge.spark.session import get_session

    session = get_session(
        SparkConfig(master="local[2]", app_name="sparkforge-tests"),
        extra={
            "spark.sql.shuffle.partitions": "4",
            "spark.ui.enabled": "false",
            "spark.task.maxFailures": "1",
            "spark.driver.memory": "2g",
        },
    )
    yield session
    session.stop()
