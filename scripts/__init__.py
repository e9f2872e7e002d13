"""Developer scripts run as modules from the repo root (``python -m scripts.cluster``)."""
