"""The linear baseline: a scikit-learn model on the neural model's own inputs, as ONNX.

==========================  ==========================================================
``tfidf_logreg`` (text)     TF-IDF (unigrams and bigrams of the tokenizer's ids,
                            ``min_df=2``, sublinear tf, l2 norm; scikit-learn's
                            ``TfidfTransformer``) + ``LogisticRegression(C=4)``
``onehot_logreg``           ``LogisticRegression`` over the ``features`` vector (one-hot
                            categories, standardized numerics)
``ridge`` (regression)      ``Ridge`` over ``features``
==========================  ==========================================================

It is fitted on the driver on a bounded, seeded sample of the train split
(``evaluate.baseline_max_rows``) and written as an ONNX graph with the same inputs
(``input_ids``/``attention_mask`` or ``features``) and output (``logits``) as the
neural variants, so the compress stage measures it, the gate may select it and
scoring runs it like any other variant: the baseline in ``metrics.json`` is that
same fitted model, scored by the same onnxruntime path on the same rows. Text is
taken as token ids, not raw strings: the baseline sees exactly what the neural model
sees (including the tokenizer's truncation at ``tokenizer.max_length``).

The text graph never materialises a vocabulary-wide row: each row's n-grams are
looked up in a hash map (``ai.onnx.ml`` LabelEncoder), sorted, and counted by runs,
so memory is O(batch x sequence length).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

NAME = "baseline"  # the variant's name: compressed/baseline/model.onnx
# Keys of the text n-grams: a unigram is its token id, a bigram (a, b) is
# ID_SPACE * (1 + a) + b; every id of every tokenizer here is far below it.
ID_SPACE = 1 << 24
MIN_DF = 2
# At most this many n-grams (the most frequent; scikit-learn's max_features rule): it
# bounds the ONNX file (two floats per class and a hash-map entry per n-gram).
MAX_NGRAMS = 200_000
TEXT_C, TABULAR_C, RIDGE_ALPHA = 4.0, 1.0, 1.0
# A class absent from the train sample gets this logit (probability ~1e-22).
ABSENT_LOGIT = -50.0
# sklearn/ONNX parity: the ONNX output may differ from scikit-learn's by this fraction
# of the output's scale (probabilities: 1; regression: the largest |prediction|). The
# graph computes in float32, scikit-learn in float64.
PARITY_RTOL = 1e-4
_OPSET, _ML_OPSET, _IR_VERSION = 18, 3, 8


@dataclass
class LinearBaseline:
    """A fitted baseline: the scikit-learn estimators and what the ONNX graph needs."""

    model: str
    text: bool
    regression: bool
    num_classes: int
    estimator: Any  # LogisticRegression or Ridge
    tfidf: Any = None  # TfidfTransformer (text)
    vocab: np.ndarray | None = None  # text: sorted n-gram keys; column i is vocab[i]
    info: dict[str, Any] = field(default_factory=dict)

    def design(self, feeds: Mapping[str, np.ndarray]) -> Any:
        """The estimator's input matrix for a batch of model inputs."""
        if not self.text:
            return np.asarray(feeds["features"], dtype=np.float64)
        assert self.vocab is not None
        return self.tfidf.transform(ngram_counts(feeds["input_ids"], feeds["attention_mask"],
                                                 self.vocab))

    def predict(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """scikit-learn's own output: probabilities (n, K) in label order, or predictions."""
        x = self.design(feeds)
        if self.regression:
            return np.asarray(self.estimator.predict(x), dtype=np.float64)
        proba = np.zeros((x.shape[0], self.num_classes))
        proba[:, self.estimator.classes_] = self.estimator.predict_proba(x)
        return proba

    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        """(W, b) with logits = x @ W + b over all ``num_classes`` labels (K=1: regression).

        Binary logistic regression has one coefficient row z; [0, z] gives the same
        softmax as its predict_proba. Multinomial: softmax(x @ coef.T + b) is predict_proba.
        """
        est = self.estimator
        if self.regression:
            return (np.asarray(est.coef_, dtype=np.float64).reshape(-1, 1),
                    np.atleast_1d(np.asarray(est.intercept_, dtype=np.float64)))
        classes = np.asarray(est.classes_)
        n_feat = est.coef_.shape[1]
        w = np.zeros((n_feat, self.num_classes))
        b = np.full(self.num_classes, ABSENT_LOGIT)
        if len(classes) == 2:
            w[:, classes[1]] = est.coef_[0]
            b[classes[0]], b[classes[1]] = 0.0, est.intercept_[0]
        else:
            w[:, classes] = est.coef_.T
            b[classes] = est.intercept_
        return w, b


def ngram_keys(ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, key) of every unigram and bigram of unmasked ids (see ``ID_SPACE``)."""
    ids = np.asarray(ids, dtype=np.int64)
    on = np.asarray(mask) != 0
    if ids.size and (int(ids[on].min(initial=0)) < 0 or int(ids[on].max(initial=0)) >= ID_SPACE):
        raise ValueError(f"token ids must lie in [0, {ID_SPACE}) for the TF-IDF baseline")
    n, length = ids.shape
    rows = np.broadcast_to(np.arange(n)[:, None], (n, length))
    both = on[:, :-1] & on[:, 1:]
    bigrams = ID_SPACE * (1 + ids[:, :-1]) + ids[:, 1:]
    return (np.concatenate([rows[on], rows[:, :-1][both]]),
            np.concatenate([ids[on], bigrams[both]]))


def ngram_counts(ids: np.ndarray, mask: np.ndarray, vocab: np.ndarray) -> Any:
    """Sparse (rows, len(vocab)) n-gram counts; n-grams outside ``vocab`` are dropped."""
    from scipy import sparse

    rows, keys = ngram_keys(ids, mask)
    cols = np.searchsorted(vocab, keys)
    known = cols < len(vocab)
    known[known] = vocab[cols[known]] == keys[known]
    return sparse.csr_matrix((np.ones(int(known.sum())), (rows[known], cols[known])),
                             shape=(len(ids), len(vocab)))


def fit_vocab(ids: np.ndarray, mask: np.ndarray, min_df: int = MIN_DF,
              max_ngrams: int = MAX_NGRAMS) -> np.ndarray:
    """Sorted keys of the n-grams in at least ``min_df`` rows, the ``max_ngrams`` most
    frequent (by count over the sample, as scikit-learn's ``max_features``)."""
    rows, keys = ngram_keys(ids, mask)
    uniq, total = np.unique(keys, return_counts=True)
    order = np.lexsort((keys, rows))
    r, k = rows[order], keys[order]
    first = np.ones(len(k), dtype=bool)
    first[1:] = (r[1:] != r[:-1]) | (k[1:] != k[:-1])
    _, df = np.unique(k[first], return_counts=True)  # same sorted keys as ``uniq``
    keep = df >= min_df
    uniq, total = uniq[keep], total[keep]
    if len(uniq) > max_ngrams:
        top = np.lexsort((uniq, -total))[:max_ngrams]
        uniq = uniq[top]
    return np.sort(uniq)


def fit_baseline(train: Mapping[str, np.ndarray], *, text: bool, regression: bool,
                 num_classes: int, target: str,
                 class_weights: Sequence[float] | None = None) -> LinearBaseline:
    """Fit the baseline on ``train`` (model inputs and ``target``); ``class_weights`` (in
    label order): the ones training used (``train.class_weights``), so that the gate
    compares models that weigh the classes alike."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, Ridge

    y = np.asarray(train[target])
    n = len(y)
    if n == 0:
        raise ValueError("no train rows to fit the baseline on")
    tfidf, vocab = None, None
    if text:
        from sklearn.feature_extraction.text import TfidfTransformer

        vocab = fit_vocab(train["input_ids"], train["attention_mask"])
        if len(vocab) == 0:
            raise ValueError(f"no n-gram occurs in {MIN_DF} train rows; the TF-IDF baseline "
                             "has nothing to learn from")
        tfidf = TfidfTransformer(sublinear_tf=True)
        x = tfidf.fit_transform(ngram_counts(train["input_ids"], train["attention_mask"],
                                             vocab))
        name = "tfidf_logreg"
    else:
        x = np.asarray(train["features"], dtype=np.float64)
        name = "ridge" if regression else "onehot_logreg"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        if regression:
            est: Any = Ridge(alpha=RIDGE_ALPHA).fit(x, y.astype(np.float64))
        else:
            if len(np.unique(y)) < 2:
                raise ValueError("the train sample holds a single label; a classifier "
                                 "needs two")
            weight = dict(enumerate(map(float, class_weights))) if class_weights else None
            est = LogisticRegression(C=TEXT_C if text else TABULAR_C, max_iter=2000,
                                     class_weight=weight).fit(x, y.astype(np.int64))
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    info = {"model": name, "n_train": n, "n_features": int(x.shape[1]), "converged": converged,
            "class_weights": list(class_weights) if class_weights and not regression else None}
    log.info("baseline %s fitted on %d train rows, %d features%s", name, n, x.shape[1],
             "" if converged else " (did not converge)")
    return LinearBaseline(model=name, text=text, regression=regression,
                          num_classes=1 if regression else num_classes, estimator=est,
                          tfidf=tfidf, vocab=vocab, info=info)


def _graph_text(b: LinearBaseline, w: np.ndarray, bias: np.ndarray) -> tuple[list[Any], list[Any]]:
    from onnx import TensorProto, helper, numpy_helper

    assert b.vocab is not None
    assert b.tfidf is not None
    n_feat = len(b.vocab)
    # Index n_feat is "no such n-gram" (and masked positions): idf 0, weights 0.
    idf = np.append(b.tfidf.idf_, 0.0).astype(np.float32)
    wt = np.vstack([w, np.zeros((1, w.shape[1]))]).astype(np.float32)

    def const(name: str, value: Any, dtype: Any = np.int64) -> Any:
        return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)

    inits = [const("neg1", -1), const("space", ID_SPACE), const("one_i", 1),
             const("s0", [0]), const("s1", [1]), const("e_1", [-1]),
             const("e_max", [np.iinfo(np.int64).max]), const("ax1", [1]),
             const("idf", idf, np.float32), const("coef", wt, np.float32),
             const("bias", bias, np.float32), const("eps", 1e-12, np.float32),
             const("one_f", 1.0, np.float32)]
    N = helper.make_node
    nodes = [
        N("Cast", ["attention_mask"], ["on"], to=TensorProto.BOOL),
        N("Where", ["on", "input_ids", "neg1"], ["uni"]),
        N("Slice", ["input_ids", "s0", "e_1", "ax1"], ["a"]),
        N("Slice", ["input_ids", "s1", "e_max", "ax1"], ["b"]),
        N("Slice", ["on", "s0", "e_1", "ax1"], ["on_a"]),
        N("Slice", ["on", "s1", "e_max", "ax1"], ["on_b"]),
        N("And", ["on_a", "on_b"], ["on_ab"]),
        N("Add", ["a", "one_i"], ["a1"]),
        N("Mul", ["a1", "space"], ["a_sp"]),
        N("Add", ["a_sp", "b"], ["bi_key"]),
        N("Where", ["on_ab", "bi_key", "neg1"], ["bi"]),
        N("Concat", ["uni", "bi"], ["keys"], axis=1),
        N("LabelEncoder", ["keys"], ["cols"], domain="ai.onnx.ml",
          keys_int64s=[int(k) for k in b.vocab], values_int64s=list(range(n_feat)),
          default_int64=n_feat),
        # Sort each row's columns and count equal runs: tf of every n-gram occurrence.
        N("Shape", ["cols"], ["width"], start=1, end=2),
        N("TopK", ["cols", "width"], ["sorted", "order"], axis=1, largest=0, sorted=1),
        N("Slice", ["sorted", "s0", "s1", "ax1"], ["first"]),
        N("Sub", ["first", "one_i"], ["before_first"]),
        N("Slice", ["sorted", "s0", "e_1", "ax1"], ["head"]),
        N("Concat", ["before_first", "head"], ["prev"], axis=1),
        N("Equal", ["sorted", "prev"], ["same"]),
        N("Not", ["same"], ["starts"]),
        N("Cast", ["starts"], ["starts_i"], to=TensorProto.INT64),
        N("CumSum", ["starts_i", "one_i"], ["run1"]),
        N("Sub", ["run1", "one_i"], ["run"]),
        N("Shape", ["sorted"], ["shape"]),
        N("ConstantOfShape", ["shape"], ["zeros"],
          value=numpy_helper.from_array(np.zeros(1, np.float32))),
        N("ConstantOfShape", ["shape"], ["ones"],
          value=numpy_helper.from_array(np.ones(1, np.float32))),
        N("ScatterElements", ["zeros", "run", "ones"], ["run_counts"], axis=1,
          reduction="add"),
        N("GatherElements", ["run_counts", "run"], ["tf"], axis=1),
        # Sublinear tf (1 + log tf) times idf, per occurrence; each distinct n-gram
        # occurs tf times, so its share of the sums below is divided by tf.
        N("Log", ["tf"], ["log_tf"]),
        N("Add", ["log_tf", "one_f"], ["sub_tf"]),
        N("Gather", ["idf", "sorted"], ["idf_s"]),
        N("Mul", ["sub_tf", "idf_s"], ["x"]),
        N("Mul", ["x", "x"], ["x2"]),
        N("Div", ["x2", "tf"], ["x2_share"]),
        N("ReduceSum", ["x2_share", "ax1"], ["norm2"], keepdims=1),
        N("Sqrt", ["norm2"], ["norm_raw"]),
        N("Max", ["norm_raw", "eps"], ["norm"]),
        N("Mul", ["tf", "norm"], ["scale"]),
        N("Div", ["x", "scale"], ["xn"]),
        N("Unsqueeze", ["xn", "ax1"], ["xn3"]),
        N("Gather", ["coef", "sorted"], ["w_s"]),
        N("MatMul", ["xn3", "w_s"], ["z3"]),
        N("Squeeze", ["z3", "ax1"], ["z"]),
        N("Add", ["z", "bias"], ["logits"]),
    ]
    return nodes, inits


def export_baseline(b: LinearBaseline, path: Path) -> dict[str, Any]:
    """Write ``b`` as one ONNX file with the neural variants' inputs and ``logits`` output."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w, bias = b.weights()
    k = w.shape[1]
    if b.text:
        nodes, inits = _graph_text(b, w, bias)
        inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
                  for n in ("input_ids", "attention_mask")]
    else:
        inits = [numpy_helper.from_array(w.astype(np.float32), "coef"),
                 numpy_helper.from_array(bias.astype(np.float32), "bias")]
        nodes = [helper.make_node("MatMul", ["features", "coef"], ["z"]),
                 helper.make_node("Add", ["z", "bias"], ["logits"])]
        inputs = [helper.make_tensor_value_info("features", TensorProto.FLOAT,
                                                ["batch", w.shape[0]])]
    graph = helper.make_graph(
        nodes, f"sparkforge_{b.model}", inputs,
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", k])], inits)
    model = helper.make_model(
        graph, ir_version=_IR_VERSION, producer_name="sparkforge.baseline",
        opset_imports=[helper.make_opsetid("", _OPSET),
                       helper.make_opsetid("ai.onnx.ml", _ML_OPSET)])
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(model.SerializeToString())
    tmp.replace(path)
    return {"opset": _OPSET, "inputs": [i.name for i in inputs], "output": "logits",
            "file_bytes": path.stat().st_size}


def check_parity(b: LinearBaseline, path: Path, feeds: Mapping[str, np.ndarray]
                 ) -> dict[str, Any]:
    """scikit-learn's predictions against the ONNX file's on ``feeds``.

    Raises when they differ by more than ``PARITY_RTOL`` of the output scale. Returns
    ``max_abs_prob_diff`` and ``agreement`` (regression: ``max_abs_pred_diff``) and the
    tolerance applied.
    """
    import onnxruntime as ort

    from sparkforge.infer import softmax

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    got = sess.run(["logits"], {n: np.ascontiguousarray(feeds[n]) for n in names})[0]
    ref = b.predict(feeds)
    n = len(ref)
    if b.regression:
        diff = float(np.abs(got[:, 0].astype(np.float64) - ref).max(initial=0.0))
        scale = float(np.abs(ref).max(initial=0.0)) or 1.0
        result = {"max_abs_pred_diff": diff, "rows": n, "tolerance": PARITY_RTOL * scale}
        what = "max_abs_pred_diff"
    else:
        p = softmax(got.astype(np.float64)) if n else np.zeros((0, b.num_classes))
        diff = float(np.abs(p - ref).max(initial=0.0))
        agree = float((p.argmax(axis=1) == ref.argmax(axis=1)).mean()) if n else 1.0
        result = {"max_abs_prob_diff": diff, "agreement": agree, "rows": n,
                  "tolerance": PARITY_RTOL}
        what = "max_abs_prob_diff"
    if not result[what] <= result["tolerance"]:
        raise RuntimeError(f"baseline ONNX parity failed: {what} = {result[what]:.2e} > "
                           f"{result['tolerance']:.2e} ({PARITY_RTOL} of the output scale); "
                           "the exported graph computes something else than scikit-learn")
    log.info("baseline parity on %d rows: %s", n, result)
    return result
