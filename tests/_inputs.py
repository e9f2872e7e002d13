"""Generated inputs shared by the cluster and Connect suites (``tests/`` is on sys.path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def write_inf_rows_csv(path: Path, n_good: int, n_bad: int, seed: int,
                       id_prefix: str) -> tuple[list[str], list[str]]:
    """A CSV of ``id, a, b, c, y`` with y = [a + b > 0]; ``n_bad`` rows have a = inf
    (quarantined as bad_value:a). Returns (good ids, bad ids), counted from the rows."""
    rng = np.random.default_rng(seed)
    n = n_good + n_bad
    x = rng.normal(size=(n, 2))
    df = pd.DataFrame({"id": [f"{id_prefix}{i:04d}" for i in range(n)], "a": x[:, 0],
                       "b": x[:, 1], "c": rng.choice(["u", "v", "w"], n),
                       "y": np.where(x[:, 0] + x[:, 1] > 0, "p", "q")})
    bad = rng.choice(n, n_bad, replace=False)
    df["a"] = df["a"].astype(object)
    df.loc[bad, "a"] = "inf"
    df.to_csv(path, index=False)
    bad_ids = sorted(df.loc[bad, "id"])
    return sorted(set(df["id"]) - set(bad_ids)), bad_ids
