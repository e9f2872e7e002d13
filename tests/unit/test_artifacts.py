"""Artifacts are checked against the manifest's sha256 before use (no Spark needed: the
checks run before any Spark work). The tabular artifacts are covered on a real run in
tests/spark/test_score.py; these cover the text ones and the API itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sparkforge.artifacts import (
    ArtifactError,
    read_verified_json,
    save_training_config,
    scoring_config,
    update_manifest,
    write_json_atomic,
)
from sparkforge.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def _text_run(out: Path) -> Any:
    """A text run directory as preprocess/train/compress leave it (files, manifest)."""
    cfg = load_config(ROOT / "conf" / "text_classification.yaml", [
        "data.input=reviews.csv", "data.text_column=review", f"output.dir={out}",
        "train.model=minilm"])
    model = out / "model"
    write_json_atomic(model / "labels.json", ["neg", "pos"])
    (model / "tokenizer.json").write_text('{"model": {"vocab": {"[UNK]": 0}}}')
    (model / "model.json").write_text('{"name": "minilm"}')
    (model / "model.safetensors").write_bytes(b"\0" * 64)
    onnx = out / "compressed" / "fp32" / "model.onnx"
    onnx.parent.mkdir(parents=True)
    onnx.write_bytes(b"onnx")
    update_manifest(out, "preprocess", {}, [model / "labels.json", model / "tokenizer.json",
                                            save_training_config(cfg)])
    update_manifest(out, "train", {}, [model / "model.json", model / "model.safetensors"])
    selection = {"selected": "fp32", "paths": {"fp32": "compressed/fp32/model.onnx"}}
    write_json_atomic(out / "compressed" / "selection.json", selection)
    update_manifest(out, "compress", selection, [onnx])
    return cfg


def test_the_text_scoring_artifacts_are_verified(tmp_path: Path) -> None:
    from sparkforge.jobs.score import load_scoring_model

    cfg = _text_run(tmp_path)
    model = load_scoring_model(cfg)
    assert model.labels == ["neg", "pos"]
    assert model.selected == "fp32"
    tok = tmp_path / "model" / "tokenizer.json"
    tok.write_text(tok.read_text().replace("[UNK]", "[XXX]"))
    with pytest.raises(ArtifactError, match=r"tokenizer\.json has sha256 .* rerun preprocess"):
        load_scoring_model(cfg)


@pytest.mark.parametrize("name", ["model.safetensors", "model.json"])
def test_embed_mode_verifies_the_trained_weights_before_loading(tmp_path: Path,
                                                                name: str) -> None:
    import dataclasses

    from sparkforge.jobs.score import run_embed

    cfg = _text_run(tmp_path)
    cfg = dataclasses.replace(cfg, score=dataclasses.replace(cfg.score, mode="embed"))
    with open(tmp_path / "model" / name, "ab") as fh:
        fh.write(b"x")
    # The check comes before any Spark work: no session is needed to be refused.
    with pytest.raises(ArtifactError, match=rf"{name.replace('.', '[.]')} has sha256 .* "
                                            "rerun train"):
        run_embed(None, cfg)  # type: ignore[arg-type]


def test_unrecorded_missing_and_changed_files_name_the_file_and_the_fix(
        tmp_path: Path) -> None:
    _text_run(tmp_path)
    stray = tmp_path / "model" / "extra.json"
    stray.write_text("{}")
    with pytest.raises(ArtifactError, match=r"extra\.json is not recorded .* rerun `sparkforge "
                                            "preprocess`"):
        read_verified_json(tmp_path, stray)
    (tmp_path / "model" / "labels.json").unlink()
    with pytest.raises(ArtifactError, match=r"labels\.json is recorded .* but missing"):
        read_verified_json(tmp_path, tmp_path / "model" / "labels.json")
    assert issubclass(ArtifactError, ConfigError)  # CLI exit code 2, no traceback


def test_scoring_config_takes_the_training_data_settings(tmp_path: Path) -> None:
    trained = _text_run(tmp_path)
    bare = load_config(ROOT / "conf" / "text_classification.yaml", [
        f"output.dir={tmp_path}", "data.text_column=other", "score.input=new.csv"])
    assert bare.data.input == ""
    cfg = scoring_config(bare)
    assert cfg.data == trained.data
    assert cfg.score.input == "new.csv"
    doc = json.loads((tmp_path / "model" / "config.json").read_text())
    doc["data"]["text_column"] = "changed"
    (tmp_path / "model" / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match=r"config\.json"):
        scoring_config(bare)


def test_preprocess_still_needs_data_input() -> None:
    from sparkforge.data.preflight import check_inputs

    cfg = load_config(ROOT / "conf" / "tabular_classification.yaml", [])
    with pytest.raises(ConfigError, match=r"data\.input='': preprocess needs it"):
        check_inputs(cfg, "preprocess")
    with pytest.raises(ConfigError, match=r"score\.input='': set the table to score"):
        check_inputs(cfg, "score")
    check_inputs(cfg, "evaluate")
