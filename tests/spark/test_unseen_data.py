"""Data nobody tuned for: regression targets at any scale, repeats and conflicting labels,
missing-value spellings, non-finite and undecodable values.

Expected counts are computed here from the rows this test writes, never from outputs.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from _train_helpers import read_preprocessed

from sparkforge.artifacts import read_json
from sparkforge.config import load_config
from sparkforge.jobs.preprocess import run_preprocess

ROOT = Path(__file__).resolve().parents[2]


def _tab_cfg(inp: Path, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return load_config(ROOT / "conf" / "tabular_classification.yaml",
                       [f"data.input={inp}", "data.label_column=label", f"output.dir={out}",
                        *extra])


def test_repeats_kept_conflicts_quarantined_and_never_across_splits(spark, tmp_path: Path
                                                                    ) -> None:
    rng = np.random.default_rng(3)
    rows = []
    for _ in range(400):
        a, b = int(rng.integers(0, 50)), str(rng.choice(["x", "y", "z"]))
        rows.append((a, b, "pos" if a > 25 else "neg"))
    repeats = rows[:60]                                   # exact repeats: legitimate rows
    conflicts = [(999, "x", "pos"), (999, "x", "neg"), (998, "y", "neg"), (998, "y", "pos"),
                 (998, "y", "pos")]
    every = rows + repeats + conflicts
    inp = tmp_path / "t.csv"
    pd.DataFrame(every, columns=["a", "b", "label"]).to_csv(inp, index=False)
    out = tmp_path / "run"
    s = run_preprocess(spark, _tab_cfg(inp, out, "preprocess.max_quarantine_fraction=0.0"))
    assert s["rows_in"] == len(every)
    # Every row holding one of the two conflicting feature sets is quarantined, nothing else.
    assert s["quarantine_reasons"] == {"conflicting_label": 5}
    assert s["rows_kept"] == len(every) - 5
    pre = read_preprocessed(out / "preprocessed", ["id", "split", "features"])
    # Copies of one feature row all land in one split (no test row is a copy of a train row).
    keyed = pre.assign(key=pre["features"].map(lambda v: tuple(np.round(v, 6))))
    assert (keyed.groupby("key")["split"].nunique() == 1).all()
    assert keyed["id"].is_unique


def test_text_near_copies_are_one_text_and_conflicts_quarantined(spark, tmp_path: Path
                                                                 ) -> None:
    rng = np.random.default_rng(5)
    words = ["good", "bad", "plot", "film", "cast", "score", "long", "short"]
    texts = [" ".join(rng.choice(words, size=8)) + f" w{i}" for i in range(300)]
    rows = [(t, "pos" if "good" in t else "neg") for t in texts]
    # Near copies: case, spacing and Unicode form (full-width letters) differ.
    rows += [(texts[0].upper(), rows[0][1]), ("  " + texts[1].replace(" ", "   "), rows[1][1]),
             (texts[2].replace("w2", "ｗ2"), rows[2][1])]
    rows += [("same words, two labels", "pos"), ("Same words,  two labels", "neg")]
    inp = tmp_path / "r.csv"
    with open(inp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(rows)
    out = tmp_path / "run"
    cfg = load_config(ROOT / "conf" / "text_classification.yaml",
                      [f"data.input={inp}", f"output.dir={out}", "tokenizer.kind=trained",
                       "tokenizer.vocab_size=120"])
    s = run_preprocess(spark, cfg)
    assert s["quarantine_reasons"] == {"duplicate": 3, "conflicting_label": 2}
    assert s["rows_kept"] == 300
    # tokenizer.max_length 0: chosen from the data (texts of ~9 words) and recorded.
    assert 16 <= s["max_length"] <= 32
    assert "95th percentile" in s["max_length_chosen_by"]
    pre = pq.read_table(out / "preprocessed", columns=["text", "split"]).to_pandas()
    folded = pre["text"].map(lambda t: " ".join(t.casefold().split()))
    assert folded.is_unique


def test_missing_spellings_non_finite_and_undecodable_values(spark, tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    lines = ["num,cat,label"]
    expected = {"bad_value:num": 0, "bad_type:num": 0, "bad_encoding:label": 0}
    n_missing = 0
    for i in range(400):
        r = i % 20
        if r == 0:
            num, n_missing = "?", n_missing + 1           # UCI's missing value: imputed
        elif r == 1:
            num, n_missing = "NA", n_missing + 1
        elif r == 2:
            num = ["inf", "-Infinity", "NaN"][i % 3]
            expected["bad_value:num"] += 1
        elif r == 3 and i < 100:
            num = "abc"                                    # a real bad value: quarantined
            expected["bad_type:num"] += 1
        else:
            num = f"{rng.normal(10, 2):.6f}"
        lines.append(f"{num},{rng.choice(['p', 'q'])},{'yes' if i % 2 else 'no'}")
    data = ("\n".join(lines) + "\n").encode()
    data += b"1.5,p,n\xe9\xff\n"                         # not UTF-8: not a new class
    expected["bad_encoding:label"] += 1
    inp = tmp_path / "m.csv"
    inp.write_bytes(data)
    out = tmp_path / "run"
    s = run_preprocess(spark, _tab_cfg(inp, out, "preprocess.max_quarantine_fraction=0.5"))
    assert s["numeric_columns"] == ["num"]                # '?' and 'NA' did not make it a string
    assert s["quarantine_reasons"] == expected
    assert s["rows_in"] == 401
    assert s["rows_kept"] == 401 - sum(expected.values())
    assert s["labels"] == ["no", "yes"]
    # the '?' and 'NA' rows are kept with a null (imputed) value; counted in the one pass
    # over the kept rows
    assert s["null_rates"] == pytest.approx({"num": n_missing / s["rows_kept"], "cat": 0.0})
    ev = s["column_types"]["num"]
    assert ev["type"] == "numeric"
    assert ev["bad_values"] == expected["bad_type:num"]
    assert ev["non_null"] == 401 - n_missing
    pre = read_preprocessed(out / "preprocessed", ["features"])
    assert np.isfinite(np.stack(pre["features"].to_numpy())).all()
    assert read_json(out / "manifest.json")["preprocess"]["column_types"]["cat"]["type"] == \
        "categorical"


@pytest.mark.parametrize("scale", [1e3, 1e6])
def test_regression_targets_in_thousands_and_millions_pass_compress(spark, tmp_path: Path,
                                                                     scale: float) -> None:
    """Targets far from unit scale: standardised for training, mapped back inside the model
    (so ONNX predicts in the target's units), parity judged relative to the output scale."""
    import onnxruntime as ort
    from sklearn.metrics import r2_score

    from sparkforge.jobs.compress import run_compress
    from sparkforge.jobs.train import run_train

    rng = np.random.default_rng(int(scale) % 97)
    n = 1500
    x = rng.normal(size=(n, 4))
    cat = rng.choice(["a", "b", "c"], size=n)
    y = scale * (3.0 + x[:, 0] + 0.5 * x[:, 1] - 0.8 * x[:, 2] + (cat == "b") * 1.0
                 + rng.normal(0, 0.1, size=n))
    inp = tmp_path / "reg.csv"
    pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2], "x3": x[:, 3], "c": cat,
                  "target": y}).to_csv(inp, index=False)
    out = tmp_path / "run"
    cfg = load_config(ROOT / "conf" / "tabular_classification.yaml",
                      ["task=tabular_regression", f"data.input={inp}",
                       "data.label_column=target", f"output.dir={out}", "train.epochs=15",
                       "train.num_processes=1", "evaluate.baseline=false"])
    run_preprocess(spark, cfg)
    run_train(spark, cfg)
    run_compress(spark, cfg)        # raised "parity failed" for targets in the thousands
    test = read_preprocessed(out / "preprocessed" / "split=test", ["features", "label"])
    sess = ort.InferenceSession(str(out / "compressed" / "fp32" / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    feats = np.stack(test["features"].to_numpy()).astype(np.float32)
    pred = sess.run(None, {"features": feats})[0][:, 0]
    assert r2_score(test["label"], pred) > 0.9
