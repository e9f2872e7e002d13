"""`compress` on tiny runs: every variant (the linear baseline too) built, measured in
Spark on validation fold 1, gated, scored.

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
from _train_helpers import read_preprocessed

from sparkforge.artifacts import read_json, record_artifacts, sha256_file, write_json_atomic
from sparkforge.config import load_config

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ["int8_dynamic", "int8_static", "pruned", "pruned_int8", "distilled",
            "distilled_int8", "fp16"]
FIGURES = {"file_bytes", "sha256", "latency_ms_b1", "latency_ms_b1024", "val_accuracy",
           "val_f1_macro", "val_log_loss", "parity_max_abs_prob_diff", "parity_agreement",
           "gate_metric", "gate_rows", "size_ratio", "latency_ratio_b1024", "decision"}


def _val(out: Path, columns: list[str]) -> pd.DataFrame:
    """The validation split as written by preprocess, read with pandas (not Spark)."""
    return pd.read_parquet(out / "preprocessed" / "split=val", columns=columns)


def _short_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short latency loops: the figures are checked for presence, not for speed. Still a
    median of at least 7 runs: the gate compares latencies, and with 2 runs one
    preemption on a busy machine made a 0.02 ms model look 90x slower than another."""
    from sparkforge.jobs import compress as job

    real_latency = job._latency_ms
    monkeypatch.setattr(job, "_latency_ms", lambda path, feeds, batch, repeats, **_:
                        real_latency(path, feeds, min(batch, 256), 7, budget_s=0.05))


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
    record_artifacts(cfg.out, [cfg.out / "model" / BEST_WEIGHTS, cfg.out / "model" / "model.json"])


