"""The trained model of a run directory, rebuilt from ``model/model.json`` and its weights.

Read by compress (export and variants) and by score's embed mode; both files are checked
against the sha256 train recorded first: nothing exports (or blesses) weights that
changed after training.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sparkforge.config import ConfigError

if TYPE_CHECKING:
    from sparkforge.config import Config


def load_trained(cfg: Config) -> tuple[Any, dict[str, Any]]:
    """(the torch model in eval mode, its spec) of ``cfg.out``."""
    from sparkforge.artifacts import read_verified_json, verify_artifact
    from sparkforge.models import build_model, load_weights
    from sparkforge.rundir import RunDir

    run = RunDir(cfg.out)
    if not run.model_spec.exists():
        raise ConfigError(f"output.dir={str(cfg.out)!r}: no trained model in {run.model}; "
                          "run `sparkforge train` with this config first")
    spec = read_verified_json(cfg.out, run.model_spec)
    verify_artifact(cfg.out, run.weights)
    model = build_model(spec)
    load_weights(model, run.weights)
    model.eval()
    return model, spec
