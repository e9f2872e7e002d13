"""The layout of a run directory (``output.dir``): what each stage writes and reads.

Stages are siblings: each reads what an earlier stage left here, through these paths, and
never imports another stage (``tests/unit/test_rundir.py`` checks that). One place names
every path, so a stage and its readers cannot drift apart::

    manifest.json                       every stage's figures and the sha256 of each artifact
    preprocessed/split=<s>/             preprocess: encoded rows (train/val/test)
    quarantine/                         preprocess (and score: quarantine/<target>/)
    model/labels.json, tokenizer.json | preprocessor.json, reference.json, config.json
                                        preprocess
    model/model.json, model.safetensors, history.json, checkpoint/
                                        train
    model/score_reference-<variant>.json  score (the drift reference of the scores)
    compressed/<variant>/model.onnx     compress: one folder per variant (and its torch
                                        form, model.safetensors + model.json, where it has
                                        one: score.backend=torch)
    compressed/selection.json           compress: the gate's decision, read by score/evaluate
    eval_scores/                        score: the pipeline's evaluation run
    scores/run_date=YYYY-MM-DD/         score: dated runs (each with _SUCCESS and
                                        _run_manifest.json); _staging/ and _locks/ beside
    metrics.json, report.html           evaluate (the evaluation run)
    evaluations/run_date=YYYY-MM-DD/    evaluate (dated runs)
    embeddings/run_date=YYYY-MM-DD/     score with score.mode=embed

Where a scoring run writes and how it is locked and published:
:mod:`sparkforge.infer.runs`; hashes and the manifest: :mod:`sparkforge.artifacts`. Both
take their names from here. This module imports nothing heavy (no pyspark, no torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"
PREPROCESSED = "preprocessed"
QUARANTINE = "quarantine"
MODEL = "model"
LABELS = "model/labels.json"
TOKENIZER = "model/tokenizer.json"
PREPROCESSOR = "model/preprocessor.json"
REFERENCE = "model/reference.json"
# The resolved config preprocess ran with: scoring re-applies its data settings.
TRAINING_CONFIG = "model/config.json"
MODEL_SPEC = "model/model.json"
COMPRESSED = "compressed"
SELECTION = "compressed/selection.json"
VARIANT_FILE = "model.onnx"
SCORES = "scores"
EVAL_SCORES = "eval_scores"
EVALUATIONS = "evaluations"
EMBEDDINGS = "embeddings"
RUN_MANIFEST = "_run_manifest.json"
STAGING = "_staging"
LOCKS = "_locks"


@dataclass(frozen=True)
class RunDir:
    """Paths of one run directory: ``RunDir(cfg.out)``."""

    root: Path

    def __truediv__(self, rel: str) -> Path:
        return self.root / rel

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def preprocessed(self) -> Path:
        return self.root / PREPROCESSED

    def split(self, name: str) -> Path:
        """One split's Parquet folder (``preprocessed/split=<name>``)."""
        return self.preprocessed / f"split={name}"

    @property
    def model(self) -> Path:
        return self.root / MODEL

    @property
    def labels(self) -> Path:
        return self.root / LABELS

    @property
    def tokenizer(self) -> Path:
        return self.root / TOKENIZER

    @property
    def preprocessor(self) -> Path:
        return self.root / PREPROCESSOR

    @property
    def reference(self) -> Path:
        return self.root / REFERENCE

    @property
    def training_config(self) -> Path:
        return self.root / TRAINING_CONFIG

    @property
    def model_spec(self) -> Path:
        return self.root / MODEL_SPEC

    @property
    def weights(self) -> Path:
        """The kept epoch's weights (train/loop.py names the file: it writes it)."""
        from sparkforge.train.loop import BEST_WEIGHTS

        return self.model / BEST_WEIGHTS

    def score_reference(self, variant: str) -> Path:
        return self.model / f"score_reference-{variant}.json"

    @property
    def compressed(self) -> Path:
        return self.root / COMPRESSED

    def variant(self, name: str) -> Path:
        """A compressed variant's ONNX file (``compressed/<name>/model.onnx``)."""
        return self.compressed / name / VARIANT_FILE

    @property
    def selection(self) -> Path:
        return self.root / SELECTION

    @property
    def scores(self) -> Path:
        return self.root / SCORES

    @property
    def eval_scores(self) -> Path:
        return self.root / EVAL_SCORES

    @property
    def evaluations(self) -> Path:
        return self.root / EVALUATIONS

    @property
    def embeddings(self) -> Path:
        return self.root / EMBEDDINGS

    def dated(self, parent: Path, date: str) -> Path:
        """A dated run's folder under ``parent`` (``scores``, ``evaluations``, ...)."""
        return parent / f"run_date={date}"

    def published_dates(self) -> list[str]:
        """Dates with a published (``_SUCCESS``) scoring run, oldest first."""
        return published_dates(self.scores)


def published_dates(scores: Path) -> list[str]:
    """Dates of the published (``_SUCCESS``) ``run_date=`` partitions under ``scores``."""
    return sorted(p.name.split("=", 1)[1] for p in scores.glob("run_date=*")
                  if (p / "_SUCCESS").exists())
