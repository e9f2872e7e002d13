"""score.mode=embed: MiniLM sentence embeddings for a whole plain-text table."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from sparkforge.artifacts import update_manifest
from sparkforge.config import load_config
from sparkforge.jobs.preprocess import run_preprocess
from sparkforge.jobs.score import run_score

ROOT = Path(__file__).resolve().parents[2]


def test_embed_mode_matches_the_torch_encoder(spark, tmp_path: Path) -> None:
    import torch
    from tokenizers import Tokenizer

    from sparkforge.models import build_model, save_weights

    train = tmp_path / "train.csv"
    pd.DataFrame({"text": [f"a fine film number {i}" for i in range(30)]
                  + [f"a dull film number {i}" for i in range(30)],
                  "label": ["pos"] * 30 + ["neg"] * 30}).to_csv(train, index=False)
    out = tmp_path / "run"
    cfg = load_config(ROOT / "conf" / "text_classification.yaml", [
        f"data.input={train}", f"output.dir={out}", "train.model=minilm",
        "tokenizer.max_length=32", "run.date=2026-05-05"])
    run_preprocess(spark, cfg)
    # A "trained" MiniLM without the training: the pretrained encoder and a fresh head.
    model = build_model({"name": "minilm", "num_outputs": 2, "pretrained": True}).eval()
    save_weights(model, out / "model" / "model.safetensors")
    (out / "model" / "model.json").write_text(json.dumps(
        {"name": "minilm", "num_outputs": 2, "pretrained": False, "dropout": 0.1,
         "freeze_encoder": False}))
    # recorded as the train stage records them: scoring checks them before loading
    update_manifest(out, "train", {}, [out / "model" / "model.safetensors",
                                       out / "model" / "model.json"])

    lines = ["A man is playing a guitar.", "Someone plays the guitar.", "",
             "The stock market fell sharply today."]
    (tmp_path / "plain.txt").write_text("\n".join(lines) + "\n")
    text_cfg = dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, format="text", text_column="value", options={}),
        score=dataclasses.replace(cfg.score, mode="embed", input=str(tmp_path / "plain.txt")))
    summary = run_score(spark, text_cfg)
    assert summary["rows_in"] == 4
    assert summary["rows_embedded"] == 3
    assert summary["rows_quarantined"] == 1          # the empty line
    emb = pd.read_parquet(out / summary["path"])
    vecs = np.stack(emb["embedding"].to_numpy())
    assert vecs.shape == (3, 384)
    tok = Tokenizer.from_file(str(out / "model" / "tokenizer.json"))
    enc = tok.encode_batch([s for s in lines if s])
    with torch.no_grad():
        ref = model.encode(torch.tensor([e.ids for e in enc]),
                           torch.tensor([e.attention_mask for e in enc])).numpy()
    # rows come back keyed by id; match them by content
    sims = vecs @ ref.T
    np.testing.assert_allclose(np.sort(sims.max(axis=1)), 1.0, atol=1e-4)
    s = sims.max(axis=0)
    assert s.min() > 0.9999
