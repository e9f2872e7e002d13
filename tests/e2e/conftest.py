"""The e2e suites' shared run: see _notebook_run.py."""

from _notebook_run import notebook_run  # noqa: F401  (a session fixture, registered here)
