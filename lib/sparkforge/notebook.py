"""What the notebooks in ``notebooks/`` share: parameters and display.

Databricks gives a notebook ``dbutils`` (widgets: parameters a job or a user sets) and
``display`` (a rich table or plot); a plain Python run has neither. Each helper takes the
notebook's ``globals()`` and uses them when they exist, so one notebook runs unchanged
on Databricks, in Jupyter and as ``python notebooks/01_explore_preprocess.py``::

    p = params(globals(), {"config": "conf/demo_tabular.yaml", "output_dir": "runs/nb"})
    cfg = load(p)
    show(globals(), some_dataframe)
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sparkforge.config import Config, load_config

log = logging.getLogger(__name__)

# The widgets every notebook has (values are strings, as widgets' are).
COMMON = {
    "config": "conf/demo_tabular.yaml",  # the YAML config, relative to the working folder
    "output_dir": "runs/notebooks",      # the run directory the notebooks share
    "input": "",                         # data.input; empty: the config's
    "overrides": "",                     # more key=value overrides, space-separated
}


def params(ns: Mapping[str, Any], defaults: Mapping[str, str]) -> dict[str, str]:
    """The notebook's parameters: ``dbutils.widgets`` when the notebook has ``dbutils``
    (each widget is created with its default, so a job's parameters or the widget bar
    can change it), else the defaults."""
    dbutils = ns.get("dbutils")
    if dbutils is None:
        return dict(defaults)
    for name, default in defaults.items():
        dbutils.widgets.text(name, default, name)
    return {name: dbutils.widgets.get(name) for name in defaults}


def overrides(p: Mapping[str, str]) -> list[str]:
    """``key=value`` overrides from the common widgets (``output_dir``, ``input``,
    ``overrides``)."""
    out = [f"output.dir={p['output_dir']}"] if p.get("output_dir") else []
    if p.get("input"):
        out.append(f"data.input={p['input']}")
    return out + shlex.split(p.get("overrides", ""))


def load(p: Mapping[str, str], extra: list[str] | None = None) -> Config:
    """The config the notebook runs with: ``p['config']`` plus the widgets' overrides."""
    from sparkforge.progress import quiet_third_party

    quiet_third_party()  # as the CLI does: no per-initializer INFO lines in the cell output
    cfg = load_config(p["config"], [*overrides(p), *(extra or [])])
    log.info("notebook config %s, output.dir=%s", p["config"], cfg.output.dir)
    return cfg


def show(ns: Mapping[str, Any], obj: Any, *, name: str = "figure", out: Path | None = None
         ) -> None:
    """``display(obj)`` on Databricks; elsewhere a Spark DataFrame's ``show()``, a pandas
    frame printed whole, a matplotlib figure saved as ``out/<name>.png``."""
    display = ns.get("display")
    if callable(display):
        display(obj)
        return
    if hasattr(obj, "savefig"):
        path = (out or Path()) / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        obj.savefig(path, dpi=100, bbox_inches="tight")
        print(f"{name}: {path}")
    elif hasattr(obj, "show") and hasattr(obj, "sparkSession"):
        obj.show(n=100, truncate=False)
    elif hasattr(obj, "to_string"):
        print(obj.to_string(index=False))
    else:
        print(obj)
