"""Metrics against scikit-learn on random predictions (scikit-learn is a test dependency only)."""

from __future__ import annotations

import numpy as np
import pytest

from nn_from_scratch import Sequential
from nn_from_scratch import metrics as M
from nn_from_scratch.losses import BinaryCrossEntropy, MSELoss, SoftMaxLoss
from nn_from_scratch.neurons import Linear
from nn_from_scratch.optimizers import GradientDescent

sk = pytest.importorskip("sklearn.metrics", reason="scikit-learn is the reference for the metrics")


def stream(metric: M.Metric, y_pred: np.ndarray, y_true: np.ndarray, batch: int) -> float:
    metric.reset()
    for i in range(0, len(y_pred), batch):
        metric.update(y_pred[i : i + batch], y_true[i : i + batch])
    return metric.result()


@pytest.mark.parametrize("seed", range(5))
def test_multiclass_metrics_match_scikit_learn_over_uneven_batches(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(50, 300)), int(rng.integers(2, 7))
    logits, labels = rng.normal(size=(n, k)), rng.integers(0, k, n)
    logits[rng.random(n) < 0.1] = 0.0  # ties: argmax takes the first, as numpy/torch/Keras
    predicted = logits.argmax(axis=1)
    batch = int(rng.integers(1, 40))
    assert stream(M.CategoricalAccuracy(), logits, labels, batch) == pytest.approx(sk.accuracy_score(labels, predicted), abs=1e-12)
    assert stream(M.CategoricalAccuracy(), logits, np.eye(k)[labels], batch) == pytest.approx(sk.accuracy_score(labels, predicted), abs=1e-12)
    all_labels = list(range(k))
    for metric, reference in ((M.Precision(num_classes=k), sk.precision_score), (M.Recall(num_classes=k), sk.recall_score),
                              (M.F1Score(num_classes=k), sk.f1_score)):
        expected = reference(labels, predicted, average="macro", labels=all_labels, zero_division=0)
        assert stream(metric, logits, labels, batch) == pytest.approx(expected, abs=1e-12), metric.name
        per_class = type(metric)(average=None, num_classes=k)
        np.testing.assert_allclose(stream(per_class, logits, labels, batch),
                                   reference(labels, predicted, average=None, labels=all_labels, zero_division=0), atol=1e-12)
    np.testing.assert_array_equal(M.confusion_matrix(labels, logits, num_classes=k),
                                  sk.confusion_matrix(labels, predicted, labels=all_labels))
    untied = rng.normal(size=(n, k))  # scikit-learn breaks ties differently; Keras' rule is tested below
    for top in range(1, k if k > 2 else 1):  # scikit-learn reads two columns as a binary problem
        expected = sk.top_k_accuracy_score(labels, untied, k=top, labels=all_labels)
        assert stream(M.TopKAccuracy(top), untied, labels, batch) == pytest.approx(expected, abs=1e-12)
    assert stream(M.TopKAccuracy(k), logits, labels, batch) == 1.0


def test_top_k_counts_ties_as_keras_in_top_k():
    """Keras' in_top_k: the target is in the top k when fewer than k outputs are strictly larger."""
    logits = np.array([[1.0, 1.0, 1.0, 0.0], [3.0, 2.0, 2.0, 1.0], [0.0, 5.0, 5.0, 5.0]])
    labels = np.array([2, 2, 0])
    got = [stream(M.TopKAccuracy(k), logits, labels, 1) for k in (1, 2, 3)]
    assert got == [pytest.approx(1 / 3), pytest.approx(2 / 3), pytest.approx(2 / 3)]


@pytest.mark.parametrize("seed", range(5))
def test_binary_and_regression_metrics_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 200))
    scores, targets = rng.normal(size=(n, 1)), rng.integers(0, 2, n)
    scores[: n // 5] = np.round(scores[: n // 5])  # ties in the scores
    batch = int(rng.integers(1, 30))
    assert stream(M.AUC(), scores, targets, batch) == pytest.approx(sk.roc_auc_score(targets, scores[:, 0]), abs=1e-12)
    decisions = (scores[:, 0] > 0).astype(int)
    assert stream(M.BinaryAccuracy(), scores, targets, batch) == pytest.approx(sk.accuracy_score(targets, decisions), abs=1e-12)
    for metric, reference in ((M.Precision(average="binary"), sk.precision_score), (M.Recall(average="binary"), sk.recall_score),
                              (M.F1Score(average="binary"), sk.f1_score)):
        assert stream(metric, scores, targets, batch) == pytest.approx(reference(targets, decisions, zero_division=0), abs=1e-12)
    y_true, y_pred = rng.normal(size=(n, 3)), rng.normal(size=(n, 3))
    assert stream(M.MeanAbsoluteError(), y_pred, y_true, batch) == pytest.approx(sk.mean_absolute_error(y_true, y_pred), abs=1e-12)
    assert stream(M.MeanSquaredError(), y_pred, y_true, batch) == pytest.approx(sk.mean_squared_error(y_true, y_pred), abs=1e-12)


def test_classification_report_numbers_are_scikit_learns():
    rng = np.random.default_rng(3)
    labels, predicted = rng.integers(0, 3, 80), rng.integers(0, 3, 80)
    report = M.classification_report(labels, predicted, class_names=["cat", "dog", "eel"]).splitlines()
    expected = sk.precision_recall_fscore_support(labels, predicted, zero_division=0)
    for i, name in enumerate(["cat", "dog", "eel"]):
        row = next(line for line in report if line.split()[:1] == [name]).split()
        np.testing.assert_allclose([float(v) for v in row[1:4]], [e[i] for e in expected[:3]], atol=5e-5)
        assert int(row[4]) == expected[3][i]
    accuracy = next(line for line in report if line.split()[:1] == ["accuracy"]).split()
    assert float(accuracy[1]) == pytest.approx(sk.accuracy_score(labels, predicted), abs=5e-5)


def test_compile_metrics_are_reported_by_fit_and_evaluate_under_their_names():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)), rng.integers(0, 3, 64)
    model = Sequential([Linear(4, 3, dtype=np.float64)], seed=0)
    model.compile(optimizer=GradientDescent(0.1), loss=SoftMaxLoss(), metrics=["accuracy", "f1", M.TopKAccuracy(2)])
    history = model.fit(x, y, epochs=2, batch_size=10, validation_split=0.25, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "f1", "top_2_accuracy", "val_loss", "val_accuracy", "val_f1",
                                    "val_top_2_accuracy"}
    result = model.evaluate(x, y, return_dict=True)
    logits = model.predict(x)
    assert result["accuracy"] == pytest.approx(sk.accuracy_score(y, logits.argmax(1)), abs=1e-12)
    assert result["f1"] == pytest.approx(sk.f1_score(y, logits.argmax(1), average="macro", labels=[0, 1, 2], zero_division=0), abs=1e-12)
    assert result["top_2_accuracy"] == pytest.approx(sk.top_k_accuracy_score(y, logits, k=2, labels=[0, 1, 2]), abs=1e-12)
    with pytest.raises(ValueError, match="unknown metric 'acuracy'"):
        model.compile(metrics=["acuracy"])
        model.evaluate(x, y)


def test_accuracy_follows_the_loss():
    assert isinstance(M.get("accuracy", BinaryCrossEntropy(), (1,)), M.BinaryAccuracy)
    assert isinstance(M.get("accuracy", SoftMaxLoss(), (10,)), M.CategoricalAccuracy)
    assert M.default_metrics(MSELoss(), (1,)) == []
