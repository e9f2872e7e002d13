"""`compress` on a tiny text run: every variant built, measured in Spark, gated, scored.

The model is fitted in-process (what `train` would write) to keep the test fast;
distillation still goes through TorchDistributor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from sparkforge.artifacts import read_json, sha256_file, write_json_atomic
from sparkforge.compress.gate import select_variant
from sparkforge.config import load_config

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ["int8_dynamic", "int8_static", "pruned", "pruned_int8", "distilled",
            "distilled_int8", "fp16"]
FIGURES = {"file_bytes", "sha256", "latency_ms_b1", "latency_ms_b1024", "val_accuracy",
           "val_f1_macro", "val_log_loss", "parity_max_abs_prob_diff", "parity_agreement",
           "gate_metric", "size_ratio", "latency_ratio_b1024", "decision"}


def _csv(path: Path, n: int = 800) -> None:
    """Reviews whose label is carried by a few sentiment words among filler."""
    rng = np.random.default_rng(3)
    pos = ["wonderful", "moving", "brilliant", "charming", "superb", "delight"]
    neg = ["dull", "tedious", "awful", "boring", "mess", "clumsy"]
    filler = ["the", "film", "story", "actors", "was", "a", "really", "plot", "and", "it"]
    rows = []
    for _ in range(n):
        label = rng.choice(["up", "down"])
        words = [*rng.choice(filler, size=8), *rng.choice(pos if label == "up" else neg, size=2)]
        rng.shuffle(words)
        rows.append({"review": " ".join(words), "sentiment": label})
    pd.DataFrame(rows).to_csv(path, index=False)


def _fit(cfg: Any) -> None:
    """A trained model in model/, as the train stage leaves it."""
    from sparkforge.compress.finetune import finetune
    from sparkforge.jobs.train import model_spec
    from sparkforge.models import build_model, save_weights
    from sparkforge.train.loader import read_split
    from sparkforge.train.loop import BEST_WEIGHTS

    spec = model_spec(cfg, pretrained=False)
    model = build_model(spec)
    pre, cols = cfg.out / "preprocessed", ["input_ids", "attention_mask", "label_index"]
    finetune(model, read_split(pre / "split=train", cols), read_split(pre / "split=val", cols),
             inputs=cols[:2], target="label_index", regression=False, epochs=4, lr=1e-2,
             batch_size=32)
    save_weights(model, cfg.out / "model" / BEST_WEIGHTS)
    write_json_atomic(cfg.out / "model" / "model.json", spec)


def test_compress_builds_measures_and_gates_every_variant(
        spark: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from sparkforge.jobs import compress as job
    from sparkforge.jobs.evaluate import run_evaluate
    from sparkforge.jobs.preprocess import run_preprocess
    from sparkforge.jobs.score import run_score

    # Short latency loops: the figures are checked for presence, not for speed.
    real_latency = job._latency_ms
    monkeypatch.setattr(job, "_latency_ms", lambda path, feeds, batch, repeats, **_:
                        real_latency(path, feeds, min(batch, 256), 2, budget_s=0.0))
    inp, out = tmp_path / "reviews.csv", tmp_path / "run"
    _csv(inp)
    cfg = load_config(ROOT / "conf" / "text_classification.yaml", [
        f"data.input={inp}", "data.text_column=review", "data.label_column=sentiment",
        f"output.dir={out}", "tokenizer.kind=trained", "tokenizer.vocab_size=300",
        "tokenizer.max_length=24", "train.hidden_dim=64", "train.batch_size=16",
        f"compress.variants=[{','.join(VARIANTS)}]", "compress.calibration_rows=128",
        "compress.distill_epochs=6", "compress.distill_lr=0.01", "compress.student_hidden_dim=16",
        "compress.max_accuracy_drop=0.05"])
    run_preprocess(spark, cfg)
    _fit(cfg)
    capsys.readouterr()

    selection = job.run_compress(spark, cfg)

    table = capsys.readouterr().out
    figures = selection["variants"]
    assert list(figures) == ["fp32", *VARIANTS]
    assert set(selection["paths"]) == {"fp32", *VARIANTS}
    for name, f in figures.items():
        assert set(f) >= FIGURES, (name, FIGURES - set(f))
        path = out / selection["paths"][name]
        assert path.is_file()
        assert f["sha256"] == sha256_file(path)
        assert f["parity_agreement"] > 0.8, name
        assert any(line[1:].startswith(f"{name} ") for line in table.splitlines())
    fp32 = figures["fp32"]
    assert fp32["parity_max_abs_prob_diff"] < 1e-4  # export parity, against torch
    assert figures["int8_dynamic"]["file_bytes"] < 0.5 * fp32["file_bytes"]
    # Pruning rebuilds smaller layers: fewer parameters, a smaller file. The vocabulary
    # rows kept are the tokens of the train split (a Spark aggregation).
    pruned = figures["pruned"]
    assert pruned["hidden_dims"] == [32]
    assert pruned["vocab_rows"][1] < pruned["vocab_rows"][0]
    assert pruned["parameters"] < fp32["parameters"]
    assert pruned["file_bytes"] < fp32["file_bytes"]
    assert pruned["finetune"][-1]["epoch"] == 1
    # The student is smaller than its teacher and was trained by TorchDistributor.
    assert figures["distilled"]["parameters"] < figures["distilled"]["parameters_teacher"]
    assert figures["distilled"]["file_bytes"] < figures["pruned"]["file_bytes"]
    assert len(figures["distilled"]["history"]) >= 1
    assert (out / "compressed" / "distilled" / "soft_labels").is_dir()
    assert figures["int8_static"]["calibration_rows"] <= 128
    assert figures["fp16"]["file_bytes"] < 0.7 * fp32["file_bytes"]
    # The decision is the gate's on the recorded figures, and every row says why.
    chosen, reasons = select_variant(figures, 0.05, "smallest", cfg.compress.max_latency_ratio)
    assert selection["selected"] == chosen != "fp32"
    assert {n: f["decision"] for n, f in figures.items()} == reasons
    manifest = read_json(out / "manifest.json")
    assert manifest["compress"]["selected"] == chosen
    for rel in selection["paths"].values():
        assert manifest["artifacts"][rel]["sha256"] == sha256_file(out / rel)

    # Scoring and evaluation need no change: every variant gets its test metrics.
    run_score(spark, cfg)
    run_evaluate(spark, cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["variants"]) == {"fp32", *VARIANTS}
    assert metrics["selected"] == chosen
    n_test = metrics["variants"]["fp32"]["n_rows"]
    for m in metrics["variants"].values():
        assert m["n_rows"] == n_test > 0
        assert m["accuracy"] > 0.8