def test_compress_builds_measures_and_gates_every_variant(
        spark: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from sparkforge.jobs import compress as job
    from sparkforge.jobs.evaluate import run_evaluate
    from sparkforge.jobs.preprocess import run_preprocess
    from sparkforge.jobs.score import run_score

    _short_latency(monkeypatch)
    inp, out = tmp_path / "reviews.csv", tmp_path / "run"
    _csv(inp)
    cfg = load_config(ROOT / "conf" / "text_classification.yaml", [
        f"data.input={inp}", "data.text_column=review", "data.label_column=sentiment",
        f"output.dir={out}", "tokenizer.kind=trained", "tokenizer.vocab_size=300",
        "tokenizer.max_length=24", "train.model=embedding_bag", "train.hidden_dim=64",
        "train.batch_size=16",
        f"compress.variants=[{','.join(VARIANTS)}]", "compress.calibration_rows=128",
        "compress.distill_epochs=6", "compress.distill_lr=0.01", "compress.student_hidden_dim=16",
        "compress.max_accuracy_drop=0.05"])
    run_preprocess(spark, cfg)
    _fit(cfg)
    capsys.readouterr()

    selection = job.run_compress(spark, cfg)

    table = capsys.readouterr().out
    figures = selection["variants"]
    assert list(figures) == ["fp32", *VARIANTS, "baseline"]
    assert set(selection["paths"]) == {"fp32", *VARIANTS, "baseline"}
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
    # The linear baseline: the scikit-learn TF-IDF model, exported, checked against
    # scikit-learn on the parity rows.
    base = figures["baseline"]
    assert base["model"] == "tfidf_logreg"
    assert base["parity_max_abs_prob_diff"] <= 1e-4
    assert base["parity_reference"].startswith("scikit-learn model")

    # Every variant is judged on validation fold 1 only, counted here from the Parquet;
    # the pruned model's fine-tune and the student chose their epochs on fold 0.
    val = _val(out, ["fold", "input_ids", "attention_mask", "label_index"])
    n_gate, n_select = int((val["fold"] == 1).sum()), int((val["fold"] == 0).sum())
    assert n_gate > 0
    assert n_select > 0
    assert selection["gate_fold"] == 1
    for name, f in figures.items():
        assert f["gate_rows"] == n_gate, name
    assert pruned["finetune_val_rows"] == n_select
    assert figures["distilled"]["val_rows"] == n_select
    # fp32's gate accuracy, recomputed with onnxruntime on the fold-1 rows.
    import onnxruntime as ort

    gate = val[val["fold"] == 1]
    sess = ort.InferenceSession(str(out / selection["paths"]["fp32"]))
    logits = sess.run(["logits"], {c: np.stack(gate[c].to_numpy()).astype(np.int64)
                                   for c in ("input_ids", "attention_mask")})[0]
    acc = float((logits.argmax(axis=1) == gate["label_index"].to_numpy()).mean())
    assert fp32["gate_metric"] == pytest.approx(acc, abs=1e-12)

    # The decision follows the rule, restated here: the smallest variant within 0.05 of
    # the better of fp32 and the baseline (and at most 1.25x fp32's latency).
    chosen = selection["selected"]
    ref = max(fp32["gate_metric"], base["gate_metric"])
    ok = [n for n, f in figures.items()
          if f["gate_metric"] >= ref - 0.05 - 1e-12
          and (n == "fp32" or f["latency_ms_b1024"] <= 1.25 * fp32["latency_ms_b1024"])]
    assert chosen in ok
    assert figures[chosen]["file_bytes"] == min(figures[n]["file_bytes"] for n in ok)
    assert figures[chosen]["decision"].endswith("; smallest")
    for n, f in figures.items():
        assert f["decision"].startswith(("passes", "rejected", "reference")), n
        assert f["decision"].startswith("rejected") == (n not in ok), n
    manifest = read_json(out / "manifest.json")
    assert manifest["compress"]["selected"] == chosen
    for rel in selection["paths"].values():
        assert manifest["artifacts"][rel]["sha256"] == sha256_file(out / rel)
    # Torch forms, for score.backend=torch: fp32 and the student are modules a spec
    # rebuilds; the vocabulary-pruned model and the ONNX-only variants have none, and say
    # why. Each torch form returns its ONNX graph's logits.
    forms = selection["torch"]
    assert set(forms) == set(selection["paths"])
    assert {n for n, e in forms.items() if "weights" in e} == {"fp32", "distilled"}
    assert "embedding_bag architecture" in forms["pruned"]["reason"]
    assert "scikit-learn" in forms["baseline"]["reason"]
    from sparkforge.infer.predictor import ModelRef, load_backend

    feeds = {c: np.stack(gate[c].to_numpy()).astype(np.int64)
             for c in ("input_ids", "attention_mask")}
    for name in ("fp32", "distilled"):
        w, s = out / forms[name]["weights"], out / forms[name]["spec"]
        assert manifest["artifacts"][forms[name]["weights"]]["sha256"] == sha256_file(w)
        assert manifest["artifacts"][forms[name]["spec"]]["sha256"] == sha256_file(s)
        onnx_path = out / selection["paths"][name]
        want = load_backend(ModelRef(str(onnx_path), sha256_file(onnx_path))).run(feeds)
        got = load_backend(ModelRef(str(w), sha256_file(w), format="torch",
                                    spec=s.read_text())).run(feeds)
        np.testing.assert_allclose(got, want, atol=1e-4)

    # Scoring and evaluation need no change: every variant gets its test metrics.
    run_score(spark, cfg)
    run_evaluate(spark, cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["variants"]) == {"fp32", *VARIANTS, "baseline"}
    assert metrics["selected"] == chosen
    assert metrics["baseline"]["model"] == "tfidf_logreg"
    assert metrics["baseline"]["accuracy"] == metrics["variants"]["baseline"]["accuracy"]
    n_test = metrics["variants"]["fp32"]["n_rows"]
    for m in metrics["variants"].values():
        assert m["n_rows"] == n_test > 0
        assert m["accuracy"] > 0.8


def test_a_poor_neural_model_is_replaced_by_the_baseline_and_its_scores_are_sklearns(
        spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """An untrained MLP on a linear rule: the gate publishes the linear model, whose
    published probabilities equal a LogisticRegression fitted here on the same rows."""
    from sklearn.linear_model import LogisticRegression

    from sparkforge.jobs.compress import run_compress
    from sparkforge.jobs.preprocess import run_preprocess
    from sparkforge.jobs.score import run_score
    from sparkforge.jobs.train import model_spec
    from sparkforge.models import build_model, save_weights
    from sparkforge.train.loop import BEST_WEIGHTS

    _short_latency(monkeypatch)
    rng = np.random.default_rng(8)
    n = 600
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(["red", "blue"], size=n)
    y = np.where(2 * x1 - x2 + np.where(color == "red", 1.0, -1.0) > 0, "yes", "no")
    inp, out = tmp_path / "t.csv", tmp_path / "run"
    pd.DataFrame({"x1": x1.round(4), "x2": x2.round(4), "color": color, "y": y}
                 ).to_csv(inp, index=False)
    cfg = load_config(ROOT / "conf" / "tabular_classification.yaml", [
        f"data.input={inp}", "data.label_column=y", f"output.dir={out}",
        "train.hidden_dim=8", "run.date=2026-11-26",
        # Accuracy decides here, not latency: both models run in well under a millisecond,
        # and on a loaded machine the baseline measured 1.32x fp32's, over the default 1.25
        # (the decision then read "rejected: ... latency" and this test failed).
        "compress.max_latency_ratio=100"])
    run_preprocess(spark, cfg)
    spec = model_spec(cfg, pretrained=False)
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    save_weights(build_model(spec), out / "model" / BEST_WEIGHTS)  # untrained weights
    write_json_atomic(out / "model" / "model.json", spec)
    record_artifacts(out, [out / "model" / BEST_WEIGHTS, out / "model" / "model.json"])
    # Weights changed after training are refused before anything is exported (compress
    # used to load them unchecked).
    from sparkforge.artifacts import ArtifactError

    weights = out / "model" / BEST_WEIGHTS
    good = weights.read_bytes()
    weights.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(ArtifactError, match=r"model\.safetensors"):
        run_compress(spark, cfg)
    weights.write_bytes(good)

    with caplog.at_level("WARNING", logger="sparkforge.jobs.compress"):
        selection = run_compress(spark, cfg)
    figures = selection["variants"]
    assert figures["baseline"]["model"] == "onehot_logreg"
    assert figures["baseline"]["gate_metric"] > figures["fp32"]["gate_metric"] + 0.01
    assert selection["selected"] == "baseline"
    assert figures["baseline"]["decision"].startswith("reference: ")
    assert figures["fp32"]["decision"].startswith("rejected: accuracy drop")
    lines = [r.getMessage() for r in caplog.records if "linear baseline" in r.getMessage()]
    assert len(lines) == 1
    assert "train.epochs" in lines[0]
    manifest = read_json(out / "manifest.json")
    rel = selection["paths"]["baseline"]
    assert rel == "compressed/baseline/model.onnx"
    assert manifest["artifacts"][rel]["sha256"] == sha256_file(out / rel)

    run_score(spark, cfg)
    scores = pd.read_parquet(out / "scores" / "run_date=2026-11-26")
    published = scores[scores["model_variant"] == "baseline"]
    assert len(published) == n  # the selected variant scores every row
    # scikit-learn's own model on the same train rows and the same features.
    pre = read_preprocessed(out / "preprocessed", ["id", "split", "features", "label_index"])
    train = pre[pre["split"] == "train"]
    clf = LogisticRegression(C=1.0, max_iter=2000).fit(
        np.stack(train["features"].to_numpy()), train["label_index"])
    rows = published.merge(pre, on="id")
    assert len(rows) == n
    expected = clf.predict_proba(np.stack(rows["features"].to_numpy()))
    got = np.stack(rows["probability"].to_numpy())
    np.testing.assert_allclose(got, expected, atol=1e-3)
    labels = read_json(out / "model" / "labels.json")
    sure = np.abs(expected[:, 1] - 0.5) > 0.01
    assert (rows["prediction"].to_numpy()[sure]
            == np.array(labels)[expected.argmax(axis=1)][sure]).all()
