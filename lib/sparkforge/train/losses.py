"""Class imbalance in the classification loss: the one place class weights are decided
and applied (training, pruning's fine-tune and distillation call :func:`classification_loss`).

``train.class_weights``:

- ``none``: plain cross-entropy.
- ``balanced``: each class weighted ``n_rows / (n_classes * n_class_rows)`` (scikit-learn's
  ``compute_class_weight("balanced")``), counted on the train split.
- ``auto`` (default): ``balanced`` when the rarest class is rarer than
  ``AUTO_MIN_SHARE_RATIO`` of its share under balance (``1 / n_classes``), else ``none``.

Why 0.25 of the balanced share (binary: the minority under 12.5%; 3 classes: under 8.3%):
weighting trades accuracy for minority recall, since the loss then acts as if the classes
were equally frequent. Measured with scikit-learn LogisticRegression on UCI Adult, its
positives subsampled (seeded) to each share, test 30% (accuracy / balanced accuracy,
unweighted -> balanced):

======  ===============  =================
share   accuracy         balanced accuracy
======  ===============  =================
23.9%   0.855 -> 0.812   0.769 -> 0.829
15%     0.893 -> 0.803   0.714 -> 0.821
12.5%   0.906 -> 0.804   0.688 -> 0.818
10%     0.924 -> 0.805   0.670 -> 0.822
5%      0.956 -> 0.799   0.595 -> 0.813
2%      0.982 -> 0.808   0.564 -> 0.816
======  ===============  =================

At the demo's mild imbalance (Adult's 24%) an unweighted model still finds most of the
minority and weighting would cost 4 points of accuracy: ``auto`` leaves it alone. Around
an eighth the unweighted model's balanced accuracy falls under 0.7 (it finds fewer than
half of the minority) and keeps falling toward 0.5, a model that says "majority" to
everyone; there ``auto`` weighs the classes, and the run records that it did (the
manifest's ``train.class_weights``) so that a user who wants accuracy sets ``none``.
Balanced data is never weighted by ``auto``: its training is unchanged.

Torch is imported inside :func:`classification_loss` only: the driver decides weights
without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

AUTO_MIN_SHARE_RATIO = 0.25


def class_weights(mode: str, labels: Sequence[str], counts: Mapping[str, int]
                  ) -> tuple[list[float] | None, dict[str, Any]]:
    """(weights in ``labels`` order or None, the decision to record) for ``mode``.

    ``counts``: train rows per label. A label without rows counts as one row (its weight is
    then large but finite; it cannot occur in a batch anyway)."""
    n = [max(int(counts.get(lab, 0)), 0) for lab in labels]
    total, k = sum(n), len(labels)
    shares = [c / total for c in n] if total else [0.0] * k
    min_share = min(shares) if shares else 0.0
    info: dict[str, Any] = {"mode": mode, "train_counts": dict(zip(labels, n, strict=True)),
                            "min_class_share": min_share}
    if mode == "auto":
        limit = AUTO_MIN_SHARE_RATIO / k if k else 0.0
        apply = k > 1 and total > 0 and min_share < limit
        info["auto_rule"] = (f"balanced when the rarest class's share < {AUTO_MIN_SHARE_RATIO}"
                             f" / {k} classes = {limit:.4f}")
    else:
        apply = mode == "balanced" and k > 1 and total > 0
    if not apply:
        info.update(applied=False, weights=None)
        return None, info
    weights = [total / (k * max(c, 1)) for c in n]
    info.update(applied=True, weights=weights)
    return weights, info


def classification_loss(logits: Any, y: Any, weight: Any = None, reduction: str = "mean"
                        ) -> Any:
    """Cross-entropy of ``logits`` against class indices ``y``, weighted per class when
    ``weight`` (a tensor or list in label order) is given. With ``reduction='mean'`` the
    weighted sum is divided by the rows' summed weights, as torch and scikit-learn do."""
    import torch

    if weight is not None:
        weight = torch.as_tensor(weight, dtype=logits.dtype, device=logits.device)
    return torch.nn.functional.cross_entropy(logits, y.long(), weight=weight,
                                             reduction=reduction)
