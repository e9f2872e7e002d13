"""The linear baseline: its TF-IDF is scikit-learn's, its ONNX graph predicts what
scikit-learn predicts (through the scoring core's own predict + softmax)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from sparkforge import baseline as bl
from sparkforge.infer import predict, softmax


def _ids(n: int, length: int = 16, vocab: int = 40, seed: int = 0
         ) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded token ids (pad id 0) of random lengths, as the tokenizer writes them."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(1, length + 1, size=n)
    mask = (np.arange(length)[None, :] < lens[:, None]).astype(np.int64)
    return rng.integers(1, vocab, size=(n, length)) * mask, mask


def _onnx(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return predict(sess, feeds, batch_size=64)


def test_tfidf_is_scikit_learns_over_the_id_ngrams() -> None:
    ids, mask = _ids(300)
    y = ids[:, 0] % 2
    b = bl.fit_baseline({"input_ids": ids, "attention_mask": mask, "y": y}, text=True,
                        regression=False, num_classes=2, target="y")

    def ngrams(row: tuple[np.ndarray, np.ndarray]) -> list[str]:
        i, m = row
        return [str(t) for t, k in zip(i, m, strict=True) if k] + [
            f"{i[j]} {i[j + 1]}" for j in range(len(i) - 1) if m[j] and m[j + 1]]

    ref = TfidfVectorizer(analyzer=ngrams, min_df=2, sublinear_tf=True)
    expected = ref.fit_transform(list(zip(ids, mask, strict=True))).toarray()
    got = b.design({"input_ids": ids, "attention_mask": mask}).toarray()
    assert got.shape == expected.shape == (300, len(ref.vocabulary_))
    # Same values row by row (column order differs: the vocabularies are ordered differently).
    np.testing.assert_allclose(np.sort(got, axis=1), np.sort(expected, axis=1), atol=1e-12)


@pytest.mark.parametrize(("num_classes", "present"), [(2, [0, 1]), (4, [0, 1, 3]), (3, [0, 2])])
def test_text_graph_probabilities_equal_predict_proba(tmp_path: Path, num_classes: int,
                                                      present: list[int]) -> None:
    ids, mask = _ids(400)
    y = np.asarray(present)[(ids[:, 0] + ids[:, 1]) % len(present)]
    b = bl.fit_baseline({"input_ids": ids, "attention_mask": mask, "y": y}, text=True,
                        regression=False, num_classes=num_classes, target="y")
    path = tmp_path / "model.onnx"
    bl.export_baseline(b, path)
    test_ids, test_mask = _ids(150, seed=1)
    # Scoring trims padding to each batch's longest row; the graph takes any width.
    for width in (16, int(test_mask.sum(axis=1).max()), 1):
        feeds = {"input_ids": test_ids[:, :width], "attention_mask": test_mask[:, :width]}
        p = softmax(_onnx(path, feeds).astype(np.float64))
        ref = b.estimator.predict_proba(b.design(feeds))
        assert p.shape == (150, num_classes)
        np.testing.assert_allclose(p[:, present], ref, atol=1e-5)
        absent = [c for c in range(num_classes) if c not in present]
        assert (p[:, absent] < 1e-20).all()
        assert bl.check_parity(b, path, feeds)["agreement"] == 1.0


def test_tabular_graphs_equal_scikit_learn(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(500, 7)).astype(np.float32)
    y_cls = (x[:, 0] - x[:, 1] > 0).astype(np.int64)
    y_reg = 3e6 * x[:, 2] + 1e7  # large targets: parity is relative to the output scale
    clf = bl.fit_baseline({"features": x, "y": y_cls}, text=False, regression=False,
                          num_classes=2, target="y")
    reg = bl.fit_baseline({"features": x, "y": y_reg}, text=False, regression=True,
                          num_classes=0, target="y")
    assert (clf.model, reg.model) == ("onehot_logreg", "ridge")
    for b, name in ((clf, "clf"), (reg, "reg")):
        path = tmp_path / f"{name}.onnx"
        bl.export_baseline(b, path)
        out = _onnx(path, {"features": x}).astype(np.float64)
        if b.regression:
            assert out.shape == (500, 1)
            np.testing.assert_allclose(out[:, 0], b.estimator.predict(x), rtol=1e-5)
            par = bl.check_parity(b, path, {"features": x})
            assert par["max_abs_pred_diff"] > 1e-4  # float32 over 1e7: absolute would fail
            assert par["tolerance"] == pytest.approx(1e-4 * np.abs(b.estimator.predict(x)).max())
        else:
            np.testing.assert_allclose(softmax(out), b.estimator.predict_proba(x), atol=1e-6)
            assert (softmax(out).argmax(1) == b.estimator.predict(x)).all()


def test_parity_check_fails_on_a_graph_of_another_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    a = bl.fit_baseline({"features": x, "y": (x[:, 0] > 0).astype(int)}, text=False,
                        regression=False, num_classes=2, target="y")
    other = bl.fit_baseline({"features": x, "y": (x[:, 1] > 0).astype(int)}, text=False,
                            regression=False, num_classes=2, target="y")
    path = tmp_path / "other.onnx"
    bl.export_baseline(other, path)
    with pytest.raises(RuntimeError, match="baseline ONNX parity failed: max_abs_prob_diff"):
        bl.check_parity(a, path, {"features": x})


def test_one_label_cannot_make_a_classifier() -> None:
    x = np.zeros((10, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="single label"):
        bl.fit_baseline({"features": x, "y": np.zeros(10, dtype=int)}, text=False,
                        regression=False, num_classes=2, target="y")


def test_vocabulary_is_capped_at_the_most_frequent_ngrams() -> None:
    ids, mask = _ids(200)
    full = bl.fit_vocab(ids, mask)
    capped = bl.fit_vocab(ids, mask, max_ngrams=10)
    assert len(capped) == 10 < len(full)
    _, keys = bl.ngram_keys(ids, mask)
    uniq, counts = np.unique(keys, return_counts=True)
    kept_counts = counts[np.searchsorted(uniq, capped)]
    dropped = np.setdiff1d(full, capped)
    assert kept_counts.min() >= counts[np.searchsorted(uniq, dropped)].max()
