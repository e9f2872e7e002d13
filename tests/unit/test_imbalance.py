"""Class weights (train/losses.py) and the binary decision threshold (metrics/threshold.py)
against scikit-learn, without Spark (well under a second)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, log_loss, precision_recall_curve
from sklearn.utils.class_weight import compute_class_weight

from sparkforge.metrics.threshold import (
    GRID,
    choose_threshold,
    confusion_at,
    decide,
    metric_curves,
)
from sparkforge.train.losses import class_weights, classification_loss


def _labels(n: int, share: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random(n) < share).astype(np.int64)


def test_balanced_weights_equal_sklearn() -> None:
    y = np.array([0] * 70 + [1] * 20 + [2] * 10)
    labels = ["a", "b", "c"]
    counts = {lab: int((y == i).sum()) for i, lab in enumerate(labels)}
    weights, info = class_weights("balanced", labels, counts)
    assert weights is not None
    assert info["applied"]
    np.testing.assert_allclose(weights, compute_class_weight("balanced", classes=np.arange(3),
                                                             y=y))


@pytest.mark.parametrize(("share", "applied"), [(0.05, True), (0.12, True), (0.13, False),
                                                (0.24, False), (0.5, False)])
def test_auto_weights_only_below_a_quarter_of_the_balanced_share(share: float,
                                                                 applied: bool) -> None:
    n_pos = round(1000 * share)
    weights, info = class_weights("auto", ["neg", "pos"], {"neg": 1000 - n_pos, "pos": n_pos})
    assert info["applied"] is applied
    assert (weights is not None) is applied
    assert info["min_class_share"] == pytest.approx(share)


def test_none_never_weights() -> None:
    weights, info = class_weights("none", ["neg", "pos"], {"neg": 990, "pos": 10})
    assert weights is None
    assert info["applied"] is False


def test_weighted_loss_equals_sklearn_weighted_log_loss() -> None:
    rng = np.random.default_rng(1)
    logits = torch.from_numpy(rng.normal(size=(200, 3)))
    y = torch.from_numpy(rng.integers(0, 3, size=200))
    w = [0.5, 2.0, 4.0]
    p = torch.softmax(logits, -1).numpy()
    expected = log_loss(y.numpy(), p, sample_weight=np.asarray(w)[y.numpy()], labels=[0, 1, 2])
    assert float(classification_loss(logits, y, w)) == pytest.approx(expected, rel=1e-9)
    assert float(classification_loss(logits, y)) == pytest.approx(
        log_loss(y.numpy(), p, labels=[0, 1, 2]), rel=1e-9)


def _buckets(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bucket counts of threshold.bucket_counts, computed in numpy."""
    b = np.minimum(np.floor(p * GRID), GRID).astype(np.int64)
    return (np.bincount(b[y == 1], minlength=GRID + 1),
            np.bincount(b[y == 0], minlength=GRID + 1))


def test_f1_threshold_matches_sklearn_on_the_same_rows() -> None:
    rng = np.random.default_rng(7)
    y = _labels(3000, 0.05, seed=7)
    p = 1 / (1 + np.exp(-(rng.normal(size=len(y)) + 1.5 * y - 2.5)))  # imbalanced, noisy
    pos, neg = _buckets(p, y)
    t, b = choose_threshold(pos, neg, "f1")
    ours = metric_curves(confusion_at(pos, neg))["f1"][b]
    assert ours == pytest.approx(f1_score(y, p >= t), abs=1e-12)
    prec, rec, _ = precision_recall_curve(y, p)
    with np.errstate(invalid="ignore"):
        exact_best = np.nanmax(2 * prec * rec / (prec + rec))
    assert ours >= exact_best - 0.005  # the 1e-4 grid loses at most a row or two
    assert t < 0.5  # on 5% positives F1 wants more positives than argmax predicts
    assert f1_score(y, p >= t) > f1_score(y, p >= 0.5)


def test_balanced_accuracy_threshold_and_ties_to_half() -> None:
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(3)
    y = _labels(2000, 0.1, seed=3)
    p = np.clip(rng.normal(0.3 + 0.3 * y, 0.15), 0, 1)
    pos, neg = _buckets(p, y)
    t, b = choose_threshold(pos, neg, "balanced_accuracy")
    ours = metric_curves(confusion_at(pos, neg))["balanced_accuracy"][b]
    assert ours == pytest.approx(balanced_accuracy_score(y, p >= t), abs=1e-12)
    # Perfectly separated scores: every threshold in the gap is best; the tie goes to 0.5.
    y2 = np.array([0] * 10 + [1] * 10)
    p2 = np.array([0.1] * 10 + [0.9] * 10)
    assert choose_threshold(*_buckets(p2, y2), "f1")[0] == 0.5


def test_decide() -> None:
    p = np.array([[0.7, 0.3], [0.4, 0.6], [0.8, 0.2]])
    assert decide(p, None).tolist() == [0, 1, 0]
    assert decide(p, 0.25).tolist() == [1, 1, 0]
    three = np.array([[0.2, 0.3, 0.5]])
    assert decide(three, 0.1).tolist() == [2]  # multiclass: the argmax, threshold ignored


def test_config_keys() -> None:
    from pathlib import Path

    from sparkforge.config import ConfigError, load_config

    conf = Path(__file__).resolve().parents[2] / "conf" / "tabular_classification.yaml"
    cfg = load_config(conf)
    assert (cfg.train.class_weights, cfg.evaluate.threshold) == ("auto", "0.5")
    assert load_config(conf, ["evaluate.threshold=0.5"]).evaluate.threshold == "0.5"
    assert load_config(conf, ["evaluate.threshold=f1"]).evaluate.threshold == "f1"
    with pytest.raises(ConfigError, match=r"evaluate\.threshold=0\.3: use one of 0\.5, f1"):
        load_config(conf, ["evaluate.threshold=0.3"])
    with pytest.raises(ConfigError, match=r"train\.class_weights=True: use one of auto"):
        load_config(conf, ["train.class_weights=true"])
    with pytest.raises(ConfigError, match="for classification"):
        load_config(conf, ["task=tabular_regression", "evaluate.threshold=f1"])


def test_baseline_uses_the_training_class_weights() -> None:
    from sklearn.linear_model import LogisticRegression

    from sparkforge.baseline import TABULAR_C, fit_baseline

    rng = np.random.default_rng(5)
    y = _labels(600, 0.06, seed=5)
    x = rng.normal(size=(600, 3)) + 0.8 * y[:, None]
    w = class_weights("auto", ["n", "p"], {"n": int((y == 0).sum()), "p": int(y.sum())})[0]
    assert w is not None
    fitted = fit_baseline({"features": x.astype(np.float32), "label_index": y}, text=False,
                          regression=False, num_classes=2, target="label_index",
                          class_weights=w)
    ref = LogisticRegression(C=TABULAR_C, max_iter=2000, class_weight={0: w[0], 1: w[1]}
                             ).fit(x.astype(np.float32).astype(np.float64), y)
    np.testing.assert_allclose(fitted.estimator.coef_, ref.coef_, rtol=1e-6)
    assert fitted.info["class_weights"] == w
    unweighted = fit_baseline({"features": x.astype(np.float32), "label_index": y},
                              text=False, regression=False, num_classes=2,
                              target="label_index")
    assert unweighted.estimator.predict(x).sum() < fitted.estimator.predict(x).sum()
