"""Run notebooks top to bottom in one Python process, as a Databricks job's notebook tasks
run on one cluster: ``dbutils.widgets`` answers the given parameters, ``spark`` is the
session the first notebook builds, ``display`` is absent (so the notebooks' fallbacks
print their results).

    python _run_notebooks.py '{"output_dir": "runs/nb"}' nb1.py nb2.py ...
"""

from __future__ import annotations

import json
import runpy
import sys


class _Widgets:
    def __init__(self, values: dict[str, str]) -> None:
        self._values = values
        self._defaults: dict[str, str] = {}

    def text(self, name: str, default: str, label: str | None = None) -> None:
        self._defaults[name] = default

    def get(self, name: str) -> str:
        if name not in self._defaults:  # as on Databricks: a widget must exist first
            raise ValueError(f"No widget named {name} is defined")
        return self._values.get(name, self._defaults[name])


class FakeDbutils:
    def __init__(self, values: dict[str, str]) -> None:
        self.widgets = _Widgets(values)


def main() -> None:
    values = json.loads(sys.argv[1])
    for path in sys.argv[2:]:
        print(f"=== notebook {path}", flush=True)
        runpy.run_path(path, init_globals={"dbutils": FakeDbutils(values)},
                       run_name="__main__")


if __name__ == "__main__":
    main()
