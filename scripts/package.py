"""`make package`: what spark-submit needs, under dist/.

    python -m scripts.package [--only wheel,zip,env] [--dist dist]

- ``dist/sparkforge-<version>-py3-none-any.whl``: ``pip wheel --no-deps`` of this checkout.
- ``dist/sparkforge.zip``: the ``sparkforge`` package, built from inside ``lib/`` (pure
  Python, for ``spark-submit --py-files``: executors put the zip itself on sys.path).
- ``dist/sparkforge-env.tar.gz``: a venv-pack archive of the runtime environment, for
  ``--archives dist/sparkforge-env.tar.gz#environment`` with
  ``spark.pyspark.python=./environment/bin/python``. venv-pack packs only non-editable
  installs, so it is built from a dedicated venv ``dist/.env`` holding the wheel and its
  runtime dependencies at the pins of constraints.txt. pyspark is left out: Spark puts its
  own pyspark.zip on the Python workers' path, so the runtime's Spark is the one used.

Each artifact's size and build time is logged.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "sparkforge"
# Fixed timestamp for the zip's entries: the same sources give the same zip.
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)


def version() -> str:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def wheel_path(dist: Path) -> Path:
    return dist / f"{PACKAGE}-{version()}-py3-none-any.whl"


def build_wheel(dist: Path) -> Path:
    """The wheel of this checkout (no dependencies bundled; the build's leftovers
    ``build/`` and ``lib/*.egg-info`` are gitignored)."""
    out = wheel_path(dist)
    out.unlink(missing_ok=True)
    # setuptools reuses build/lib: a module deleted from lib/ would linger in the wheel.
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(dist), str(ROOT)], check=True)
    if not out.exists():
        raise RuntimeError(f"pip wheel wrote no {out}; dist/ holds "
                           f"{sorted(p.name for p in dist.iterdir())}")
    return out


def build_zip(dist: Path) -> Path:
    """``dist/sparkforge.zip`` with ``sparkforge/...`` at its root (from inside lib/)."""
    lib = ROOT / "lib"
    out = dist / f"{PACKAGE}.zip"
    tmp = out.with_name(f".{out.name}.tmp")
    files = sorted(p for p in (lib / PACKAGE).rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for f in files:
            info = zipfile.ZipInfo(str(f.relative_to(lib)), date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, f.read_bytes())
    tmp.replace(out)
    return out


def build_env(dist: Path, wheel: Path) -> Path:
    """``dist/sparkforge-env.tar.gz``: venv-pack of ``dist/.env`` (wheel + runtime deps)."""
    env = dist / ".env"
    out = dist / f"{PACKAGE}-env.tar.gz"
    if env.exists():  # rebuilt each time: an old sparkforge or a stale pin must not linger
        shutil.rmtree(env)
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    py = env / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"),
                    str(wheel)], check=True)
    try:
        import venv_pack  # noqa: F401  (checked here: the error names the fix)
    except ImportError as e:
        raise RuntimeError("venv-pack is missing from the build venv: `make setup` "
                           "installs it (the [dev] extra)") from e
    out.unlink(missing_ok=True)
    subprocess.run([sys.executable, "-m", "venv_pack", "-p", str(env), "-o", str(out), "-q"],
                   check=True)
    out.chmod(0o644)  # venv-pack writes it owner-only; the other artifacts are 0644
    return out


def _mb(path: Path) -> str:
    return f"{path.stat().st_size / 2**20:.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(prog="python -m scripts.package", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dist", default=str(ROOT / "dist"))
    ap.add_argument("--only", default="wheel,zip,env",
                    help="comma-separated subset of wheel, zip, env")
    args = ap.parse_args(argv)
    what = set(args.only.split(","))
    unknown = what - {"wheel", "zip", "env"}
    if unknown:
        ap.error(f"--only: unknown {sorted(unknown)}; use wheel, zip and/or env")
    dist = Path(args.dist).resolve()
    dist.mkdir(parents=True, exist_ok=True)
    steps = [("wheel", lambda: build_wheel(dist)), ("zip", lambda: build_zip(dist)),
             ("env", lambda: build_env(dist, wheel_path(dist) if wheel_path(dist).exists()
                                       else build_wheel(dist)))]
    for name, step in steps:
        if name not in what:
            continue
        t0 = time.monotonic()
        path = step()
        log.info("%-5s %s  %s  %.0fs", name, path.relative_to(dist.parent), _mb(path),
                 time.monotonic() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
