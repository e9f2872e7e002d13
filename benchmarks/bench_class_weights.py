"""How the default ``train.class_weights: auto`` was chosen (``lib/sparkforge/train/losses.py``).

    .venv/bin/python -m benchmarks.bench_class_weights   # needs data/adult.csv (make demo-data)

scikit-learn LogisticRegression, unweighted vs ``class_weight="balanced"``, on UCI Adult
with its positives subsampled (seeded) to each share; one-hot categories and standardized
numerics, a stratified 30% test split. Prints accuracy and balanced accuracy of both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import OneHotEncoder, StandardScaler

SHARES = [None, 0.15, 0.125, 0.10, 0.08, 0.05, 0.02]  # None: Adult as it is (23.9%)


def main() -> None:
    df = pd.read_csv(Path("data") / "adult.csv", skipinitialspace=True)
    y_all = df.pop("income").str.strip().str.startswith(">50K").to_numpy()
    cat = [c for c in df.columns if df[c].dtype == object]
    num = [c for c in df.columns if c not in cat]
    rng = np.random.default_rng(0)
    print("share  n_train  acc(none) acc(bal)  bacc(none) bacc(bal)")
    for share in SHARES:
        pos, neg = np.where(y_all)[0], np.where(~y_all)[0]
        if share is not None:
            pos = rng.choice(pos, int(share / (1 - share) * len(neg)), replace=False)
        idx = np.concatenate([pos, neg])
        x, y = df.iloc[idx], y_all[idx]
        xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
        ct = make_column_transformer((OneHotEncoder(handle_unknown="ignore"), cat),
                                     (StandardScaler(), num))
        a, b = ct.fit_transform(xtr), ct.transform(xte)
        r = []
        for cw in (None, "balanced"):
            pred = LogisticRegression(max_iter=2000, class_weight=cw).fit(a, ytr).predict(b)
            r.append((accuracy_score(yte, pred), balanced_accuracy_score(yte, pred)))
        print(f"{share or y.mean():.3f}  {len(ytr):6d}  {r[0][0]:.4f}    {r[1][0]:.4f}    "
              f"{r[0][1]:.4f}     {r[1][1]:.4f}")


if __name__ == "__main__":
    main()
